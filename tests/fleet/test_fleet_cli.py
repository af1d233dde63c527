"""`visionedge fleet` options against devhub's service API with registered devices but no module processes: the
parts of a rollout that need no device to act (ring tags, limits, timeouts, the soak clock, temporary files).
Each test gets its own hub (a second to start); the CLI runs as the operator runs it, a separate process."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from visionedge.fleet.hub import connect
from visionedge.fleet.plan import LABEL_STARTED, build_plan, check_model_block
from visionedge.fleet.rings import parse_rings, ring_of
from visionedge.fleet.rollout import Controller, Exit, Gates
from visionedge_devhub.certs import generate_certs
from visionedge_devhub.emulator import HubEmulator
from visionedge_devhub.fleet import base_deployment, base_desired
from visionedge_devhub.restapi import POLICY_NAME, RestApi
from visionedge_devhub.service import ServiceHub

from tests.fleet.conftest import write_model
from tests.fleet.test_rules import GOOD_BLOCK

pytestmark = pytest.mark.timeout(120)

DEVICES = 24


@dataclass
class Hub:
    """A service API over DEVICES edge devices (cam-00..), half tagged site=a, half site=b, and the CLI's env."""

    service: ServiceHub
    api: RestApi
    env: dict[str, str]

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`visionedge fleet ARGS` with the hub in the environment."""
        return subprocess.run([sys.executable, "-m", "visionedge", "fleet", *args], env=env or self.env, text=True,
                              capture_output=True, timeout=90)

    def rings(self) -> dict[str, str]:
        """Device id -> ring tag (devices without one left out)."""
        tags = {d: self.service.get_twin(d)["tags"] for d in self.service.device_ids()}
        return {d: t["visionedge"]["ring"] for d, t in tags.items() if "ring" in t.get("visionedge", {})}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """The hub with its base deployment, on its own CA."""
    certs = generate_certs(tmp_path / "certs", "127.0.0.1")
    service = ServiceHub(metrics_interval_s=0.5)
    service.start()
    api = RestApi(service, certs, "127.0.0.1", 0, {POLICY_NAME: base64.b64encode(secrets.token_bytes(32)).decode()})
    api.start()
    for i in range(DEVICES):
        device_id = f"cam-{i:02d}"
        service.add_device(device_id, "visionedge", HubEmulator(device_id, "visionedge"), lambda: True,
                           tags={"site": "a" if i % 2 else "b", "visionedge": {"fleet": "devhub"}})
    service.put_configuration("visionedge-base", base_deployment(base_desired(1.0)), None)
    env = {**os.environ, "IOTHUB_CONNECTION_STRING": api.connection_string(), "VISIONEDGE_HUB_CA": str(certs.ca_cert)}
    try:
        yield Hub(service, api, env)
    finally:
        api.stop()
        service.stop()


@pytest.mark.parametrize("client", ["sdk", "rest"])
def test_no_ca_bundle_is_left_in_tmpdir(hub: Hub, tmp_path: Path, client: str) -> None:
    """Each call with a hub CA used to leave a 230 KB visionedge-hub-ca-*.pem behind; now none stays, after a
    command that succeeds and after one that fails."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**hub.env, "TMPDIR": str(tmp), "VISIONEDGE_HUB_CLIENT": client}
    assert hub.cli("rings", "show", env=env).returncode == 0
    assert hub.cli("status", "no-such-rollout", env=env).returncode == 1
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_dry_run_shows_the_assignment_and_writes_nothing(hub: Hub) -> None:
    """--dry-run prints the rings and how many tags would change; no twin is written."""
    result = hub.cli("rings", "assign", "--rings", "canary=25,broad=75", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"{DEVICES} devices; would change {DEVICES} ring tags" in result.stdout
    assert hub.rings() == {}


def test_where_tags_only_the_matching_devices(hub: Hub) -> None:
    """--where narrows the assignment to devices whose twin matches; the others keep no ring."""
    result = hub.cli("rings", "assign", "--rings", "canary=50,broad=50", "--where", "tags.site='a'")
    assert result.returncode == 0, result.stderr
    site_a = {d for d in hub.service.device_ids() if hub.service.get_twin(d)["tags"]["site"] == "a"}
    assert set(hub.rings()) == site_a
    assert f"{len(site_a)} devices; changed {len(site_a)} ring tags" in result.stdout


def test_changing_ring_percentages_moves_only_devices_whose_slice_changed(hub: Hub) -> None:
    """Growing canary from 20 % to 60 % moves devices from broad into canary only, and says how many."""
    assert hub.cli("rings", "assign", "--rings", "canary=20,broad=80").returncode == 0
    before = hub.rings()
    grown = hub.cli("rings", "assign", "--rings", "canary=60,broad=40")
    assert grown.returncode == 0, grown.stderr
    after = hub.rings()
    moved = {d for d in after if after[d] != before[d]}
    assert moved, "no device moved: pick other percentages"
    assert all(before[d] == "broad" and after[d] == "canary" for d in moved)
    assert f"changed {len(moved)} ring tags" in grown.stdout
    wider = parse_rings("canary=60,broad=40")
    assert all(after[d] == ring_of(d, wider) for d in after)


def test_the_hub_limit_of_100_deployments_refuses_the_plan_before_anything_is_created(hub: Hub,
                                                                                     tmp_path: Path) -> None:
    """97 other deployments + the base: the rollout's 4 would pass 100, so plan and rollout refuse, naming it."""
    for i in range(97):
        hub.service.put_configuration(f"other-{i}", {"priority": 1, "targetCondition": "tags.site='none'",
                                                     "content": {"modulesContent": {}}}, None)
    assert hub.cli("rings", "assign").returncode == 0
    model = write_model(tmp_path, GOOD_BLOCK)
    before = len(hub.service.list_configurations())
    for command in ("plan", "rollout"):
        refused = hub.cli(command, str(model))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "over the limit of 100" in refused.stderr
    assert len(hub.service.list_configurations()) == before == 98


def test_a_ring_that_never_passes_halts_at_the_wave_timeout(hub: Hub, tmp_path: Path) -> None:
    """No module runs here, so no device ever acknowledges: --wave-timeout 3 halts the rollout at canary (exit 3)
    and the later rings are never created."""
    assert hub.cli("rings", "assign", "--rings", "canary=50,broad=50").returncode == 0
    started = time.monotonic()
    result = hub.cli("--client", "rest", "rollout", str(write_model(tmp_path, GOOD_BLOCK)), "--rings",
                     "canary,broad", "--wave-timeout", "3", "--poll", "0.5")
    assert result.returncode == int(Exit.HALTED), result.stdout + result.stderr
    assert "ring canary timed out after 3 s with 0/" in result.stdout
    assert time.monotonic() - started < 60
    ids = {c["id"] for c in hub.service.list_configurations()}
    assert any(i.endswith("-canary") for i in ids)
    assert not any(i.endswith("-broad") for i in ids)


@pytest.mark.parametrize("client", ["sdk", "rest"])
def test_a_resumed_controller_soaks_from_its_own_first_read(hub: Hub, client: str) -> None:
    """A ring a killed controller started a minute ago (its visionedge.started label) is not promoted at once by the
    next controller: the soak counts from the new controller's first good read, as docs/fleet.md says (it cannot
    vouch for the time nobody watched), while the wave timeout keeps counting from the label. The ring has no
    device, so it passes as soon as the soak allows."""
    plan = build_plan(check_model_block(GOOD_BLOCK), ["empty"])
    wave = plan.waves[0]
    a_minute_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    hub.service.put_configuration(wave["id"], {**wave, "labels": {**wave["labels"], LABEL_STARTED: a_minute_ago}},
                                  None)
    fleet_hub = connect(hub.api.connection_string(), Path(hub.env["VISIONEDGE_HUB_CA"]), client)
    try:
        started = time.monotonic()
        outcome = Controller(fleet_hub, plan, Gates(soak_s=4.0, poll_s=0.5, wave_timeout_s=600)).run()
        elapsed = time.monotonic() - started
    finally:
        fleet_hub.close()
    assert outcome.code == Exit.COMPLETED, outcome.message
    assert elapsed >= 4.0, f"promoted {elapsed:.1f} s after resuming: the soak was taken from the old label"
    assert {c["id"] for c in hub.service.list_configurations()} == {"visionedge-base", f"{plan.rollout_id}-current"}
