"""Which result records become telemetry events: on change (debounced), every frame, or window aggregates only.

Pure logic with injected clocks and no locking: the caller serialises `offer`, `tick`, `update` and `flush`.
Two clocks: `clock` (wall time) only labels events and aligns windows; `steady` (monotonic) times every interval
(debounce, window ends, heartbeat cadence), so a wall-clock step (NTP fixing a clock that booted at 1970, or going
back) neither pauses nor bunches heartbeats and aggregates. An explicit `now` (simulations) stands for both.

Rules, per source:
- every-frame: every record is a result event; no aggregates.
- on-change (default): a record's *state* is its label set with the count per label. The *dominant* state is the
  one held by the most frames of the last `debounce_s` (ties keep the state last sent). Once the source has
  streamed for `debounce_s`, the dominant state is sent (as its newest record) when it is not the state last sent,
  or when a label's mean top confidence over those frames moved by more than `min_confidence_delta` from the
  record last sent; results leave at most once per `debounce_s`. So a busy scene whose top label flickers still
  reports what it mostly shows, the first result leaves `debounce_s` after the first frame, and a flicker that
  holds under half the window is never sent. A model swap starts over (no result compares two models' states).
- on-change and aggregate: one aggregate per source per window of `aggregate_window_s` (aligned on the UTC epoch)
  with frames analysed and, per label, the total count, the peak in one frame, frames seen and max confidence;
  windows without frames send nothing (the heartbeat says the module is alive). A model swap closes the window
  early and the next one starts at the swap, so no aggregate mixes models.
- all modes: a heartbeat every `heartbeat_s` (the first on the first tick) for the configured source, carrying
  the fields the caller's callback returns (fps, outbox depth, ...), even when nothing changes.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from visionedge.config import TelemetrySettings
from visionedge.result import iso_utc
from visionedge.telemetry.events import Event, LabelState, Sequencer, WindowSummary, label_state

MAX_RECENT: Final = 4096
"""Frames kept per source for the on-change window; a longer debounce at a high frame rate sees the newest ones."""

StateKey = frozenset[tuple[str, int]]
"""Labels with their counts: what on-change compares (confidence is compared separately, as a mean)."""


def state_key(state: LabelState) -> StateKey:
    """The label set with counts of one record's state."""
    return frozenset((label, count) for label, (count, _) in state.items())


@dataclass(frozen=True)
class _Frame:
    """One record in the on-change window."""

    at: float
    key: StateKey
    state: LabelState
    record: Mapping[str, Any]


@dataclass
class _SourceState:
    """What the policy remembers about one source between records."""

    sent: LabelState | None = None
    sent_at: float = -math.inf
    first_at: float = math.inf
    model: Any = None
    recent: deque[_Frame] = field(default_factory=lambda: deque(maxlen=MAX_RECENT))
    window: WindowSummary | None = None
    window_closes: float = math.inf
    """The steady time at which the open window ends."""


class TelemetryPolicy:
    """Turns result records and clock ticks into events; see the module docstring for the exact rules."""

    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        source_id: str,
        sequencer: Sequencer,
        heartbeat_fields: Callable[[], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
        steady: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.source_id = source_id
        self.sequencer = sequencer
        self.heartbeat_fields = heartbeat_fields
        self.clock = clock
        self.steady = steady
        self.model: Any = None
        self._sources: dict[str, _SourceState] = {}
        self._next_heartbeat: float | None = None
        self._last_heartbeat: float | None = None

    def offer(self, record: Mapping[str, Any], now: float | None = None) -> list[Event]:
        """Events caused by one result record: a closed window's aggregate and/or a result."""
        now, steady = self._now(now)
        source_id = str(record.get("source_id") or self.source_id)
        state = self._sources.setdefault(source_id, _SourceState())
        if record.get("model") is not None:
            self.model = record["model"]
        policy = self.settings.policy
        if policy == "every-frame":
            return [self.sequencer.make("result", source_id, record, now)]
        events = self._fold_into_window(source_id, state, record, now, steady)
        if policy == "on-change":
            dominant = self._dominant_change(state, record, steady)
            if dominant is not None:
                events.append(self.sequencer.make("result", source_id, dominant, now))
        return events

    def tick(self, now: float | None = None) -> list[Event]:
        """Aggregates of windows that have closed and the heartbeat when it is due."""
        now, steady = self._now(now)
        events = [self._close(sid, st, None) for sid, st in self._sources.items()
                  if st.window is not None and steady >= st.window_closes]
        if self._next_heartbeat is None or steady >= self._next_heartbeat:
            events.append(self._heartbeat(now, steady))
        return events

    def flush(self, now: float | None = None) -> list[Event]:
        """Aggregates of every open window, cut short at `now` (shutdown, settings change)."""
        now, _ = self._now(now)
        return [self._close(sid, st, now) for sid, st in self._sources.items() if st.window is not None]

    def event(self, name: str, fields: Mapping[str, Any], now: float | None = None,
              source_id: str | None = None) -> Event:
        """A state-change event (model swap, rollback, dropped telemetry) on the events output."""
        now, _ = self._now(now)
        body = {"event": name, "timestamp": iso_utc(now), **fields}
        return self.sequencer.make("event", source_id or self.source_id, body, now)

    def update(self, settings: TelemetrySettings, now: float | None = None) -> list[Event]:
        """Apply new settings; open windows close early when the window or policy changes, so none is mixed."""
        old, self.settings = self.settings, settings
        events: list[Event] = []
        if old.aggregate_window_s != settings.aggregate_window_s or old.policy != settings.policy:
            events = self.flush(now)
        for state in self._sources.values():
            state.recent.clear()
            state.first_at = math.inf
        if old.heartbeat_s != settings.heartbeat_s and self._last_heartbeat is not None:
            self._next_heartbeat = self._last_heartbeat + settings.heartbeat_s
        return events

    def _now(self, now: float | None) -> tuple[float, float]:
        """(wall, steady) time now; an explicit `now` stands for both."""
        return (now, now) if now is not None else (self.clock(), self.steady())

    def _fold_into_window(self, source_id: str, state: _SourceState, record: Mapping[str, Any],
                          now: float, steady: float) -> list[Event]:
        """Add the record to its source's window, first closing the window if its (steady) end has passed."""
        events = []
        if state.window is not None and steady >= state.window_closes:
            events.append(self._close(source_id, state, None))
        start = None
        if state.window is not None and state.window.frames and record.get("model") != state.window.model:
            start = now
            events.append(self._close(source_id, state, now))
        if state.window is None:
            state.window = WindowSummary.containing(now, self.settings.aggregate_window_s, since=start)
            state.window_closes = steady + state.window.end - now
        state.window.add(record)
        return events

    def _close(self, source_id: str, state: _SourceState, until: float | None) -> Event:
        """The aggregate of the source's open window, which is then forgotten."""
        window, state.window = state.window, None
        assert window is not None
        fields = window.fields(until)
        return self.sequencer.make("aggregate", source_id, fields, window.start + fields["window_s"])

    def _dominant_change(self, state: _SourceState, record: Mapping[str, Any],
                         now: float) -> Mapping[str, Any] | None:
        """The record to send now under on-change (the dominant state's newest), or None; see the module docstring."""
        debounce = self.settings.debounce_s
        model = record.get("model")
        if model != state.model or state.first_at == math.inf:
            state.model, state.sent, state.first_at = model, None, now
            state.recent.clear()
        current = label_state(record)
        state.recent.append(_Frame(now, state_key(current), current, record))
        while len(state.recent) > 1 and state.recent[0].at <= now - debounce:
            state.recent.popleft()
        held: dict[StateKey, list[_Frame]] = {}
        for frame in state.recent:
            held.setdefault(frame.key, []).append(frame)
        sent_key = None if state.sent is None else state_key(state.sent)
        key = max(held, key=lambda k: (len(held[k]), k == sent_key, held[k][-1].at))
        if now - state.sent_at < debounce or now - state.first_at < debounce:
            return None
        frames = held[key]
        if key == sent_key and state.sent is not None:
            delta = self.settings.min_confidence_delta
            means = {label: sum(f.state[label][1] for f in frames) / len(frames) for label, _ in key}
            if all(abs(means[label] - state.sent[label][1]) <= delta for label in means):
                return None
        newest = frames[-1]
        state.sent, state.sent_at = newest.state, now
        return newest.record

    def _heartbeat(self, now: float, steady: float) -> Event:
        """The heartbeat, scheduling the next one on the fixed (steady) cadence, or from now after a stall."""
        period = self.settings.heartbeat_s
        self._last_heartbeat = steady
        due = steady if self._next_heartbeat is None else self._next_heartbeat
        self._next_heartbeat = due + period if due + period > steady else steady + period
        fields: dict[str, Any] = {"timestamp": iso_utc(now), "policy": self.settings.policy, "model": self.model}
        if self.heartbeat_fields is not None:
            fields.update(self.heartbeat_fields())
        return self.sequencer.make("heartbeat", self.source_id, fields, now)
