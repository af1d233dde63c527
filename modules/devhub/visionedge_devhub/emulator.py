"""The cloud side of IoT Hub's MQTT protocol for one module identity, so tests can drive a real SDK client."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import quote, unquote

import paho.mqtt.client as mqtt
from visionedge.acks import merge_patch

_log = logging.getLogger(__name__)

EMULATOR_CLIENT_ID = "devhub-emulator"
_TWIN_GET = "$iothub/twin/GET/"
_TWIN_REPORTED = "$iothub/twin/PATCH/properties/reported/"
_METHOD_RES = "$iothub/methods/res/"

Document = dict[str, Any]
TelemetryPredicate = Callable[["Telemetry"], bool]


class MethodTimeoutError(TimeoutError):
    """A direct method got no response in time (module not connected, no handler, or handler too slow)."""


@dataclass(frozen=True)
class Telemetry:
    """One device-to-cloud message as IoT Hub would see it: output name, system and custom properties, body."""

    seq: int
    output: str | None
    message_id: str | None
    content_type: str | None
    content_encoding: str | None
    properties: Mapping[str, str | None]
    system_properties: Mapping[str, str | None]
    body: bytes
    json: Any
    received_at: float
    topic: str = field(repr=False)

    @property
    def text(self) -> str:
        """The body decoded as text (content encoding, else UTF-8), for assertions on non-JSON bodies."""
        return self.body.decode(self.content_encoding or "utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (body as JSON, else text) for the CLI's `watch`."""
        return {
            "seq": self.seq,
            "output": self.output,
            "message_id": self.message_id,
            "content_type": self.content_type,
            "content_encoding": self.content_encoding,
            "properties": dict(self.properties),
            "body": self.json if self.json is not None else self.text,
            "received_at": self.received_at,
        }


def parse_properties(segment: str) -> dict[str, str | None]:
    """Decode a `{props}` topic segment (`k=v&k2=v2`, percent-encoded) with `unquote`: '+' stays '+'."""
    properties: dict[str, str | None] = {}
    for entry in segment.split("&"):
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        properties[unquote(key)] = unquote(value) if sep else None
    return properties


def encode_properties(pairs: list[tuple[str, str]]) -> str:
    """Encode properties for a topic the way the SDK does: each key and value percent-encoded, '&'-joined."""
    return "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in pairs)


def _query(topic: str) -> dict[str, str | None]:
    """Return the `?$rid=..&$version=..` part of a `$iothub` topic as a dict."""
    _, _, query = topic.partition("?")
    return parse_properties(query)


class HubEmulator:
    """Plays IoT Hub for one (deviceId, moduleId): twin, desired patches, direct methods, inputs, telemetry.

    A paho client with a fixed client id and a persistent session on the broker's plain listener, so the broker
    queues for it while it is away. All state is guarded by one condition; wait helpers block on it.
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
        self._topic_base = f"devices/{device_id}/modules/{module_id}"
        self._cond = threading.Condition()
        self._desired_order = threading.Lock()
        self._desired: Document = {}
        merge_patch(self._desired, desired or {})
        self._desired_version = 1
        self._reported: Document = {}
        self._reported_version = 1
        self._telemetry: deque[Telemetry] = deque(maxlen=max_telemetry)
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._rids = itertools.count(1)
        self._method_replies: dict[str, tuple[int, Any] | None] = {}
        self._twin_gets = 0
        self._connected = False
        self._pending_subscriptions: set[int] = set()
        self._client: mqtt.Client | None = None

    # ----------------------------------------------------------------------------------------- lifecycle

    def start(self, host: str, port: int, timeout: float = 10.0) -> None:
        """Connect to the broker's plain listener and wait until subscribed."""
        client = mqtt.Client(client_id=self.client_id, clean_session=False, protocol=mqtt.MQTTv311)
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=0.05, max_delay=1)  # paho takes float delays
        # A bug in a callback must not end paho's network thread: log it through our logger instead.
        client.suppress_exceptions = True
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        self._client = client
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        # paho names its network thread "Thread-N"; name it so thread dumps say whose it is.
        thread = getattr(client, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.name = "devhub-emulator-mqtt"
        self.wait_connected(timeout)

    def stop(self) -> None:
        """Disconnect cleanly (the broker keeps the session) and stop the network thread."""
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        with self._cond:
            self._connected = False
            self._cond.notify_all()
        _log.info("hub emulator stopped")

    @property
    def connected(self) -> bool:
        """True while connected to the broker with all subscriptions acknowledged."""
        with self._cond:
            return self._connected

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Block until the emulator is connected and subscribed (after start or a broker restart)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._connected, timeout):
                raise TimeoutError(f"hub emulator not connected to the broker within {timeout} s")

    # ----------------------------------------------------------------------------------------------- twin

    @property
    def desired(self) -> Document:
        """A copy of the desired document, with its `$version`."""
        with self._cond:
            return {**copy.deepcopy(self._desired), "$version": self._desired_version}

    @property
    def reported(self) -> Document:
        """A copy of the reported document, with its `$version`."""
        with self._cond:
            return {**copy.deepcopy(self._reported), "$version": self._reported_version}

    def twin(self) -> Document:
        """The twin as a module's `get_twin` sees it: `{"desired": {...}, "reported": {...}}`."""
        return {"desired": self.desired, "reported": self.reported}

    @property
    def twin_gets(self) -> int:
        """How many twin GET requests were answered (the SDK re-reads the twin after every connect)."""
        with self._cond:
            return self._twin_gets

    def set_desired(self, patch: Mapping[str, Any]) -> int:
        """Merge a desired patch (null deletes), push it to the module with `$version`, return the new version."""
        with self._desired_order:
            with self._cond:
                merge_patch(self._desired, patch)
                self._desired_version += 1
                version = self._desired_version
            message = {**{k: v for k, v in patch.items() if not k.startswith("$")}, "$version": version}
            self._publish(f"$iothub/twin/PATCH/properties/desired/?$version={version}", json.dumps(message), qos=1)
        _log.info("desired patch pushed at $version %s: %s", version, sorted(message))
        return version

    def wait_for_reported(self, predicate: Callable[[Document], bool], timeout: float = 5.0) -> Document:
        """Block until `predicate(reported document)` holds; return that document or raise TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._reported_snapshot()), timeout):
                raise TimeoutError(
                    f"reported properties did not match within {timeout} s; last: {self._reported_snapshot()}"
                )
            return self._reported_snapshot()

    def _reported_snapshot(self) -> Document:
        """Copy of the reported document; callers hold the condition."""
        return {**copy.deepcopy(self._reported), "$version": self._reported_version}

    # -------------------------------------------------------------------------------------------- methods

    def call_method(self, name: str, payload: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        """Invoke a direct method and wait for the module's reply: `(status, payload)` or MethodTimeoutError."""
        rid = format(next(self._rids), "x")
        with self._cond:
            self._method_replies[rid] = None
        try:
            self._publish(f"$iothub/methods/POST/{quote(name, safe='')}/?$rid={rid}", json.dumps(payload), qos=0)
            with self._cond:
                if not self._cond.wait_for(lambda: self._method_replies[rid] is not None, timeout):
                    raise MethodTimeoutError(
                        f"direct method {name!r} got no response within {timeout} s "
                        "(is the module connected, with a method handler?)"
                    )
                reply = self._method_replies[rid]
        finally:
            with self._cond:
                self._method_replies.pop(rid, None)
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
        system = [("$.mid", message_id)]
        system += [("$.ct", content_type)] if content_type else []
        system += [("$.ce", content_encoding)] if content_encoding else []
        custom = sorted((str(k), str(v)) for k, v in (properties or {}).items())
        topic = f"{self._topic_base}/inputs/{quote(input_name, safe='')}/{encode_properties(system + custom)}"
        self._publish(topic, payload, qos=1)
        _log.debug("input message %s sent to %s", message_id, input_name)
        return message_id

    # ------------------------------------------------------------------------------------------ telemetry

    def telemetry(self) -> list[Telemetry]:
        """A snapshot of the telemetry recorded so far, oldest first."""
        with self._cond:
            return list(self._telemetry)

    def clear_telemetry(self) -> None:
        """Forget recorded telemetry (sequence numbers keep counting)."""
        with self._cond:
            self._telemetry.clear()

    def wait_for_telemetry(
        self, predicate: TelemetryPredicate | None = None, timeout: float = 5.0, count: int = 1
    ) -> list[Telemetry]:
        """Block until `count` recorded messages match `predicate`; return the first `count` of them."""

        def matching() -> list[Telemetry]:
            return [t for t in self._telemetry if predicate is None or predicate(t)]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                seen = [t.output for t in self._telemetry]
                raise TimeoutError(
                    f"expected {count} matching telemetry message(s) within {timeout} s, got "
                    f"{len(matching())}; outputs seen: {seen[-20:]}"
                )
            return matching()[:count]

    @property
    def last_seq(self) -> int:
        """Sequence number of the latest message recorded (0 before any), to follow only new ones."""
        with self._cond:
            return self._last_seq

    def telemetry_after(self, seq: int, timeout: float) -> list[Telemetry]:
        """Messages with a sequence number above `seq`, waiting up to `timeout` for at least one (for long polls)."""

        def newer() -> list[Telemetry]:
            return [t for t in self._telemetry if t.seq > seq]

        with self._cond:
            self._cond.wait_for(lambda: bool(newer()), timeout)
            return newer()

    # ---------------------------------------------------------------------------------------- paho side

    def _publish(self, topic: str, payload: str | bytes, qos: int) -> None:
        """Publish if started (paho queues QoS 1 while disconnected); before start only the state changes.

        Failures are logged, not raised: this also runs on paho's network thread, which an exception would end.
        """
        client = self._client
        if client is None:
            _log.debug("emulator not started: %s not published", topic)
            return
        info = client.publish(topic, payload, qos=qos)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            _log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: socket.socket) -> None:
        """Set TCP_NODELAY: paho never does, and Nagle adds 40 ms to each round trip."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: dict[str, int], rc: int) -> None:
        """Subscribe to everything the module publishes (the `$` topics need explicit subscriptions)."""
        if rc != mqtt.CONNACK_ACCEPTED:
            _log.warning("hub emulator refused by broker: %s", mqtt.connack_string(rc))
            return
        topics = [
            (f"{_TWIN_GET}#", 1),
            (f"{_TWIN_REPORTED}#", 1),
            (f"{_METHOD_RES}#", 1),
            (f"{self._topic_base}/messages/events/#", 1),
        ]
        result, mid = client.subscribe(topics)
        if result != mqtt.MQTT_ERR_SUCCESS:
            _log.warning("hub emulator could not subscribe: %s", mqtt.error_string(result))
            return
        with self._cond:
            self._pending_subscriptions.add(mid)
        _log.info("hub emulator connected (session present: %s)", flags.get("session present"))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, granted_qos: tuple[int, ...]) -> None:
        """Mark the emulator ready once the broker acknowledged its subscriptions."""
        with self._cond:
            self._pending_subscriptions.discard(mid)
            self._connected = not self._pending_subscriptions
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, rc: int) -> None:
        """Note the loss; paho reconnects on its own."""
        with self._cond:
            self._connected = False
            self._pending_subscriptions.clear()
            self._cond.notify_all()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            _log.info("hub emulator lost the broker (%s); reconnecting", mqtt.error_string(rc))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Dispatch one message from the module by topic."""
        topic = cast(str, message.topic)
        payload = cast(bytes, message.payload)
        if topic.startswith(_TWIN_GET):
            self._answer_twin_get(topic)
        elif topic.startswith(_TWIN_REPORTED):
            self._answer_reported_patch(topic, payload)
        elif topic.startswith(_METHOD_RES):
            self._record_method_reply(topic, payload)
        elif topic.startswith(f"{self._topic_base}/messages/events/"):
            self._record_telemetry(topic, payload)
        else:
            _log.debug("ignoring message on %s", topic)

    def _answer_twin_get(self, topic: str) -> None:
        """Reply 200 with the whole twin."""
        rid = _query(topic).get("$rid") or ""
        with self._cond:
            self._twin_gets += 1
            body = json.dumps({"desired": self._desired_snapshot(), "reported": self._reported_snapshot()})
            self._cond.notify_all()
        self._publish(f"$iothub/twin/res/200/?$rid={quote(rid, safe='')}", body, qos=0)

    def _desired_snapshot(self) -> Document:
        """Copy of the desired document; callers hold the condition."""
        return {**copy.deepcopy(self._desired), "$version": self._desired_version}

    def _answer_reported_patch(self, topic: str, payload: bytes) -> None:
        """Merge a reported patch and reply 204 with the new `$version` (400 if it is not a JSON object)."""
        rid = quote(_query(topic).get("$rid") or "", safe="")
        try:
            patch = json.loads(payload)
        except ValueError:
            patch = None
        if not isinstance(patch, dict):
            _log.warning("rejecting reported patch that is not a JSON object: %r", payload[:200])
            self._publish(f"$iothub/twin/res/400/?$rid={rid}", json.dumps({"message": "not a JSON object"}), qos=0)
            return
        with self._cond:
            merge_patch(self._reported, patch)
            self._reported_version += 1
            version = self._reported_version
            self._cond.notify_all()
        _log.debug("reported patch merged at $version %s: %s", version, sorted(patch))
        self._publish(f"$iothub/twin/res/204/?$rid={rid}&$version={version}", b"", qos=0)

    def _record_method_reply(self, topic: str, payload: bytes) -> None:
        """Hand a method response to the caller waiting on its request id."""
        parts = topic.split("/")
        rid = _query(topic).get("$rid") or ""
        try:
            status = int(parts[3])
            body = json.loads(payload) if payload else None
        except (IndexError, ValueError):
            _log.warning("malformed method response on %s: %r", topic, payload[:200])
            return
        with self._cond:
            if rid not in self._method_replies:
                _log.info("late or unknown method response %s (status %s) dropped", rid, status)
                return
            self._method_replies[rid] = (status, body)
            self._cond.notify_all()

    def _record_telemetry(self, topic: str, payload: bytes) -> None:
        """Decode `{props}` and the body, and record the message."""
        segment = topic[len(f"{self._topic_base}/messages/events/") :]
        everything = parse_properties(segment)
        system = {k: v for k, v in everything.items() if k.startswith("$.")}
        custom = {k: v for k, v in everything.items() if not k.startswith("$.")}
        try:
            parsed: Any = json.loads(payload.decode(system.get("$.ce") or "utf-8"))
        except (ValueError, LookupError):
            parsed = None
        with self._cond:
            record = Telemetry(
                seq=next(self._seq),
                output=system.get("$.on"),
                message_id=system.get("$.mid"),
                content_type=system.get("$.ct"),
                content_encoding=system.get("$.ce"),
                properties=MappingProxyType(custom),
                system_properties=MappingProxyType(system),
                body=payload,
                json=parsed,
                received_at=time.time(),
                topic=topic,
            )
            self._telemetry.append(record)
            self._last_seq = record.seq
            self._cond.notify_all()
        _log.debug("telemetry %s on output %s (%d bytes)", record.message_id, record.output, len(payload))
