"""DevHub: broker, hub emulator, workload API and TLS front wired together for one module identity."""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
import shutil
import socket
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from visionedge_devhub.broker import Broker
from visionedge_devhub.certs import generate_certs
from visionedge_devhub.emulator import HubEmulator
from visionedge_devhub.front import Front, Identity, bind_listener
from visionedge_devhub.workload import WorkloadServer

_log = logging.getLogger(__name__)

DEFAULT_HOSTNAME = "devhub.azure-devices.net"
DEFAULT_API_VERSION = "2019-01-30"
_T = TypeVar("_T")
_LOOPBACK_CANDIDATES = tuple(f"127.0.0.{n}" for n in range(2, 255))


class DevHubError(RuntimeError):
    """The devhub could not start (no free loopback address, broker failure, ...)."""


def random_key() -> str:
    """A random 32-byte symmetric key, base64-encoded like IoT Hub's module keys."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class DevHub:
    """A local IoT Hub + edgeHub for one module identity, reachable through the SDK's production edge path.

    Each DevHub takes its own loopback IP (port 8883 is fixed by the SDK), so several can run at once.
    """

    def __init__(
        self,
        device_id: str = "devhub-device",
        module_id: str = "visionedge",
        *,
        hostname: str = DEFAULT_HOSTNAME,
        module_key: str | None = None,
        ip: str | None = None,
        work_dir: Path | None = None,
        desired: Mapping[str, Any] | None = None,
        generation_id: str | None = None,
        api_version: str = DEFAULT_API_VERSION,
        max_telemetry: int | None = None,
    ) -> None:
        """Describe the identity; nothing starts until `start()`. `desired` seeds the twin (`$version` 1)."""
        self.identity = Identity(hostname=hostname, device_id=device_id, module_id=module_id)
        self.module_key = module_key or random_key()
        self.generation_id = generation_id or uuid.uuid4().hex
        self.wrong_key_generation_id = f"{self.generation_id}-wrongkey"
        self.api_version = api_version
        self.requested_ip = ip
        self.emulator = HubEmulator(device_id, module_id, desired=desired, max_telemetry=max_telemetry)
        self._work_dir = work_dir
        self._runtime_dir: Path | None = None
        self._ip: str | None = None
        self._broker: Broker | None = None
        self._front: Front | None = None
        self._workload: WorkloadServer | None = None
        self._cleanup = contextlib.ExitStack()

    # ------------------------------------------------------------------------------------------- parts

    @property
    def ip(self) -> str:
        """The loopback IP the SDK connects to (IOTEDGE_GATEWAYHOSTNAME)."""
        return self._require(self._ip, "ip")

    @property
    def broker(self) -> Broker:
        """The Mosquitto process."""
        return self._require(self._broker, "broker")

    @property
    def front(self) -> Front:
        """The TLS front on (ip, 8883): SAS checks and fault injection."""
        return self._require(self._front, "front")

    @property
    def workload(self) -> WorkloadServer:
        """The workload API the SDK asks for the CA and signatures."""
        return self._require(self._workload, "workload")

    @property
    def runtime_dir(self) -> Path:
        """Private temporary directory (certs, keys, unix sockets), removed on stop."""
        return self._require(self._runtime_dir, "runtime_dir")

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return self._front is not None

    def _require(self, part: _T | None, name: str) -> _T:
        """Return a part, or explain that the devhub is not running."""
        if part is None:
            raise DevHubError(f"DevHub.{name} is only available after start()")
        return part

    # --------------------------------------------------------------------------------------- lifecycle

    def start(self) -> DevHub:
        """Start everything (broker, emulator, workload API, front) and return self; undo it all on failure."""
        if self.running:
            return self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        _log.info(
            "devhub up for %s/%s at %s:8883 (hub %s)",
            self.identity.device_id,
            self.identity.module_id,
            self._ip,
            self.identity.hostname,
        )
        return self

    def _start(self) -> None:
        """Start the parts in dependency order, registering each one's undo."""
        runtime = Path(tempfile.mkdtemp(prefix="devhub-"))
        self._runtime_dir = runtime
        self._cleanup.callback(shutil.rmtree, runtime, ignore_errors=True)
        work_dir = self._work_dir or runtime / "work"
        listener, self._ip = self._bind_front_address()
        self._cleanup.callback(listener.close)
        certs = generate_certs(runtime / "certs", self._ip)

        broker = Broker(work_dir / "broker", self._ip, certs)
        self._cleanup.callback(broker.stop)
        broker.start()
        self._broker = broker

        self._cleanup.callback(self.emulator.stop)
        self.emulator.start(*broker.plain_address)

        workload = WorkloadServer(runtime / "workload.sock", self.identity.module_id, certs.ca_pem())
        workload.add_generation(self.generation_id, self.module_key)
        workload.add_generation(self.wrong_key_generation_id, random_key())
        self._cleanup.callback(workload.stop)
        workload.start()
        self._workload = workload

        front = Front(listener, broker.plain_address, self.identity, self.module_key, certs)
        self._cleanup.callback(front.stop)
        front.start()
        self._front = front

    def _bind_front_address(self) -> tuple[socket.socket, str]:
        """Bind port 8883 on the requested IP, or on the first free 127.0.0.N (N >= 2); binding is the lock."""
        candidates = (self.requested_ip,) if self.requested_ip else _LOOPBACK_CANDIDATES
        last_error: OSError | None = None
        for ip in candidates:
            try:
                return bind_listener(ip), ip
            except OSError as err:
                _log.debug("%s:8883 not available: %s", ip, err)
                last_error = err
        where = self.requested_ip or "any of 127.0.0.2-254"
        raise DevHubError(f"port 8883 is taken on {where}: {last_error}")

    def stop(self) -> None:
        """Stop everything started and remove the temporary files (a given work_dir is kept)."""
        self._front = None
        self._workload = None
        self._broker = None
        self._cleanup.close()
        self._runtime_dir = None
        self._cleanup = contextlib.ExitStack()

    def __enter__(self) -> DevHub:
        """Start for a `with` block."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop at the end of a `with` block."""
        self.stop()

    # ------------------------------------------------------------------------------------------ helpers

    def env(self, *, wrong_key: bool = False) -> dict[str, str]:
        """Environment for `IoTHubModuleClient.create_from_edge_environment()`; `wrong_key` makes auth fail."""
        return {
            "IOTEDGE_IOTHUBHOSTNAME": self.identity.hostname,
            "IOTEDGE_DEVICEID": self.identity.device_id,
            "IOTEDGE_MODULEID": self.identity.module_id,
            "IOTEDGE_GATEWAYHOSTNAME": self.ip,
            "IOTEDGE_MODULEGENERATIONID": self.wrong_key_generation_id if wrong_key else self.generation_id,
            "IOTEDGE_WORKLOADURI": self.workload.uri,
            "IOTEDGE_APIVERSION": self.api_version,
            "IOTEDGE_AUTHSCHEME": "sasToken",
        }

    def set_desired(self, patch: Mapping[str, Any]) -> int:
        """Merge a desired patch into the twin (pushed to the module when connected); return the new `$version`."""
        return self.emulator.set_desired(patch)

    def stop_broker(self) -> None:
        """Stop Mosquitto (SIGTERM, sessions saved): the module loses the hub until `start_broker()`."""
        self.broker.stop()

    def start_broker(self, timeout: float = 10.0) -> None:
        """Start Mosquitto again on the same ports and wait for the emulator to be back."""
        self.broker.start(timeout)
        self.emulator.wait_connected(timeout)
