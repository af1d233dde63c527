"""`visionedge-devhub fleet up` as a developer runs it: a fleet in the background, the hub env file, then
`visionedge fleet` commands against it, an outage and a stop from another shell (`fleet outage`, `fleet down`), and
SIGTERM when `fleet down` fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from visionedge.fleet.hub import HubError, connect

from tests.fleet.conftest import devhub_cli
from tests.support import wait_until

pytestmark = pytest.mark.timeout(180)


def test_fleet_up_serves_real_modules_to_the_fleet_commands(tmp_path: Path, mirror_dirs: list[Path]) -> None:
    """Two devices come up; the connection string is only in an owner-only env file; the modules report their
    model through the hub's twin query; SIGTERM stops the fleet and every module."""
    work = tmp_path / "fleet"
    up = subprocess.Popen([sys.executable, "-m", "visionedge_devhub", "fleet", "up", "--devices", "2",
                           "--fleet-dir", str(work)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    env_file = work / "hub.env"
    try:
        wait_until(env_file.is_file, timeout=60, what="the hub env file", poll=0.5)
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        values = dict(re.findall(r"export (\w+)='([^']*)'", env_file.read_text()))
        hub = connect(values["IOTHUB_CONNECTION_STRING"], Path(values["VISIONEDGE_HUB_CA"]))

        def both_report_squeezenet() -> bool:
            rows = list(hub.query("SELECT * FROM devices.modules WHERE properties.reported.model.ac = 200"))
            return sorted(r["deviceId"] for r in rows) == ["device-00", "device-01"]

        wait_until(both_report_squeezenet, timeout=120, what="both modules to acknowledge their model", poll=0.5)
        env = {**os.environ, **values}
        assigned = subprocess.run([sys.executable, "-m", "visionedge", "fleet", "rings", "assign", "--rings",
                                   "canary=50,broad=50"], env=env, capture_output=True, text=True, timeout=60)
        assert assigned.returncode == 0, assigned.stderr
        assert "2 devices; changed 2 ring tags" in assigned.stdout
        outage = devhub_cli("fleet", "outage", "--for", "5", "--fleet-dir", str(work))
        assert outage.returncode == 0, outage.stderr
        rest = connect(values["IOTHUB_CONNECTION_STRING"], Path(values["VISIONEDGE_HUB_CA"]), "rest")
        with pytest.raises(HubError) as refused:
            rest.configurations()
        assert refused.value.status == 503
        def hub_answers() -> bool:
            try:
                return bool(rest.configurations())
            except HubError:
                return False

        wait_until(hub_answers, timeout=15, what="the hub back after 5 s", poll=0.5)
        rest.close()
        started = time.monotonic()
        down = devhub_cli("fleet", "down", "--fleet-dir", str(work))
        assert down.returncode == 0, down.stderr
        assert f"fleet at {work} stopped" in down.stdout
        output, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
    assert time.monotonic() - started < 30
    assert not env_file.exists(), "the env file holds the connection string: it goes with the fleet"
    assert values["IOTHUB_CONNECTION_STRING"] not in output
    assert "hub.env" in output
    for device in ("device-00", "device-01"):
        assert "received SIGTERM" in (work / "devices" / device / "module.log").read_text()
