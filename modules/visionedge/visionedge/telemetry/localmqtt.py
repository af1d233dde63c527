"""Optional on-premises MQTT broker that gets the same events as IoT Hub, live, for local dashboards.

Independent of IoT Hub: it keeps publishing while the cloud link is down. It is best-effort and never blocks the
pipeline: paho connects and reconnects on its own thread; while the broker is unreachable paho keeps up to
`max_queued` QoS 1 messages in memory and sends them on reconnect, and further events are dropped and counted
(the outbox, not this, is what guarantees delivery to IoT Hub).

Topics: events on `<topic_prefix>/<source_id>/<output>` (QoS 1, body JSON with its seq); availability on
`<topic_prefix>/status`, retained: "online" after connecting, "offline" on close or, as the last will, when the
connection dies. Retained state (scene occupancy and counts, Home Assistant discovery: `scenemqtt.py`) goes through
`retain`, which publishes what changed and clears (empty retained payload) what is gone, and all of it again on
every (re)connect; once it has been called,
the publisher subscribes to the filters it was given and clears retained topics there that it no longer holds, so
a line removed while the module was down disappears too.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import paho.mqtt.client as mqtt

from visionedge.config import LocalMqttSettings
from visionedge.telemetry.events import Event

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"


class LocalMqttPublisher:
    """A paho-mqtt 1.x client publishing events and a retained availability topic; credentials are never logged."""

    def __init__(self, settings: LocalMqttSettings, *, username: str | None = None, password: str | None = None,
                 client_id: str | None = None, ca_certs: str | None = None, max_queued: int = 1000,
                 keepalive_s: int = 30) -> None:
        self.settings = settings
        self._credentials = (username, password)
        self.status_topic = f"{settings.topic_prefix}/status"
        self.keepalive_s = keepalive_s
        self.published = 0
        self.dropped = 0
        self._connected = False
        self._ever_connected = False
        self._refused = mqtt.CONNACK_ACCEPTED
        self._lock = threading.Lock()
        self._client = mqtt.Client(client_id=client_id or f"visionedge-{uuid.uuid4().hex[:12]}", clean_session=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        if settings.tls:
            self._client.tls_set(ca_certs=ca_certs)
        self._client.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_queued_messages_set(max_queued)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._retained: dict[str, bytes] = {}
        self._owned: tuple[str, ...] = ()
        """Filters under which every retained topic is the module's own (subscribed once `retain` was called)."""

    @property
    def address(self) -> str:
        """host:port, for logs (never with credentials)."""
        return f"{self.settings.host}:{self.settings.port}"

    def uses(self, username: str | None, password: str | None) -> bool:
        """Whether these are the credentials in use (so a twin re-sending the same settings changes nothing)."""
        return self._credentials == (username, password)

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._connected

    def start(self) -> None:
        """Connect in the background (paho's network thread, renamed "local-mqtt"); returns at once."""
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.keepalive_s)
        self._client.loop_start()
        thread = getattr(self._client, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.name = "local-mqtt"
        log.info("local MQTT: connecting to %s in the background", self.address)

    def publish(self, event: Event) -> None:
        """Queue one event at QoS 1 without waiting; counted as dropped when paho's queue is full."""
        topic = f"{self.settings.topic_prefix}/{event.source_id}/{event.output}"
        info = self._client.publish(topic, event.payload(), qos=1)
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.published += 1
            return
        with self._lock:
            self.dropped += 1
            first = self.dropped == 1
        if first:
            log.warning("local MQTT: dropping events (%s); further drops are only counted",
                        mqtt.error_string(info.rc))

    def retain(self, values: Mapping[str, bytes], owned: Sequence[str] = ()) -> None:
        """Make the retained topics exactly `values`: publish the changed ones and an empty payload for those gone;
        `owned` are filters where retained topics not in `values` are stale and cleared (see the module docstring)."""
        with self._lock:
            changed = {t: v for t, v in values.items() if self._retained.get(t) != v}
            changed.update((t, b"") for t in self._retained if t not in values)
            self._retained = dict(values)
            subscribe = tuple(owned) != self._owned and self._connected
            self._owned = tuple(owned)
        for topic, payload in changed.items():
            self._client.publish(topic, payload, qos=1, retain=True)
        if subscribe and self._owned:
            self._client.subscribe([(f, 1) for f in self._owned])

    def close(self, timeout: float = 1.0) -> None:
        """Publish a retained "offline", disconnect and stop the network thread."""
        if self._connected:
            info = self._client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected = False

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: dict[str, Any], rc: int) -> None:
        """Announce "online" (retained) on every (re)connect; log a refusal once per reason."""
        if rc != mqtt.CONNACK_ACCEPTED:
            if rc != self._refused:
                log.warning("local MQTT: %s refused the connection: %s; retrying", self.address,
                            mqtt.connack_string(rc))
            self._refused = rc
            return
        self._refused = rc
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        with self._lock:
            held, owned = dict(self._retained), self._owned
        for topic, payload in held.items():  # what was set while away (or lost with a broker's restart)
            client.publish(topic, payload, qos=1, retain=True)
        if owned:
            client.subscribe([(f, 1) for f in owned])
        self._connected = True
        log.info("local MQTT: %s %s", "reconnected to" if self._ever_connected else "connected to", self.address)
        self._ever_connected = True

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        """A retained topic the broker holds under an owned filter that this module no longer holds: clear it."""
        if not message.retain or not message.payload:
            return
        with self._lock:
            stale = message.topic not in self._retained
        if stale:
            client.publish(message.topic, b"", qos=1, retain=True)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, rc: int) -> None:
        """Note the loss once; paho reconnects by itself."""
        was, self._connected = self._connected, False
        if rc != mqtt.MQTT_ERR_SUCCESS and was:
            log.warning("local MQTT: lost %s (%s); reconnecting", self.address, mqtt.error_string(rc))
