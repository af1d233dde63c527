"""Real parts for the telemetry tests: a paho Transport, a recording subscriber, records (brokers: devhub's)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import paho.mqtt.client as mqtt
from visionedge.analytics.events import Crossing, SceneFrame, ZoneEvent, ZoneEventKind
from visionedge.telemetry.sender import TransientSendError
from visionedge_devhub.broker import PLAIN_HOST

HOST = PLAIN_HOST


def paho_client(client_id: str, *, clean_session: bool = True) -> mqtt.Client:
    """A paho 1.x client that reconnects quickly, as tests want."""
    client = mqtt.Client(client_id=client_id, clean_session=clean_session)
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    return client


class PahoTransport:
    """A real Transport over MQTT, shaped like the SDK's: topic `hub/<output>/<url-encoded properties>`, QoS 1."""

    def __init__(self, port: int) -> None:
        self.client = paho_client("telemetry-test-device")
        self.client.connect_async(HOST, port, keepalive=5)
        self.client.loop_start()

    def send(self, output: str, payload: bytes, message_id: str, properties: Mapping[str, str],
             timeout: float) -> None:
        """Publish and wait for the PUBACK; no connection or no PUBACK in time is a transient error."""
        if not self.client.is_connected():
            raise TransientSendError("not connected to the broker")
        props = {"$.mid": message_id, "$.ct": "application/json", "$.ce": "utf-8", **properties}
        topic = f"hub/{output}/" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in props.items())
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise TransientSendError(f"publish failed: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TransientSendError(f"no PUBACK within {timeout} s")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Received:
    """One message as the hub side saw it."""

    topic: str
    output: str
    properties: dict[str, str]
    body: Any
    retained: bool


class Recorder:
    """A subscriber with a persistent session (clean_session=False) that records everything it receives."""

    def __init__(self, port: int, topic: str, client_id: str = "telemetry-test-hub") -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self.topic = topic
        self.client = paho_client(client_id, clean_session=False)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda client, _u, _f, rc: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda _c, _u, _mid, _qos: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port, keepalive=5)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise AssertionError(f"recorder not subscribed to {topic} within 10 s")

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/", 2)
        props: dict[str, str] = {}
        if msg.topic.startswith("hub/") and len(parts) == 3:
            props = dict((unquote(k), unquote(v)) for k, _, v in (p.partition("=") for p in parts[2].split("&")))
        try:
            body: Any = json.loads(msg.payload)
        except ValueError:
            body = msg.payload.decode("utf-8", "replace")
        with self._lock:
            self.messages.append(Received(msg.topic, parts[1] if len(parts) > 1 else "", props, body,
                                          bool(msg.retain)))

    def snapshot(self) -> list[Received]:
        """Everything received so far."""
        with self._lock:
            return list(self.messages)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(message_id, body) of every event received, batches unpacked."""
        out: list[tuple[str, dict[str, Any]]] = []
        for m in self.snapshot():
            if isinstance(m.body, dict) and m.body.get("type") == "batch":
                out.extend((e["message_id"], {k: v for k, v in e.items() if k != "message_id"})
                           for e in m.body["events"])
            elif isinstance(m.body, dict):
                out.append((m.properties.get("$.mid", ""), m.body))
        return out

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


class Clock:
    """A settable pair of clocks for the policy, outbox and budget: wall time (call it) and steady time."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.mono = 1000.0

    def __call__(self) -> float:
        """The current simulated wall time."""
        return self.now

    def steady(self) -> float:
        """The current simulated monotonic time."""
        return self.mono

    def advance(self, seconds: float) -> float:
        """Time passes: both clocks move forward; returns the new wall time."""
        self.now += seconds
        self.mono += seconds
        return self.now

    def step(self, seconds: float) -> None:
        """The wall clock is set (NTP, an operator): only wall time jumps, by `seconds` (negative: back)."""
        self.now += seconds


def record(counts: Mapping[str, int], confidence: float | Mapping[str, float] = 0.9, *, source_id: str = "cam",
           frame_index: int = 0, model: str = "yolox-nano") -> dict[str, Any]:
    """A schema-1.0 detection record with `counts` objects of each label."""

    def conf(label: str) -> float:
        return confidence.get(label, 0.9) if isinstance(confidence, Mapping) else confidence

    detections = [{"label": label, "confidence": conf(label), "box": [0.1, 0.1, 0.2, 0.2]}
                  for label, n in counts.items() for _ in range(n)]
    return {
        "schema_version": "1.0",
        "source_id": source_id,
        "frame_index": frame_index,
        "timestamp": "2027-01-15T08:00:00.000Z",
        "frame_size": [640, 480],
        "model": {"name": model, "version": "1"},
        "inference_ms": 5.0,
        "detections": detections,
        "counts": {label: n for label, n in counts.items() if n},
    }


def crossing(line: str = "door", direction: str = "in", *, label: str = "person", track_id: int = 1,
             at: float = 1_800_000_000.0, alarm: bool = False, source_id: str = "cam") -> Crossing:
    """One crossing as the scene analytics report it."""
    return Crossing(source_id, line, direction, label, track_id, at, alarm)


def zone_event(kind: ZoneEventKind, zone: str = "queue", *, label: str = "person", track_id: int = 1,
               at: float = 1_800_000_000.0, dwell_s: float | None = None, alarm: bool = False,
               source_id: str = "cam") -> ZoneEvent:
    """One zone event as the scene analytics report it."""
    return ZoneEvent(source_id, zone, kind, label, track_id, at, dwell_s, alarm)


def scene(at: float, occupancy: Mapping[str, Mapping[str, int]] | None = None, *events: Crossing | ZoneEvent,
          source_id: str = "cam", model: str = "yolox-nano@1", geometry: str = "g1") -> SceneFrame:
    """One analysed frame's SceneFrame with exact ground truth."""
    return SceneFrame(source_id, at, model, geometry, occupancy if occupancy is not None else {"queue": {}}, events)
