"""IoT Hub for one module identity, as tests and the devhub CLI drive it: the twin, direct methods, inputs and the
telemetry received, with waits that block until the module did something.

The jobs behind it live beside it: `hublink.py` speaks the MQTT protocol, `twinstore.py` holds the twin,
`telemetrylog.py` records and decodes the messages; this class owns the one condition they share and the waits on it.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from visionedge_devhub.hublink import HubLink
from visionedge_devhub.telemetrylog import (
    Telemetry,
    TelemetryLog,
    TelemetryPredicate,
    encode_properties,
    parse_properties,
)
from visionedge_devhub.twinstore import Document, TwinStore

__all__ = ["EMULATOR_CLIENT_ID", "Document", "HubEmulator", "MethodTimeoutError", "Telemetry", "TelemetryPredicate",
           "encode_properties", "parse_properties"]

_log = logging.getLogger(__name__)

EMULATOR_CLIENT_ID = "devhub-emulator"


class MethodTimeoutError(TimeoutError):
    """A direct method got no response in time (module not connected, no handler, or handler too slow)."""


class HubEmulator:
    """Plays IoT Hub for one (deviceId, moduleId): twin, desired patches, direct methods, inputs, telemetry.

    All state is guarded by one condition, which every change notifies; the wait helpers block on it.
    """

    def __init__(
        self,
        device_id: str,
        module_id: str,
        *,
        desired: Mapping[str, Any] | None = None,
        max_telemetry: int | None = None,
        client_id: str = EMULATOR_CLIENT_ID,
    ) -> None:
        """Hold twin state for one module identity; `desired` seeds the desired document at `$version` 1."""
        self.device_id = device_id
        self.module_id = module_id
        self.client_id = client_id
        self._cond = threading.Condition()
        self._desired_order = threading.Lock()
        self._twin = TwinStore(self._cond, desired)
        self._log = TelemetryLog(self._cond, max_telemetry)
        self._link = HubLink(device_id, module_id, client_id, self._cond, self._twin, self._log)

    # ----------------------------------------------------------------------------------------- lifecycle

    def start(self, host: str, port: int, timeout: float = 10.0) -> None:
        """Connect to the broker's plain listener and wait until subscribed."""
        self._link.start(host, port)
        self.wait_connected(timeout)

    def stop(self) -> None:
        """Disconnect cleanly (the broker keeps the session) and stop the network thread."""
        self._link.stop()

    @property
    def connected(self) -> bool:
        """True while connected to the broker with all subscriptions acknowledged."""
        with self._cond:
            return self._link.connected

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Block until the emulator is connected and subscribed (after start or a broker restart)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._link.connected, timeout):
                raise TimeoutError(f"hub emulator not connected to the broker within {timeout} s")

    # ----------------------------------------------------------------------------------------------- twin

    @property
    def desired(self) -> Document:
        """A copy of the desired document, with its `$version`."""
        return self._twin.desired()

    @property
    def reported(self) -> Document:
        """A copy of the reported document, with its `$version`."""
        return self._twin.reported()

    def twin(self) -> Document:
        """The twin as a module's `get_twin` sees it: `{"desired": {...}, "reported": {...}}`."""
        return {"desired": self.desired, "reported": self.reported}

    @property
    def twin_gets(self) -> int:
        """How many twin GET requests were answered (the SDK re-reads the twin after every connect)."""
        return self._twin.gets

    def set_desired(self, patch: Mapping[str, Any]) -> int:
        """Merge a desired patch (null deletes), push it to the module with `$version`, return the new version."""
        with self._desired_order:  # patches reach the module in version order
            version = self._twin.patch_desired(patch)
            self._link.push_desired(patch, version)
        return version

    def wait_for_reported(self, predicate: Callable[[Document], bool], timeout: float = 5.0) -> Document:
        """Block until `predicate(reported document)` holds; return that document or raise TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._twin.reported()), timeout):
                raise TimeoutError(
                    f"reported properties did not match within {timeout} s; last: {self._twin.reported()}"
                )
            return self._twin.reported()

    # -------------------------------------------------------------------------------------------- methods

    def call_method(self, name: str, payload: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """Invoke a direct method and wait for the module's reply: `(status, payload)` or MethodTimeoutError."""
        replies = self._link.replies
        rid = self._link.request_method(name, payload)
        try:
            with self._cond:
                if not self._cond.wait_for(lambda: replies[rid] is not None, timeout):
                    raise MethodTimeoutError(
                        f"direct method {name!r} got no response within {timeout} s "
                        "(is the module connected, with a method handler?)"
                    )
                reply = replies[rid]
        finally:
            with self._cond:
                replies.pop(rid, None)
        assert reply is not None  # for mypy: the wait above guarantees it
        _log.debug("direct method %s answered %s", name, reply[0])
        return reply

    # --------------------------------------------------------------------------------------------- inputs

    def send_input(
        self,
        input_name: str,
        body: bytes | str | Mapping[str, Any] | list[Any],
        properties: Mapping[str, str] | None = None,
        *,
        message_id: str | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
    ) -> str:
        """Route a message to the module's input `input_name` (JSON for dicts/lists); return its message id."""
        if isinstance(body, (Mapping, list)):
            payload = json.dumps(body).encode("utf-8")
            content_type = content_type or "application/json"
            content_encoding = content_encoding or "utf-8"
        elif isinstance(body, str):
            payload = body.encode(content_encoding or "utf-8")
        else:
            payload = body
        message_id = message_id or str(uuid.uuid4())
        self._link.send_input(input_name, payload, message_id, content_type, content_encoding, properties)
        _log.debug("input message %s sent to %s", message_id, input_name)
        return message_id

    # ------------------------------------------------------------------------------------------ telemetry

    def telemetry(self) -> list[Telemetry]:
        """A snapshot of the telemetry recorded so far, oldest first."""
        return self._log.messages()

    def clear_telemetry(self) -> None:
        """Forget recorded telemetry (sequence numbers keep counting)."""
        self._log.clear()

    def wait_for_telemetry(
        self, predicate: TelemetryPredicate | None = None, timeout: float = 5.0, count: int = 1
    ) -> list[Telemetry]:
        """Block until `count` recorded messages match `predicate`; return the first `count` of them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._log.messages(predicate)) >= count, timeout):
                seen = [t.output for t in self._log.messages()]
                raise TimeoutError(
                    f"expected {count} matching telemetry message(s) within {timeout} s, got "
                    f"{len(self._log.messages(predicate))}; outputs seen: {seen[-20:]}"
                )
            return self._log.messages(predicate)[:count]

    @property
    def last_seq(self) -> int:
        """Sequence number of the latest message recorded (0 before any), to follow only new ones."""
        return self._log.last_seq

    def telemetry_after(self, seq: int, timeout: float) -> list[Telemetry]:
        """Messages with a sequence number above `seq`, waiting up to `timeout` for at least one (for long polls)."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._log.messages(after=seq)), timeout)
            return self._log.messages(after=seq)
