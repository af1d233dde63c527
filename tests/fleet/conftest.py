"""Fixtures for the fleet tests: a fleet of real module processes behind devhub's IoT Hub service API, a model server,
and `visionedge fleet` run as the operator runs it (a separate process, connection string in the environment)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from visionedge_devhub.certs import CertBundle
from visionedge_devhub.fleet import Fleet

from tests.modelstore.conftest import Refs, certs, refs, served, server  # noqa: F401 - fixtures reused here
from tests.support import wait_until

FLEET_SIZE = 20
RINGS = "canary=15,early=35,broad=50"
FAST_GATES = ["--poll", "1", "--wave-timeout", "150"]


@pytest.fixture(scope="module")  # 20 processes: gone before the suite's later timing-sensitive tests start
def fleet(tmp_path_factory: pytest.TempPathFactory, certs: CertBundle,  # noqa: F811
          mirror_dirs: list[Path]) -> Iterator[Fleet]:
    """20 devices, each a real `visionedge run` (sample video at 1 fps, SqueezeNet) with its own broker."""
    work = tmp_path_factory.mktemp("fleet")
    shared_cache = tmp_path_factory.mktemp("fleet-cache")
    with Fleet(FLEET_SIZE, work, fps=1.0, cache_dir=shared_cache, model_ca=certs.ca_cert,
               metrics_interval_s=0.5) as running:
        wait_until(lambda: all(reported_model(running, d).get("ac") == 200 for d in running.devices),
                   timeout=180, what="every device to run its first model", poll=0.5)
        running.write_env(work / "hub.env")  # what `visionedge-devhub fleet outage --fleet-dir` reads
        yield running


def reported_model(fleet: Fleet, device_id: str) -> dict[str, Any]:
    """The device's reported `model` acknowledgement."""
    model: dict[str, Any] = fleet.devices[device_id].hub.emulator.reported.get("model", {})
    return model


@dataclass
class FleetCli:
    """`visionedge fleet ...` as a separate process with the hub in its environment."""

    env: dict[str, str]
    log_dir: Path

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run to completion; stdout and stderr captured."""
        return subprocess.run([sys.executable, "-m", "visionedge", "fleet", *args], env=self.env, text=True,
                              capture_output=True, timeout=timeout)

    def start(self, *args: str, name: str) -> tuple[subprocess.Popen[str], Path]:
        """Start in the background with output to a log file (for kill/resume tests)."""
        log = self.log_dir / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "visionedge", "fleet", *args], env=self.env, text=True,
                                    stdout=out, stderr=subprocess.STDOUT)
        return proc, log


@pytest.fixture(scope="module")
def fleet_cli(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> FleetCli:
    """The operator's shell: connection string and hub CA in the environment, never on the command line."""
    env = {**os.environ, "IOTHUB_CONNECTION_STRING": fleet.connection_string, "VISIONEDGE_HUB_CA": str(fleet.ca_file)}
    return FleetCli(env, tmp_path_factory.mktemp("fleet-cli"))


def devhub_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`visionedge-devhub ...` as a user runs it from another shell."""
    return subprocess.run([sys.executable, "-m", "visionedge_devhub", *args], text=True, capture_output=True,
                          timeout=timeout)


def write_model(tmp_path: Path, block: dict[str, Any], name: str = "model.json") -> Path:
    """MODEL.json for the CLI."""
    path = tmp_path / name
    path.write_text(json.dumps(block), encoding="utf-8")
    return path


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """Signal a controller process and reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(20)


class AckLog:
    """Samples every device's reported `model` ack in the background: when each first reported (code, version)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.first: dict[tuple[str, int, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ack-log", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            now = time.time()
            for device_id in self.fleet.devices:
                ack = reported_model(self.fleet, device_id)
                key = (device_id, int(ack.get("ac", 0)), str((ack.get("value") or {}).get("version")))
                self.first.setdefault(key, now)

    def when(self, device_id: str, code: int, version: str) -> float | None:
        """When the device first reported this code for this version, if it did."""
        return self.first.get((device_id, code, version))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def ack_log(fleet: Fleet) -> Iterator[AckLog]:
    """An AckLog for the test."""
    log = AckLog(fleet)
    yield log
    log.stop()
