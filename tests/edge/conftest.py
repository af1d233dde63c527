"""Fixtures for end-to-end tests: a real DevHub and the real module running as a separate process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from visionedge.models.fetch import mirrors_from_env
from visionedge_devhub.broker import free_port
from visionedge_devhub.hub import DevHub
from visionedge_devhub.testing import running_devhub, sdk_nodelay


@pytest.fixture(autouse=True)
def _quiet_sdk() -> None:
    """The SDK logs expected disconnects as errors from its own threads; keep failures readable."""
    logging.getLogger("azure.iot.device").setLevel(logging.CRITICAL)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model/media cache for every module process in the session (files are verified on first use)."""
    return tmp_path_factory.mktemp("cache")


@dataclass
class ModuleProcess:
    """The module as IoT Edge runs it: a process with IOTEDGE_* set, stopped with SIGTERM."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    metrics_port: int

    def log(self) -> str:
        """Everything the module wrote to stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Signal the process and wait; returns (exit code, seconds it took)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started


StartModule = Callable[..., ModuleProcess]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[DevHub]:
    """A running DevHub whose desired document analyses the sample video with SqueezeNet, every frame sent."""
    desired = {
        "source": {"uri": "sample", "fps": 5},
        "model": {"name": "squeezenet"},
        "telemetry": {"policy": "every-frame", "batch": False},
    }
    with sdk_nodelay(), running_devhub(tmp_path, desired=desired) as devhub:
        yield devhub


@pytest.fixture
def start_module(tmp_path: Path, shared_cache: Path) -> Iterator[StartModule]:
    """Start the real module against a hub; every process is killed at the end of the test."""
    started: list[ModuleProcess] = []

    def start(hub: DevHub, *, wrong_key: bool = False, data_dir: Path | None = None,
              local: dict[str, Any] | None = None, mirrors: list[Path] | None = None,
              command: list[str] | None = None) -> ModuleProcess:
        data = data_dir or tmp_path / "data"
        port = free_port()
        config = {"local": {"data_dir": str(data), "cache_dir": str(shared_cache), "metrics_port": port,
                            "status_interval_s": 1.0,
                            **(local or {})}}
        config_path = tmp_path / f"config-{len(started)}.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        mirror = os.pathsep.join(str(p) for p in (mirrors_from_env() if mirrors is None else mirrors))
        env = {**os.environ, **hub.env(wrong_key=wrong_key), "VISIONEDGE_CONFIG": str(config_path),
               "VISIONEDGE_MIRROR": mirror, "PYTHONUNBUFFERED": "1"}
        env.pop("VISIONEDGE_DATA_DIR", None)
        log_path = tmp_path / f"module-{len(started)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(command or [sys.executable, "-m", "visionedge", "run"], env=env, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        module = ModuleProcess(proc, log_path, data, port)
        started.append(module)
        return module

    yield start
    for module in started:
        if module.proc.poll() is None:
            module.proc.kill()
            module.proc.wait(10)


def bodies(hub: DevHub, output: str = "results") -> list[dict[str, Any]]:
    """Parsed JSON bodies of the telemetry received on one output."""
    return [m.json for m in hub.emulator.telemetry() if m.output == output and isinstance(m.json, dict)]
