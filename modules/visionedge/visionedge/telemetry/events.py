"""Telemetry events: what the policy emits, the outbox stores and the sender delivers, plus the window summary."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from visionedge import outputs
from visionedge.result import SCHEMA_VERSION, iso_utc

EventType = Literal["result", "aggregate", "heartbeat", "event", "batch", "counts", "alarm"]

OUTPUT_OF: Final[Mapping[str, str]] = {
    "result": outputs.RESULTS,
    "aggregate": outputs.AGGREGATES,
    "heartbeat": outputs.HEARTBEAT,
    "event": outputs.EVENTS,
    "counts": outputs.AGGREGATES,
    "alarm": outputs.EVENTS,
}
"""The IoT Edge output each event type leaves on, so routes can filter by output alone; scene counts travel with
the aggregates and alarms with the events (the deployments' routes already forward both), and IoT Hub routing tells
them apart by the `type` application property."""

LabelState = dict[str, tuple[int, float]]
"""Per label: how many were seen in one frame and the top confidence among them."""


@dataclass(frozen=True)
class Event:
    """One telemetry event; message_id is fixed at creation so a redelivery repeats the same id."""

    output: str
    body: dict[str, Any]
    message_id: str
    source_id: str
    seq: int
    created: float

    @property
    def kind(self) -> str:
        """The body's type: result, aggregate, heartbeat or event."""
        return str(self.body["type"])

    def payload(self) -> bytes:
        """The body as compact UTF-8 JSON, the form stored and sent."""
        return dumps(self.body)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, so sizes (and IoT Hub's 4 KB units) are counted on what really travels."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def message_id(source_id: str, epoch: str, seq: int | str) -> str:
    """`<source>:<epoch>:<seq>`; the epoch changes with every new outbox file, so ids never repeat after a reset."""
    return f"{source_id}:{epoch}:{seq}"


class Sequencer:
    """Hands out per-source sequence numbers that continue where the outbox's last stored event left off."""

    def __init__(self, epoch: str, last: Mapping[str, int] | None = None) -> None:
        self.epoch = epoch
        self._last: dict[str, int] = dict(last or {})

    def make(self, kind: EventType, source_id: str, fields: Mapping[str, Any], now: float) -> Event:
        """Number a new event of `kind`; type, source_id, seq and schema_version lead every body."""
        seq = self._last.get(source_id, 0) + 1
        self._last[source_id] = seq
        body: dict[str, Any] = {"type": kind, "source_id": source_id, "seq": seq, "schema_version": SCHEMA_VERSION}
        body.update((k, v) for k, v in fields.items() if k not in body)
        return Event(OUTPUT_OF[kind], body, message_id(source_id, self.epoch, seq), source_id, seq, now)


def window_span(start: float, end: float, until: float | None) -> dict[str, Any]:
    """The time fields a window's body leads with; `until` ends it early (shutdown, a change), never before it began
    (the wall clock may have stepped back)."""
    end = end if until is None else min(end, max(start, until))
    return {"timestamp": iso_utc(end), "window_start": iso_utc(start), "window_end": iso_utc(end),
            "window_s": round(end - start, 3)}


def label_state(record: Mapping[str, Any]) -> LabelState:
    """Count and top confidence per label of one result record (detections or classifications)."""
    counts: Mapping[str, int] = record.get("counts") or {}
    top: dict[str, float] = {}
    for item in record.get("detections") or record.get("classifications") or []:
        label = str(item["label"])
        top[label] = max(top.get(label, 0.0), float(item["confidence"]))
    return {label: (int(n), top.get(label, 0.0)) for label, n in counts.items() if n}


@dataclass
class LabelStats:
    """One label over a window: total detections, the most in one frame, frames it was in, best confidence."""

    count: int = 0
    peak: int = 0
    frames: int = 0
    max_confidence: float = 0.0


@dataclass
class WindowSummary:
    """Counts and maximum confidence per label over a time window; the policy and outbox compaction both use it."""

    start: float
    window_s: float
    frames: int = 0
    labels: dict[str, LabelStats] = field(default_factory=dict)
    model: Any = None

    @property
    def end(self) -> float:
        """When the window closes."""
        return self.start + self.window_s

    @classmethod
    def containing(cls, now: float, window_s: float, since: float | None = None) -> WindowSummary:
        """The window aligned on the UTC epoch that holds `now`, so windows line up across devices; `since` starts
        it later (after a model swap) with the same end."""
        start = math.floor(now / window_s) * window_s
        return cls(start, window_s) if since is None else cls(since, start + window_s - since)

    def add(self, record: Mapping[str, Any]) -> None:
        """Fold one result record (or one stored result body) into the window."""
        self.frames += 1
        if record.get("model") is not None:
            self.model = record["model"]
        for label, (count, confidence) in label_state(record).items():
            stats = self.labels.setdefault(label, LabelStats())
            stats.count += count
            stats.peak = max(stats.peak, count)
            stats.frames += 1
            stats.max_confidence = max(stats.max_confidence, confidence)

    def fields(self, until: float | None = None) -> dict[str, Any]:
        """The aggregate body fields; `until` ends a window early (shutdown, settings change), never before it began
        (the wall clock may have stepped back)."""
        return {
            **window_span(self.start, self.end, until),
            "model": self.model,
            "frames": self.frames,
            "labels": {
                label: {"count": s.count, "peak": s.peak, "frames": s.frames,
                        "max_confidence": round(s.max_confidence, 5)}
                for label, s in sorted(self.labels.items())
            },
        }
