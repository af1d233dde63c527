"""What the emulator records of the module's device-to-cloud messages, decoded as IoT Hub sees them: output name,
system and custom properties (the `{props}` topic segment), body."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote


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


TelemetryPredicate = Callable[[Telemetry], bool]


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


class TelemetryLog:
    """Recorded messages, oldest first (the oldest forgotten past `max_telemetry`), numbered from 1."""

    def __init__(self, cond: threading.Condition, max_telemetry: int | None = None) -> None:
        self._cond = cond
        self._messages: deque[Telemetry] = deque(maxlen=max_telemetry)
        self._seq = itertools.count(1)
        self._last_seq = 0

    def record(self, topic: str, segment: str, payload: bytes) -> Telemetry:
        """Decode `{props}` and the body, record the message and wake whoever waits."""
        everything = parse_properties(segment)
        system = {k: v for k, v in everything.items() if k.startswith("$.")}
        custom = {k: v for k, v in everything.items() if not k.startswith("$.")}
        try:
            parsed: Any = json.loads(payload.decode(system.get("$.ce") or "utf-8"))
        except (ValueError, LookupError):
            parsed = None
        with self._cond:
            message = Telemetry(
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
            self._messages.append(message)
            self._last_seq = message.seq
            self._cond.notify_all()
        return message

    def messages(self, predicate: TelemetryPredicate | None = None, after: int = 0) -> list[Telemetry]:
        """The recorded messages above seq `after` that match `predicate`, oldest first."""
        with self._cond:
            return [t for t in self._messages if t.seq > after and (predicate is None or predicate(t))]

    def clear(self) -> None:
        """Forget recorded messages (sequence numbers keep counting)."""
        with self._cond:
            self._messages.clear()

    @property
    def last_seq(self) -> int:
        """Sequence number of the latest message recorded (0 before any)."""
        with self._cond:
            return self._last_seq
