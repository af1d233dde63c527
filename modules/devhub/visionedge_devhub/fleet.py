"""A fleet on one machine: N edge devices, each with its own broker (edgeHub) and a real `visionedge run` process,
behind one IoT Hub service API (HTTPS, its own CA) that `azure-iot-hub` and `visionedge fleet` talk to.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from visionedge.app import sample_video
from visionedge.lifecycle import system_image
from visionedge.models.catalog import assets_for, builtin_manifest
from visionedge.models.fetch import Fetcher, mirrors_from_env

from visionedge_devhub.certs import generate_certs
from visionedge_devhub.hub import DevHub
from visionedge_devhub.restapi import POLICY_NAME, RestApi
from visionedge_devhub.service import ServiceHub

_log = logging.getLogger(__name__)

MODULE_ID = "visionedge"
BASE_ID = "visionedge-base"
BASE_PRIORITY = 10
BASE_TAG_CONDITION = "tags.visionedge.fleet='devhub'"


def base_desired(fps: float) -> dict[str, Any]:
    """The module settings a development fleet starts from: the sample video at a low rate, SqueezeNet, quiet."""
    return {
        "source": {"uri": "sample", "fps": fps},
        "model": {"name": "squeezenet"},
        "telemetry": {"policy": "aggregate", "aggregate_window_s": 300.0, "heartbeat_s": 300.0},
        "rollback": {"watch_frames": 3, "watch_s": 2.0},
        # A short shadow phase (5 frames at 1 fps instead of 150); every gate (agreement, latency, cost) at its
        # default, so the local fleet refuses what a real fleet at defaults refuses.
        "shadow": {"frames": 5, "min_frames": 3, "max_s": 20.0},
    }


def base_deployment(desired: Mapping[str, Any], image: str = "visionedge:dev") -> dict[str, Any]:
    """A base deployment (edgeAgent, edgeHub, the module and its desired properties) in the REST shape."""
    agent = {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.41", "loggingOptions": ""}},
        "systemModules": {
            "edgeAgent": {"type": "docker", "settings": {"image": system_image("edgeAgent")}},
            "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                        "settings": {"image": system_image("edgeHub")}},
        },
        "modules": {MODULE_ID: {"version": "1.0", "type": "docker", "status": "running",
                                "restartPolicy": "always", "settings": {"image": image}}},
    }
    hub = {"schemaVersion": "1.2", "routes": {"upstream": f"FROM /messages/modules/{MODULE_ID}/* INTO $upstream"},
           "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}
    return {
        "id": BASE_ID,
        "priority": BASE_PRIORITY,
        "targetCondition": BASE_TAG_CONDITION,
        "labels": {"visionedge.role": "base"},
        "content": {"modulesContent": {"$edgeAgent": {"properties.desired": agent},
                                       "$edgeHub": {"properties.desired": hub},
                                       MODULE_ID: {"properties.desired": dict(desired)}}},
        "metrics": {"queries": {}},
    }


@dataclass
class Device:
    """One device of the fleet: its devhub (broker + module identity), data dir and module process."""

    device_id: str
    hub: DevHub
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        """True while the module process lives."""
        return self.proc is not None and self.proc.poll() is None

    def store_file(self, name: str) -> Any:
        """A JSON file of the device's own model store (active.json, updates.json), or None."""
        path = self.data_dir / "models" / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def installed_versions(self) -> list[str]:
        """Version keys installed in the device's model store."""
        versions = self.data_dir / "models" / "versions"
        return sorted(p.name for p in versions.iterdir()) if versions.is_dir() else []


class Fleet:
    """N devices and the hub's service side; `start()` brings it all up, `stop()` takes it all down."""

    def __init__(self, devices: int, work_dir: Path, *, fps: float = 1.0, prefix: str = "device",
                 cache_dir: Path | None = None, model_ca: Path | None = None,
                 local: Mapping[str, Any] | None = None, metrics_interval_s: float = 1.0,
                 base: Mapping[str, Any] | None = None) -> None:
        self.count = devices
        self.work_dir = work_dir
        self.fps = fps
        self.prefix = prefix
        self.cache_dir = cache_dir or work_dir / "cache"
        self.model_ca = model_ca
        self.local = dict(local or {})
        self.base = dict(base) if base is not None else base_deployment(base_desired(fps))
        self.service = ServiceHub(metrics_interval_s=metrics_interval_s)
        self.devices: dict[str, Device] = {}
        self.api: RestApi | None = None
        self._cleanup = contextlib.ExitStack()

    @property
    def connection_string(self) -> str:
        """The service connection string (a secret: write it to an owner-only file, never to a log)."""
        if self.api is None:
            raise RuntimeError("the fleet is not running")
        return self.api.connection_string()

    @property
    def ca_file(self) -> Path:
        """The CA that signed the service API's certificate."""
        return self.work_dir / "service-certs" / "ca.pem"

    def start(self, modules: bool = True) -> Fleet:
        """Start the service API, every devhub, the base deployment, then (optionally) every module process."""
        try:
            self._start(modules)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, modules: bool) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        certs = generate_certs(self.work_dir / "service-certs", "127.0.0.1")
        key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        self.service.start()
        self._cleanup.callback(self.service.stop)
        api = RestApi(self.service, certs, "127.0.0.1", 0, {POLICY_NAME: key})
        api.start()
        self._cleanup.callback(api.stop)
        self.api = api
        ids = [f"{self.prefix}-{i:02d}" for i in range(self.count)]
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="fleet-start") as pool:
            hubs = list(pool.map(self._start_hub, ids))
        for device_id, hub in zip(ids, hubs, strict=True):
            self._cleanup.callback(hub.stop)
            root = self.work_dir / "devices" / device_id
            self.devices[device_id] = Device(device_id, hub, root / "data", root / "module.log")
            self.service.add_device(device_id, MODULE_ID, hub.emulator, _link_up(hub),
                                    tags={"visionedge": {"fleet": "devhub"}})
        self.service.put_configuration(BASE_ID, self.base, None)
        if modules:
            self._warm_cache()
            for device in self.devices.values():
                self.start_module(device)

    def _warm_cache(self) -> None:
        """Fill the shared cache once, so N modules starting together do not all copy the same files into it."""
        fetcher = Fetcher(self.cache_dir, mirrors_from_env())
        for asset in assets_for(builtin_manifest("squeezenet")):
            fetcher.ensure(asset)
        sample_video(fetcher)

    def _start_hub(self, device_id: str) -> DevHub:
        """One devhub per device, as each real device has its own edgeHub."""
        return DevHub(device_id, MODULE_ID, work_dir=self.work_dir / "devices" / device_id / "devhub",
                      max_telemetry=200).start()

    def start_module(self, device: Device) -> None:
        """Start (or restart) the device's `visionedge run` process with its edge environment."""
        device.data_dir.mkdir(parents=True, exist_ok=True)
        local: dict[str, Any] = {"data_dir": str(device.data_dir), "cache_dir": str(self.cache_dir),
                                 "metrics_port": 0, "status_interval_s": 10.0, **self.local}
        if self.model_ca is not None:
            local["ca_bundle"] = str(self.model_ca)
        config_path = device.data_dir.parent / "config.yaml"
        config_path.write_text(yaml.safe_dump({"local": local}), encoding="utf-8")
        env = {**os.environ, **device.hub.env(), "VISIONEDGE_CONFIG": str(config_path), "PYTHONUNBUFFERED": "1",
               "OMP_NUM_THREADS": "1"}
        env.pop("VISIONEDGE_DATA_DIR", None)
        env.pop("IOTHUB_CONNECTION_STRING", None)
        with device.log_path.open("ab") as log_file:
            device.proc = subprocess.Popen([sys.executable, "-m", "visionedge", "run"], env=env, stdout=log_file,
                                           stderr=subprocess.STDOUT, start_new_session=True)

    def stop_module(self, device: Device, timeout: float = 15.0) -> None:
        """SIGTERM the module as IoT Edge does; kill it if it does not stop in time."""
        proc, device.proc = device.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def stop(self) -> None:
        """Stop every module (SIGTERM, all at once), then the devhubs and the service API."""
        running = [d for d in self.devices.values() if d.running()]
        for device in running:
            assert device.proc is not None
            device.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for device in running:
            self.stop_module(device, timeout=max(0.1, deadline - time.monotonic()))
        self.api = None
        self._cleanup.close()
        self._cleanup = contextlib.ExitStack()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def write_env(self, path: Path) -> Path:
        """An owner-only file with IOTHUB_CONNECTION_STRING and the CA, to `source` before `visionedge fleet`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"export IOTHUB_CONNECTION_STRING='{self.connection_string}'\n")
            f.write(f"export VISIONEDGE_HUB_CA='{self.ca_file}'\n")
        return path


def _link_up(hub: DevHub) -> Any:
    """Whether the device's module holds a live link to its edgeHub (stands in for edgeAgent's report)."""
    return lambda: hub.running and hub.front.stats.live > 0
