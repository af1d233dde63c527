"""Fleet rollouts on 20 real module processes, each with its own broker, driven by `visionedge fleet` through the
official service SDK against devhub's IoT Hub service API. The tests share one fleet and run in order: each leaves
the fleet on the model it rolled out."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from visionedge.fleet.plan import check_model_block
from visionedge.fleet.plan import rollout_id as plan_rollout_id
from visionedge.fleet.rings import parse_rings, ring_of
from visionedge_devhub.fleet import BASE_ID, Fleet

from tests.fleet.conftest import (
    FAST_GATES,
    FLEET_SIZE,
    RINGS,
    AckLog,
    FleetCli,
    devhub_cli,
    reported_model,
    stop,
    write_model,
)
from tests.modelstore.conftest import Refs
from tests.support import wait_until

pytestmark = pytest.mark.timeout(400)

ORDER = ["canary", "early", "broad"]
FIGURES: dict[str, Any] = {}


def ring_members(fleet: Fleet) -> dict[str, list[str]]:
    """Devices per ring, read from the hub's twins."""
    members: dict[str, list[str]] = {r: [] for r in ORDER}
    for device_id in fleet.devices:
        ring = fleet.service.get_twin(device_id)["tags"].get("visionedge", {}).get("ring")
        members.setdefault(ring, []).append(device_id)
    return members


def created(fleet: Fleet, config_id: str) -> list[float]:
    """When the hub created a configuration with this id (one entry per create)."""
    return [at for at, action, cid in fleet.service.history if action == "create" and cid == config_id]


def rollout_id(output: str) -> str:
    """The rollout id the controller printed."""
    match = re.search(r"rollout (ve-[a-z0-9-]+)", output)
    assert match, output
    return match.group(1)


def model_keys(fleet: Fleet, device_id: str) -> set[str]:
    """Every model version the device's own store holds or has ever made active (history of its pointer)."""
    device = fleet.devices[device_id]
    pointer = device.store_file("active.json") or {}
    return set(device.installed_versions()) | set(pointer.get("history") or []) | {pointer.get("trial") or ""}


def test_rings_are_assigned_by_hash_and_a_rerun_moves_no_device(fleet: Fleet, fleet_cli: FleetCli) -> None:
    """`rings assign` tags every device with the ring its id hashes to; running it again writes nothing."""
    first = fleet_cli.run("rings", "assign", "--rings", RINGS)
    assert first.returncode == 0, first.stderr
    assert f"{FLEET_SIZE} devices; changed {FLEET_SIZE} ring tags" in first.stdout
    rings = parse_rings(RINGS)
    members = ring_members(fleet)
    for ring, ids in members.items():
        assert all(ring_of(d, rings) == ring for d in ids)
    assert all(members[r] for r in ORDER), f"every ring needs a device for these tests: {members}"
    again = fleet_cli.run("rings", "assign", "--rings", RINGS)
    assert again.returncode == 0
    assert "changed 0 ring tags" in again.stdout
    assert ring_members(fleet) == members


def test_plan_prints_one_layered_deployment_per_ring_and_checks_limits(
    fleet: Fleet, fleet_cli: FleetCli, refs: Refs, tmp_path: Path
) -> None:
    """Each ring deployment sets only properties.desired.model, ranks above the base, names the rollout, <= 5 metrics;
    an oversized block is refused with the limit in the reason."""
    model = write_model(tmp_path, refs("squeezenet", "2"))
    summary = fleet_cli.run("plan", str(model), "--rings", ",".join(ORDER))
    assert summary.returncode == 0, summary.stderr
    result = fleet_cli.run("plan", str(model), "--rings", ",".join(ORDER), "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert summary.stdout.splitlines()[0] == f"rollout {plan['rollout']}: squeezenet-custom 2, one wave per ring"
    assert all(f"{d['id']}  priority 100  {d['targetCondition']}" in summary.stdout for d in plan["deployments"])
    base_priority = fleet.service.get_configuration(BASE_ID)["priority"]
    assert [d["labels"]["visionedge.ring"] for d in plan["deployments"]] == ORDER
    for deployment in plan["deployments"]:
        assert deployment["content"]["modulesContent"] == {
            "$edgeAgent": {"properties.desired.schemaVersion": "1.1"},
            "visionedge": {"properties.desired.model": plan["model"]}}
        assert deployment["priority"] > plan["afterCompletion"]["priority"] > base_priority
        assert deployment["labels"]["visionedge.rollout"] == plan["rollout"]
        assert len(deployment["metrics"]["queries"]) <= 5
    assert fleet.service.list_configurations() == [fleet.service.get_configuration(BASE_ID)], "plan created something"
    huge = write_model(tmp_path, refs("squeezenet", "2", manifest={"task": "classify", "pad": "x" * 5000}), "huge.json")
    refused = fleet_cli.run("plan", str(huge), "--offline")
    assert refused.returncode == 1
    assert "4096" in refused.stderr
    assert refused.stderr.count("\n") == 1


def test_good_model_rolls_out_ring_by_ring_to_every_device(
    fleet: Fleet, fleet_cli: FleetCli, refs: Refs, tmp_path: Path, ack_log: AckLog
) -> None:
    """Three waves, each started only after the previous ring acked 200; every device ends on the new model, the hub
    keeps the base plus one current-model layer, and deployment metrics equal what devices report."""
    model = write_model(tmp_path, refs("squeezenet", "2"))
    started = time.monotonic()
    result = fleet_cli.run("rollout", str(model), *FAST_GATES)
    FIGURES["good_rollout_s"] = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    rid = rollout_id(result.stdout)
    members = ring_members(fleet)
    for device_id in fleet.devices:
        ack = reported_model(fleet, device_id)
        assert (ack["ac"], ack["value"]["version"]) == (200, "2"), device_id
        assert fleet.devices[device_id].store_file("active.json")["history"][-1] == "squeezenet-custom@2"
    for previous, ring in itertools.pairwise(ORDER):
        (wave_created,) = created(fleet, f"{rid}-{ring}")
        for device_id in members[previous]:
            acked = ack_log.when(device_id, 200, "2")
            assert acked is not None, f"{device_id} never acked"
            assert acked < wave_created, f"{ring} started before {device_id} acked"
    ids = {c["id"] for c in fleet.service.list_configurations()}
    assert ids == {BASE_ID, f"{rid}-current"}
    fleet.service.refresh_metrics()
    current = fleet.service.get_configuration(f"{rid}-current")
    reporting = sum(1 for d in fleet.devices if reported_model(fleet, d).get("value", {}).get("version") == "2"
                    and reported_model(fleet, d).get("ac") == 200)
    assert current["systemMetrics"]["results"]["targetedCount"] == FLEET_SIZE
    assert current["metrics"]["results"]["applied"] == reporting == FLEET_SIZE
    assert current["metrics"]["results"]["refused"] == 0


def test_running_the_same_rollout_again_creates_nothing(fleet: Fleet, fleet_cli: FleetCli, refs: Refs,
                                                        tmp_path: Path) -> None:
    """The state is in the hub: a second run finds the rollout complete and changes nothing."""
    before = list(fleet.service.history)
    result = fleet_cli.run("rollout", str(write_model(tmp_path, refs("squeezenet", "2"))), *FAST_GATES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is complete" in result.stdout
    assert fleet.service.history == before


def test_bad_model_is_halted_at_canary_and_rolled_back_there(
    fleet: Fleet, fleet_cli: FleetCli, refs: Refs, tmp_path: Path, ack_log: AckLog
) -> None:
    """A wrong sha256: canary devices refuse it (400), the rollout halts (exit 3) and rolls back; no device outside
    canary ever has it desired, downloaded or active, as each device's own model store shows."""
    bad = write_model(tmp_path, refs("squeezenet", "3", sha256="0" * 64))
    members = ring_members(fleet)
    started = time.monotonic()
    result = fleet_cli.run("rollout", str(bad), *FAST_GATES)
    FIGURES["bad_halt_s"] = time.monotonic() - started
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr
    rid = rollout_id(result.stdout)
    assert "halted and rolled back" in result.stdout
    assert f"rollback confirmed: {len(members['canary'])}/{len(members['canary'])} devices" in result.stdout
    assert "refused" in result.stdout
    assert created(fleet, f"{rid}-canary")
    assert not created(fleet, f"{rid}-early")
    assert not created(fleet, f"{rid}-broad")
    refusals = [d for d in members["canary"] if ack_log.when(d, 400, "2") is not None]
    assert refusals, "canary devices should have refused the bad model with 400 (value = the model still in use)"
    for device_id in fleet.devices:
        assert not any(k.startswith("squeezenet-custom@3") for k in model_keys(fleet, device_id)), device_id
        desired = fleet.devices[device_id].hub.emulator.desired["model"]
        assert desired["version"] == "2", f"{device_id} should be back on the previous layer: {desired}"
    FIGURES["bad_exposure_desired"] = len(members["canary"])
    FIGURES["bad_exposure_active"] = 0
    record = fleet.service.get_configuration(f"{rid}-canary")
    assert record["labels"]["visionedge.state"] == "halted"
    assert record["targetCondition"] == f"tags.visionedge.halted='{rid}'"
    status = fleet_cli.run("status", rid)
    assert status.returncode == 0
    assert f"{rid}  squeezenet-custom@3  halted" in status.stdout
    again = fleet_cli.run("rollout", str(bad), *FAST_GATES)
    assert again.returncode == 3
    assert "stays halted" in again.stdout
    assert len(created(fleet, f"{rid}-canary")) == 1
    removed = fleet_cli.run("rollback", rid)
    assert removed.returncode == 0
    assert f"deleted {rid}-canary" in removed.stdout
    FIGURES["canary_size"] = len(members["canary"])


def test_min_finished_holds_the_failure_gate_until_enough_devices_have_a_verdict(
    fleet: Fleet, fleet_cli: FleetCli, refs: Refs, tmp_path: Path
) -> None:
    """--min-finished above the canary's size: the canary devices refuse a wrong sha256, but fewer than 20 have a
    verdict, so --max-failed never counts and the ring halts at its --wave-timeout instead; nothing reaches early."""
    bad = write_model(tmp_path, refs("squeezenet", "6", sha256="0" * 64))
    result = fleet_cli.run("rollout", str(bad), *FAST_GATES, "--min-finished", str(FLEET_SIZE), "--wave-timeout", "30")
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr
    rid = rollout_id(result.stdout)
    assert "ring canary timed out after 30 s with 0/" in result.stdout
    assert "refused or rolled back the model" not in result.stdout
    canary = ring_members(fleet)["canary"]
    assert all(reported_model(fleet, d)["ac"] == 200 and reported_model(fleet, d)["value"]["version"] == "2"
               for d in canary), "back on the previous model after the halt"
    assert not created(fleet, f"{rid}-early")
    assert fleet_cli.run("rollback", rid).returncode == 0


def test_shuffled_labels_are_refused_by_the_shadow_gate_at_canary(
    fleet: Fleet, fleet_cli: FleetCli, refs: Refs, served: dict[str, bytes], server: Any, tmp_path: Path
) -> None:
    """Same weights, labels shuffled: hashes and manifest pass, but on canary devices the shadow evaluation disagrees
    with the model in use; the rollout halts there and rolls back, and no device ever activates the candidate."""
    labels = served["imagenet_labels.txt"].decode("utf-8").splitlines()
    shuffled = ("\n".join(random.Random(12).sample(labels, len(labels))) + "\n").encode("utf-8")
    served["imagenet_labels_shuffled.txt"] = shuffled
    block = refs("squeezenet", "3s", labels_url=server.url("imagenet_labels_shuffled.txt"),
                 labels_sha256=hashlib.sha256(shuffled).hexdigest())
    members = ring_members(fleet)
    result = fleet_cli.run("rollout", str(write_model(tmp_path, block)), *FAST_GATES)
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr
    rid = rollout_id(result.stdout)
    assert not created(fleet, f"{rid}-early")
    refusals = [d for d in members["canary"] if "model update refused: shadow: agreement"
                in fleet.devices[d].log_path.read_text(encoding="utf-8", errors="replace")]
    assert refusals, "the canary devices' shadow phase should have refused the candidate"
    for device_id in fleet.devices:
        history = set((fleet.devices[device_id].store_file("active.json") or {}).get("history") or [])
        assert "squeezenet-custom@3s" not in history, device_id
        if device_id not in members["canary"]:
            assert not any(k.startswith("squeezenet-custom@3s") for k in model_keys(fleet, device_id)), device_id
    assert fleet_cli.run("rollback", rid).returncode == 0


def test_controller_killed_mid_rollout_resumes_and_finishes(
    fleet: Fleet, fleet_cli: FleetCli, refs: Refs, tmp_path: Path
) -> None:
    """SIGKILL while the second ring rolls out; a new controller (on the REST client, where the killed one used the
    SDK) carries on from the hub and creates nothing twice."""
    model = write_model(tmp_path, refs("squeezenet", "4"))
    proc, _log = fleet_cli.start("rollout", str(model), *FAST_GATES, name="killed")
    try:
        wait_until(lambda: any(cid.endswith("-early") and action == "create"
                               for _, action, cid in fleet.service.history if "-4-" in cid),
                   timeout=150, what="the early ring to start", poll=0.5)
    finally:
        stop(proc, signal.SIGKILL)
    resumed = fleet_cli.run("--client", "rest", "rollout", str(model), *FAST_GATES)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr
    rid = rollout_id(resumed.stdout)
    for ring in ORDER:
        assert len(created(fleet, f"{rid}-{ring}")) == 1, ring
    assert all(reported_model(fleet, d)["value"]["version"] == "4" for d in fleet.devices)
    assert {c["id"] for c in fleet.service.list_configurations()} >= {BASE_ID, f"{rid}-current"}


def test_hub_outage_holds_the_rollout_and_nothing_is_promoted_on_old_reads(
    fleet: Fleet, fleet_cli: FleetCli, refs: Refs, tmp_path: Path
) -> None:
    """`visionedge-devhub fleet outage --for 30` from another shell during the canary ring: the service API answers
    503, the controller holds, and promotes only after fresh reads that come after the outage (two, a poll apart)."""
    assert fleet.api is not None
    model = write_model(tmp_path, refs("squeezenet", "5"))
    proc, log = fleet_cli.start("rollout", str(model), *FAST_GATES, name="outage")
    try:
        wait_until(lambda: any(cid.endswith("-canary") and "-5-" in cid for _, _, cid in fleet.service.history),
                   timeout=60, what="the canary ring to start", poll=0.5)
        outage = devhub_cli("fleet", "outage", "--for", "30", "--fleet-dir", str(fleet.work_dir))
        outage_end = time.time() + (fleet.api.outage_until - time.monotonic())
        outage_start = outage_end - 30
        assert outage.returncode == 0, outage.stderr
        assert "every service call answers 503 for 30 s" in outage.stdout
        canary = ring_members(fleet)["canary"]
        wait_until(lambda: all(reported_model(fleet, d).get("value", {}).get("version") == "5"
                               and reported_model(fleet, d).get("ac") == 200 for d in canary),
                   timeout=25, what="canary devices to apply the model during the outage", poll=0.5)
        assert fleet.api.outage, "the canary applied after the outage ended: nothing was tested"
        assert proc.wait(240) == 0, log.read_text()[-3000:]
    finally:
        fleet.api.outage = False
        stop(proc)
    output = log.read_text()
    rid = rollout_id(output)
    assert "hub unreachable, holding" in output
    (early_created,) = created(fleet, f"{rid}-early")
    assert early_created > outage_end + 1.0, "promoted without two fresh reads after the outage"
    assert not [c for at, a, c in fleet.service.history if outage_start < at < outage_end]
    assert all(reported_model(fleet, d)["value"]["version"] == "5" for d in fleet.devices)


def test_an_operator_rollback_from_another_shell_stops_the_running_controller(
    fleet: Fleet, fleet_cli: FleetCli, refs: Refs, tmp_path: Path
) -> None:
    """`fleet rollback ID` while a rollout runs: its deployments go, the controller stops with exit 3 and the canary
    devices are asked for the previous model again; all through the REST client."""
    block = refs("squeezenet", "7")
    rid = plan_rollout_id(check_model_block(block))
    proc, log = fleet_cli.start("--client", "rest", "rollout", str(write_model(tmp_path, block)), *FAST_GATES,
                                name="operator")
    try:
        wait_until(lambda: bool(created(fleet, f"{rid}-canary")), timeout=60, what="the canary ring to start")
        removed = fleet_cli.run("--client", "rest", "rollback", rid)
        assert removed.returncode == 0, removed.stderr
        assert proc.wait(120) == 3, log.read_text()[-2000:]
    finally:
        stop(proc)
    assert "removed from the hub" in log.read_text()
    assert not created(fleet, f"{rid}-early")
    assert all(fleet.devices[d].hub.emulator.desired["model"]["version"] == "5" for d in fleet.devices)


def test_a_detector_rolls_out_over_a_fleet_on_the_classifier_at_default_gates(
    fleet: Fleet, fleet_cli: FleetCli, refs: Refs, tmp_path: Path
) -> None:
    """Every device runs the classifier with every shadow gate at its default (the base sets none); YOLOX-nano rolls
    out ring by ring and every device ends on it. Agreement is undefined between a classifier and a detector, so the
    latency and health gates decide, as on a real fleet at defaults."""
    base_shadow = fleet.service.get_configuration(BASE_ID)["content"]["modulesContent"]["visionedge"][
        "properties.desired"]["shadow"]
    assert set(base_shadow) <= {"frames", "min_frames", "max_s"}, "the base must leave every gate at its default"
    started = time.monotonic()
    result = fleet_cli.run("rollout", str(write_model(tmp_path, refs("yolox", "d1"))), *FAST_GATES)
    FIGURES["detector_rollout_s"] = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    for device_id in fleet.devices:
        ack = reported_model(fleet, device_id)
        assert (ack["ac"], ack["value"]["name"], ack["value"]["version"]) == (200, "yolox-nano", "d1"), device_id


def test_a_regressed_detector_still_halts_at_canary_at_default_gates(
    fleet: Fleet, fleet_cli: FleetCli, refs: Refs, served: dict[str, bytes], server: Any, tmp_path: Path
) -> None:
    """The same detector with its COCO labels shuffled disagrees with the one in use: the canary devices' default
    agreement gate refuses it, the rollout halts there and no device outside canary ever has it. Runs on the fleet the
    test above left on the detector (against a classifier, agreement is undefined and would not judge labels)."""
    assert all(reported_model(fleet, d).get("value", {}).get("name") == "yolox-nano" for d in fleet.devices), \
        "needs the fleet on YOLOX-nano d1, as the detector rollout above leaves it"
    labels = served["coco.names"].decode("utf-8").splitlines()
    shuffled = ("\n".join(random.Random(7).sample(labels, len(labels))) + "\n").encode("utf-8")
    served["coco_shuffled.names"] = shuffled
    block = refs("yolox", "d2", labels_url=server.url("coco_shuffled.names"),
                 labels_sha256=hashlib.sha256(shuffled).hexdigest())
    members = ring_members(fleet)
    result = fleet_cli.run("rollout", str(write_model(tmp_path, block)), *FAST_GATES)
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr
    rid = rollout_id(result.stdout)
    assert not created(fleet, f"{rid}-early")
    for device_id in fleet.devices:
        if device_id not in members["canary"]:
            assert not any(k.startswith("yolox-nano@d2") for k in model_keys(fleet, device_id)), device_id
        assert reported_model(fleet, device_id)["value"]["version"] == "d1", device_id
    assert fleet_cli.run("rollback", rid).returncode == 0


def test_report_figures(fleet: Fleet) -> None:
    """Print the measured figures (rollout time, exposure) for the docs; they come from the tests above."""
    print(json.dumps({"devices": FLEET_SIZE, **FIGURES}))
    assert "good_rollout_s" in FIGURES
