"""IoT Hub's billing units: packing small events into batch messages, and the persisted daily budget.

IoT Hub counts a device-to-cloud message in 4 KB units on the basic and standard tiers and in 0.5 KB units on the
free tier (body plus properties), and each tier caps those units per day (8,000 on the free tier). So:
- `pack` groups consecutive events of one output, source and model into `{"type": "batch", "events": [...]}`
  messages (so the `model` property names every record in the message) of
  at most 4 KB including application properties (one unit on basic/standard); an event that is alone, or bigger
  than that, goes on its own as its plain body; nothing may exceed 256 KB, so a bigger event is returned as
  oversize (to discard).
  Each batched event carries its own `message_id` (and seq), so consumers can deduplicate inside batches.
- `DailyBudget` counts units (what IoT Hub bills) and messages sent per UTC day, persisted through a `MetaStore`
  (the outbox) so a restart does not reset it; a day only ever rolls forward, so a clock set back cannot re-grant
  a spent budget. When the budget is spent the sender stops; events stay in the
  outbox. Heartbeats have a reserve (`heartbeat_reserve`: one day of heartbeats, at most a tenth of the budget) that
  other events cannot use, so liveness survives a burst of results; scene alarms have one too (`ALARM_SHARE` of the
  budget, when any line or zone raises alarms) that results, aggregates and counts cannot use, so when the budget
  runs out counts wait before alarms do; nothing ever goes beyond the budget.
- Scene alarms and counts always travel alone (never batched), so IoT Hub routing can split them by their `type`
  application property (`alarm`, `counts`) without reading bodies; an alarm also carries `alarm` (crossing,
  forbidden, dwell, enter), `geometry` (the line or zone) and `class`.
- `fold_factor` says how many times longer scene count windows should be while the day's spending runs ahead of the
  day, so counts cost fewer messages before anything has to wait.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from visionedge.result import SCHEMA_VERSION
from visionedge.telemetry.events import dumps
from visionedge.telemetry.outbox import OutboxItem

UNIT_BYTES: Final = 4096
"""IoT Hub's basic and standard tiers bill device-to-cloud traffic in 4 KB units."""
FREE_TIER_UNIT_BYTES: Final = 512
"""The free tier meters in 0.5 KB units."""
BATCH_BYTES: Final = 4096
"""The most a batch of several events may weigh, properties included."""
MAX_MESSAGE_BYTES: Final = 256 * 1024
"""IoT Hub (and the SDK, client-side) refuse bigger messages."""
DAY_S: Final = 86400.0
ALARM_SHARE: Final = 0.05
"""Share of the daily budget kept for scene alarms: 400 of the free tier's 8,000 messages."""
ALONE: Final = frozenset({"alarm", "counts"})
"""Event kinds that always go as their own message, so routing sees their type on the message."""


def properties_size(properties: Mapping[str, str]) -> int:
    """Bytes the application properties add to a message's billed size."""
    return sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in properties.items())


def units(size: int, unit_bytes: int = UNIT_BYTES) -> int:
    """Units billed for a message of `size` bytes; even an empty message costs one."""
    return max(1, math.ceil(size / unit_bytes))


def properties_for(body: Mapping[str, Any], kind: str) -> dict[str, str]:
    """Application properties (strings) that routes can filter on: schema version, model, source, event type."""
    model = body.get("model")
    name = model.get("name") if isinstance(model, Mapping) else model
    properties = {
        "schema_version": str(body.get("schema_version", SCHEMA_VERSION)),
        "model": "" if name is None else str(name),
        "source_id": str(body.get("source_id", "")),
        "type": kind,
    }
    if kind == "alarm":
        properties.update(alarm=str(body.get("alarm", "")), geometry=str(body.get("line") or body.get("zone") or ""),
                          **{"class": str(body.get("label", ""))})
    return properties


@dataclass(frozen=True)
class Message:
    """One message to send: payload plus what the sender needs to acknowledge and account for it."""

    output: str
    payload: bytes
    message_id: str
    properties: dict[str, str]
    row_ids: tuple[int, ...]
    kind: str
    events: int
    unit_bytes: int = UNIT_BYTES

    @property
    def size(self) -> int:
        """Billed size: body plus application properties."""
        return len(self.payload) + properties_size(self.properties)

    @property
    def units(self) -> int:
        """Billing units this message costs."""
        return units(self.size, self.unit_bytes)


@dataclass
class _Open:
    """A batch being filled."""

    items: list[OutboxItem] = field(default_factory=list)
    entries: list[bytes] = field(default_factory=list)
    size: int = 0
    """Bytes of the batch message so far, envelope and properties included."""
    cost: int = 0
    """Units of the message these items would make now (a lone item goes as its plain self)."""


def pack(items: Sequence[OutboxItem], *, batch: bool,
         unit_bytes: int = UNIT_BYTES) -> tuple[list[Message], list[OutboxItem]]:
    """Messages in the order of their first event, and the events too big to send at all.

    An event joins its output's and source's open batch only if the batch stays within BATCH_BYTES and costs no
    more units than sending the event on its own, so batching never costs more than not batching.
    """
    messages: list[tuple[int, Message]] = []
    oversize: list[OutboxItem] = []
    open_batches: dict[tuple[str, str, str], tuple[int, _Open]] = {}

    def close(key: tuple[str, str, str]) -> None:
        """Turn the open batch for `key` into a message."""
        position, current = open_batches.pop(key)
        message = _batch_message(current) if len(current.items) > 1 else _single(current.items[0])
        messages.append((position, replace(message, unit_bytes=unit_bytes)))

    for position, item in enumerate(items):
        event = item.event
        if item.size > MAX_MESSAGE_BYTES - properties_size(properties_for(event.body, event.kind)):
            oversize.append(item)
            continue
        if not batch or event.kind in ALONE:
            messages.append((position, replace(_single(item), unit_bytes=unit_bytes)))
            continue
        key = (event.output, event.source_id, dumps(event.body.get("model")).decode("utf-8"))
        entry = dumps({**event.body, "message_id": event.message_id})
        alone = units(item.size + properties_size(properties_for(event.body, event.kind)), unit_bytes)
        if key in open_batches:
            _, current = open_batches[key]
            grown = current.size + 1 + len(entry)
            if grown <= BATCH_BYTES and units(grown, unit_bytes) <= current.cost + alone:
                current.size, current.cost = grown, units(grown, unit_bytes)
                current.items.append(item)
                current.entries.append(entry)
                continue
            close(key)
        first = _Open([item], [entry], cost=alone)
        first.size = len(_envelope(event.source_id, event.seq, [entry])) + properties_size(
            properties_for(event.body, "batch"))
        open_batches[key] = (position, first)
    for key in list(open_batches):
        close(key)
    messages.sort(key=lambda pair: pair[0])
    return [m for _, m in messages], oversize


def _single(item: OutboxItem) -> Message:
    """One event as its own message: its plain body and its own message id."""
    event = item.event
    return Message(event.output, event.payload(), event.message_id, properties_for(event.body, event.kind),
                   (item.row_id,), event.kind, 1)


def _batch_message(current: _Open) -> Message:
    """Several events as one batch message, its id derived from the first event's so a retry repeats it."""
    first = current.items[0].event
    payload = _envelope(first.source_id, first.seq, current.entries)
    return Message(first.output, payload, f"{first.message_id}+{len(current.items)}",
                   properties_for(first.body, "batch"), tuple(i.row_id for i in current.items), first.kind,
                   len(current.items))


def _envelope(source_id: str, seq: int, entries: list[bytes]) -> bytes:
    """The batch body, built by hand so its size is known exactly while it is filled."""
    head = dumps({"type": "batch", "source_id": source_id, "seq": seq, "schema_version": SCHEMA_VERSION})
    return head[:-1] + b',"events":[' + b",".join(entries) + b"]}"


class MetaStore(Protocol):
    """Where the budget persists its day and usage (the outbox implements it)."""

    def get_meta(self, key: str) -> str | None:
        """A stored value, or None."""

    def set_meta(self, values: Mapping[str, str]) -> None:
        """Store values atomically."""


def fold_factor(stats: BudgetStats, seconds_to_reset: float, cap: int = 64) -> int:
    """How many times longer count windows should be now: 1 while the units left last the rest of the UTC day at the
    rate spent so far; else the power of two (at most `cap`) that brings the rate down to what is left."""
    if stats.budget_remaining is None or not stats.units_used_today:
        return 1
    elapsed = max(1.0, DAY_S - seconds_to_reset)
    needed = stats.units_used_today / elapsed * seconds_to_reset
    if needed <= stats.budget_remaining:
        return 1
    ratio = needed / max(1, stats.budget_remaining)
    return min(cap, 1 << math.ceil(math.log2(ratio)))


def alarm_reserve(limit: int) -> int:
    """Units kept for scene alarms, which results, aggregates and counts cannot use."""
    return math.floor(limit * ALARM_SHARE)


def heartbeat_reserve(limit: int, heartbeat_s: float) -> int:
    """Units kept for heartbeats: a day of them, but never more than a tenth of the budget."""
    return min(math.ceil(DAY_S / heartbeat_s), limit // 10) if limit else 0


@dataclass(frozen=True)
class BudgetStats:
    """Today's usage, for heartbeats, metrics and the reported twin."""

    day: str
    limit: int
    messages_sent_today: int
    units_used_today: int
    budget_remaining: int | None


class DailyBudget:
    """Units and messages sent per UTC day against a limit (0 = unlimited), persisted so restarts do not reset it."""

    def __init__(self, limit: int, store: MetaStore, *, reserve: int = 0, alarms: int = 0,
                 unit_bytes: int = UNIT_BYTES, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.unit_bytes = unit_bytes
        self.reserve = reserve
        self.alarms = alarms
        """Units kept for scene alarms (`alarm_reserve`, when any line or zone raises alarms; else 0)."""
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._day = store.get_meta("budget.day") or self._today()
        self._messages = int(store.get_meta("budget.messages") or 0)
        self._units = int(store.get_meta("budget.units") or 0)

    def allows(self, cost: int, *, heartbeat: bool, alarm: bool = False) -> bool:
        """Whether a message of `cost` units may go now; other events may not eat into the heartbeat reserve, nor
        events other than alarms into the alarm reserve."""
        with self._lock:
            self._roll()
            if not self.limit:
                return True
            ceiling = self.limit if heartbeat else self.limit - self.reserve - (0 if alarm else self.alarms)
            return self._units + cost <= ceiling

    def record(self, cost: int) -> None:
        """Count one sent message of `cost` units, persisted at once."""
        self.store.set_meta(self.charge(cost))

    def charge(self, cost: int) -> dict[str, str]:
        """Count one sent message and return the values to persist; the sender commits them with the ack."""
        with self._lock:
            self._roll()
            self._messages += 1
            self._units += cost
            return self._values()

    def update(self, limit: int, reserve: int, alarms: int | None = None) -> None:
        """New limit from the twin (and alarm reserve, when given); today's usage is kept."""
        self.limit, self.reserve = limit, reserve
        if alarms is not None:
            self.alarms = alarms

    def seconds_to_reset(self) -> float:
        """Time until the next UTC midnight, when the budget starts again."""
        now = self.clock()
        midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight + timedelta(days=1)).timestamp() - now

    def stats(self) -> BudgetStats:
        """Usage today and what is left (None when unlimited)."""
        with self._lock:
            self._roll()
            remaining = max(0, self.limit - self._units) if self.limit else None
            return BudgetStats(self._day, self.limit, self._messages, self._units, remaining)

    def _today(self) -> str:
        """The current UTC date, ISO formatted."""
        return datetime.fromtimestamp(self.clock(), UTC).date().isoformat()

    def _roll(self) -> None:
        """Start a new day's count after UTC midnight; a wall clock set back to an earlier day re-grants nothing."""
        today = self._today()
        if today > self._day:
            self._day, self._messages, self._units = today, 0, 0
            self._save()

    def _save(self) -> None:
        """Persist day and usage (caller holds the lock)."""
        self.store.set_meta(self._values())

    def _values(self) -> dict[str, str]:
        """Day and usage as meta values."""
        return {"budget.day": self._day, "budget.messages": str(self._messages), "budget.units": str(self._units)}
