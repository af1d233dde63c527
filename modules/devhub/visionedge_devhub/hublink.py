"""The cloud side of IoT Hub's MQTT protocol for one module identity: the paho client with a persistent session,
the `$iothub` topics it answers (twin GET, reported patches, method responses) and those it publishes (desired
patches, method requests, input messages)."""

from __future__ import annotations

import itertools
import json
import logging
import socket
import threading
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import quote

import paho.mqtt.client as mqtt

from visionedge_devhub.telemetrylog import TelemetryLog, encode_properties, parse_properties
from visionedge_devhub.twinstore import TwinStore

_log = logging.getLogger(__name__)

_TWIN_GET = "$iothub/twin/GET/"
_TWIN_REPORTED = "$iothub/twin/PATCH/properties/reported/"
_METHOD_RES = "$iothub/methods/res/"


def _query(topic: str) -> dict[str, str | None]:
    """Return the `?$rid=..&$version=..` part of a `$iothub` topic as a dict."""
    _, _, query = topic.partition("?")
    return parse_properties(query)


class HubLink:
    """A paho client with a fixed client id and a persistent session on the broker's plain listener, so the broker
    queues for it while it is away; its state lives under the emulator's condition, which it notifies."""

    def __init__(self, device_id: str, module_id: str, client_id: str, cond: threading.Condition,
                 twin: TwinStore, log: TelemetryLog) -> None:
        self.client_id = client_id
        self.topic_base = f"devices/{device_id}/modules/{module_id}"
        self._cond = cond
        self._twin = twin
        self._log = log
        self._rids = itertools.count(1)
        self.replies: dict[str, tuple[int, Any] | None] = {}
        """Direct method responses by request id: None until the module answers; only expected ids are kept."""
        self.connected = False
        """True while connected with every subscription acknowledged; read and written under the condition."""
        self._pending_subscriptions: set[int] = set()
        self._client: mqtt.Client | None = None

    def start(self, host: str, port: int) -> None:
        """Connect to the broker in the background (paho reconnects on its own)."""
        client = mqtt.Client(client_id=self.client_id, clean_session=False, protocol=mqtt.MQTTv311)
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=0.05, max_delay=1)  # paho takes float delays
        # A bug in a callback must not end paho's network thread: log it through our logger instead.
        client.suppress_exceptions = True
        client.enable_logger(logging.getLogger(f"{_log.name}.paho"))
        self._client = client
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        # paho names its network thread "Thread-N"; name it so thread dumps say whose it is.
        thread = getattr(client, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.name = "devhub-emulator-mqtt"

    def stop(self) -> None:
        """Disconnect cleanly (the broker keeps the session) and stop the network thread."""
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        with self._cond:
            self.connected = False
            self._cond.notify_all()
        _log.info("hub emulator stopped")

    # ------------------------------------------------------------------------------------ cloud to module

    def push_desired(self, patch: Mapping[str, Any], version: int) -> None:
        """Send a desired patch with its `$version` (the `$` keys of the patch stay behind)."""
        message = {**{k: v for k, v in patch.items() if not k.startswith("$")}, "$version": version}
        self._publish(f"$iothub/twin/PATCH/properties/desired/?$version={version}", json.dumps(message), qos=1)
        _log.info("desired patch pushed at $version %s: %s", version, sorted(message))

    def request_method(self, name: str, payload: Any) -> str:
        """Send a direct method request; its response will land in `replies` under the returned request id."""
        rid = format(next(self._rids), "x")
        with self._cond:
            self.replies[rid] = None
        self._publish(f"$iothub/methods/POST/{quote(name, safe='')}/?$rid={rid}", json.dumps(payload), qos=0)
        return rid

    def send_input(self, input_name: str, payload: bytes, message_id: str, content_type: str | None,
                   content_encoding: str | None, properties: Mapping[str, str] | None) -> None:
        """Route a message to one of the module's inputs, its properties in the topic as edgeHub puts them."""
        system = [("$.mid", message_id)]
        system += [("$.ct", content_type)] if content_type else []
        system += [("$.ce", content_encoding)] if content_encoding else []
        custom = sorted((str(k), str(v)) for k, v in (properties or {}).items())
        topic = f"{self.topic_base}/inputs/{quote(input_name, safe='')}/{encode_properties(system + custom)}"
        self._publish(topic, payload, qos=1)

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

    # ------------------------------------------------------------------------------------- paho callbacks

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
            (f"{self.topic_base}/messages/events/#", 1),
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
            self.connected = not self._pending_subscriptions
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, rc: int) -> None:
        """Note the loss; paho reconnects on its own."""
        with self._cond:
            self.connected = False
            self._pending_subscriptions.clear()
            self._cond.notify_all()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            _log.info("hub emulator lost the broker (%s); reconnecting", mqtt.error_string(rc))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Dispatch one message from the module by topic."""
        topic = cast(str, message.topic)
        payload = cast(bytes, message.payload)
        events = f"{self.topic_base}/messages/events/"
        if topic.startswith(_TWIN_GET):
            self._answer_twin_get(topic)
        elif topic.startswith(_TWIN_REPORTED):
            self._answer_reported_patch(topic, payload)
        elif topic.startswith(_METHOD_RES):
            self._record_method_reply(topic, payload)
        elif topic.startswith(events):
            record = self._log.record(topic, topic[len(events):], payload)
            _log.debug("telemetry %s on output %s (%d bytes)", record.message_id, record.output, len(payload))
        else:
            _log.debug("ignoring message on %s", topic)

    def _answer_twin_get(self, topic: str) -> None:
        """Reply 200 with the whole twin."""
        rid = _query(topic).get("$rid") or ""
        body = json.dumps(self._twin.read_for_module())
        self._publish(f"$iothub/twin/res/200/?$rid={quote(rid, safe='')}", body, qos=0)

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
        version = self._twin.patch_reported(patch)
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
            if rid not in self.replies:
                _log.info("late or unknown method response %s (status %s) dropped", rid, status)
                return
            self.replies[rid] = (status, body)
            self._cond.notify_all()
