"""What leaves the device from the scene analytics: count windows, alarms, and the running totals behind every view.

Pure logic with injected clocks, like `policy.py`: the caller (`TelemetrySink`) serialises `offer`, `tick`, `flush`
and `reset`, and stores what they return in the outbox.

- *Counts*: one `counts` event per source per window (`SceneLayout.window_s`, else `telemetry.aggregate_window_s`,
  aligned on the UTC epoch and multiplied by `fold` while the message budget runs low): crossings per line,
  direction and class; per zone and class the occupancy (min, mean over frames, max, at the window's end), entries
  and exits; per zone the dwell p50 / p95 / max of the tracks that left in the window. A window never mixes two
  models or two geometries: a change closes it at the frame that brings the change and the next starts there.
  Windows without frames send nothing.
- *Alarms*: every crossing of an alarm line and every alarm zone event (forbidden class, dwell over max_dwell_s,
  entry into an alarm zone) is one `alarm` event at once, with the track id, class, time and geometry name.
- The open window and the totals are handed back as `state` with every change of a count, for the caller to persist
  in the same commit as the events, so a kill -9 loses no count; `restore` takes them back after a restart.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from visionedge.analytics.events import Crossing, SceneFrame, ZoneEvent
from visionedge.result import iso_utc
from visionedge.telemetry.events import Event, Sequencer, window_span

MAX_CLASSES: Final = 16
"""Classes kept apart per line or zone; any further class is counted as OTHER, so labels stay bounded."""
OTHER: Final = "other"
DWELL_BUCKETS_S: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Upper bounds of the dwell histogram (metrics): from a walk past to a long stay."""
CLOSE_GRACE_S: Final = 2.0
"""A window closes on a frame stamped at or past its end, or this long after its end on the steady clock (no frames
came): frames are stamped at capture, and an ordered source's queue may hand on older frames after the end."""
MAX_FOLD: Final = 64
"""The longest a count window grows while the budget runs low: 64 x the configured window (at most a day)."""


@dataclass(frozen=True)
class LineSpec:
    """One configured line as the output side needs it: its direction names, class filter and alarm switch."""

    name: str
    directions: tuple[str, str] = ("in", "out")
    classes: tuple[str, ...] = ()
    alarm: bool = False


@dataclass(frozen=True)
class ZoneSpec:
    """One configured zone as the output side needs it."""

    name: str
    classes: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    max_dwell_s: float | None = None
    alarm: bool = False


@dataclass(frozen=True)
class SceneLayout:
    """A source's lines and zones (names, directions, classes) and its count window; None = the telemetry one."""

    source_id: str
    lines: tuple[LineSpec, ...] = ()
    zones: tuple[ZoneSpec, ...] = ()
    window_s: float | None = None

    @property
    def alarms(self) -> bool:
        """Whether any line or zone raises alarms (the budget then keeps a reserve for them)."""
        return any(x.alarm for x in self.lines) or any(x.alarm or x.forbidden or x.max_dwell_s for x in self.zones)

    def classes(self, name: str) -> tuple[str, ...]:
        """The classes configured for a line or zone (empty: any class the model gives, bounded by MAX_CLASSES)."""
        for line in self.lines:
            if line.name == name:
                return line.classes
        for zone in self.zones:
            if zone.name == name:
                return zone.classes + zone.forbidden if zone.classes else ()
        return ()


def layout_of(source_id: str, section: Mapping[str, Any] | None) -> SceneLayout:
    """A layout from one source's `analytics` section as plain data (`model_dump()`); unknown keys are ignored."""
    section = section or {}

    def names(value: Any) -> tuple[str, ...]:
        return tuple(str(v) for v in value or ())

    lines = tuple(LineSpec(str(x["name"]), tuple(names(x.get("directions")) or ("in", "out")),  # type: ignore[arg-type]
                           names(x.get("classes")), bool(x.get("alarm", False)))
                  for x in section.get("lines") or ())
    zones = tuple(ZoneSpec(str(x["name"]), names(x.get("classes")), names(x.get("forbidden")),
                           None if x.get("max_dwell_s") is None else float(x["max_dwell_s"]),
                           bool(x.get("alarm", False)))
                  for x in section.get("zones") or ())
    window = section.get("window_s")
    return SceneLayout(source_id, lines, zones, None if window is None else float(window))


def layouts_of(analytics: Mapping[str, Any]) -> list[SceneLayout]:
    """Every source's layout from the `analytics` section (settings models or plain data)."""
    return [layout_of(sid, section.model_dump() if hasattr(section, "model_dump") else section)
            for sid, section in analytics.items()]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation of sorted values; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


@dataclass
class Occupancy:
    """One zone and class over a window: least, most, sum over frames (for the mean) and the value at the end."""

    low: int
    high: int
    total: int
    last: int

    def add(self, n: int) -> None:
        """One more frame."""
        self.low, self.high, self.total, self.last = min(self.low, n), max(self.high, n), self.total + n, n


@dataclass
class CountWindow:
    """One source's open count window; plain data so it can be persisted and restored as JSON."""

    start: float
    window_s: float
    model: str
    geometry: str
    frames: int = 0
    lines: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """line -> direction -> class -> crossings."""
    occupancy: dict[str, dict[str, Occupancy]] = field(default_factory=dict)
    entries: dict[str, dict[str, int]] = field(default_factory=dict)
    exits: dict[str, dict[str, int]] = field(default_factory=dict)
    dwells: dict[str, list[float]] = field(default_factory=dict)

    @property
    def end(self) -> float:
        """When the window closes (wall time)."""
        return self.start + self.window_s

    def add_frame(self, occupancy: Mapping[str, Mapping[str, int]]) -> None:
        """Fold one frame's occupancy in; a class not seen in this frame had none inside."""
        for zone, classes in occupancy.items():
            known = self.occupancy.setdefault(zone, {})
            for label, n in classes.items():
                if label not in known:
                    known[label] = Occupancy(0 if self.frames else n, 0, 0, 0)
            for label, stats in known.items():
                stats.add(int(classes.get(label, 0)))
        self.frames += 1

    def fields(self, until: float | None = None) -> dict[str, Any]:
        """The counts body fields; `until` ends the window early (a change, shutdown), never before it began."""
        zones: dict[str, Any] = {}
        for zone in sorted({*self.occupancy, *self.entries, *self.exits, *self.dwells}):
            occupancy = self.occupancy.get(zone, {})
            dwells = self.dwells.get(zone, [])
            zones[zone] = {
                "occupancy": {label: [o.low, round(o.total / max(1, self.frames), 3), o.high, o.last]
                              for label, o in sorted(occupancy.items())},
                "entries": dict(sorted(self.entries.get(zone, {}).items())),
                "exits": dict(sorted(self.exits.get(zone, {}).items())),
                "dwell_s": [round(percentile(dwells, 0.5), 2), round(percentile(dwells, 0.95), 2),
                            round(max(dwells, default=0.0), 2), len(dwells)],
            }
        return {
            **window_span(self.start, self.end, until),
            "model": self.model,
            "geometry": self.geometry,
            "frames": self.frames,
            "lines": {line: {d: dict(sorted(c.items())) for d, c in sorted(dirs.items())}
                      for line, dirs in sorted(self.lines.items())},
            "zones": zones,
        }

    def dump(self) -> dict[str, Any]:
        """JSON-able state, for persisting the open window."""
        return {"start": self.start, "window_s": self.window_s, "model": self.model, "geometry": self.geometry,
                "frames": self.frames, "lines": self.lines, "entries": self.entries, "exits": self.exits,
                "dwells": self.dwells,
                "occupancy": {z: {c: [o.low, o.high, o.total, o.last] for c, o in cs.items()}
                              for z, cs in self.occupancy.items()}}

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> CountWindow:
        """The window `dump` wrote."""
        window = cls(float(data["start"]), float(data["window_s"]), str(data["model"]), str(data["geometry"]),
                     int(data["frames"]), data["lines"], {}, data["entries"], data["exits"], data["dwells"])
        window.occupancy = {z: {c: Occupancy(*map(int, v)) for c, v in cs.items()}
                            for z, cs in data["occupancy"].items()}
        return window


@dataclass
class SceneTotals:
    """One source's running figures since the last reset: what the status, metrics and local MQTT show."""

    lines: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """line -> direction -> class -> crossings since the last reset."""
    occupancy: dict[str, dict[str, int]] = field(default_factory=dict)
    """zone -> class -> inside now (the last frame)."""
    entries: dict[str, dict[str, int]] = field(default_factory=dict)
    exits: dict[str, dict[str, int]] = field(default_factory=dict)
    dwell: dict[str, list[float]] = field(default_factory=dict)
    """zone -> [count per DWELL_BUCKETS_S bucket (cumulative le), ..., +Inf count, sum]."""

    def dump(self) -> dict[str, Any]:
        """JSON-able (occupancy is not kept: it is re-read from the next frame)."""
        return {"lines": self.lines, "entries": self.entries, "exits": self.exits, "dwell": self.dwell}

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> SceneTotals:
        """The totals `dump` wrote."""
        return cls(data["lines"], {}, data["entries"], data["exits"], data["dwell"])

    def observe_dwell(self, zone: str, seconds: float) -> None:
        """Add one finished stay to the zone's histogram."""
        buckets = self.dwell.setdefault(zone, [0.0] * (len(DWELL_BUCKETS_S) + 2))
        for i, bound in enumerate(DWELL_BUCKETS_S):
            if seconds <= bound:
                buckets[i] += 1
        buckets[-2] += 1
        buckets[-1] += seconds


def _known(tables: Iterable[Mapping[str, int]]) -> set[str]:
    """The labels already counted for one line or zone."""
    return {label for table in tables for label in table}


def _bump(table: dict[str, dict[str, int]], key: str, label: str) -> None:
    """Add one to table[key][label]."""
    inner = table.setdefault(key, {})
    inner[label] = inner.get(label, 0) + 1


@dataclass
class _Source:
    """What the output side remembers per source."""

    window: CountWindow | None = None
    closes: float = math.inf
    """The steady time at which the open window ends."""
    totals: SceneTotals = field(default_factory=SceneTotals)


class SceneOutput:
    """Turns SceneFrames and clock ticks into counts and alarm events; see the module docstring for the rules."""

    def __init__(self, window_s: float, *, sequencer: Sequencer, layouts: Iterable[SceneLayout] = (),
                 clock: Callable[[], float] = time.time, steady: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.sequencer = sequencer
        self.clock = clock
        self.steady = steady
        self.fold = 1
        """Windows are this many times longer while the message budget runs low (set by the sink)."""
        self.layouts: dict[str, SceneLayout] = {x.source_id: x for x in layouts}
        self._sources: dict[str, _Source] = {}

    def offer(self, frame: SceneFrame) -> list[Event]:
        """The alarms of one frame, and the counts of a window this frame closed (by time or by a change)."""
        steady = self.steady()
        now = frame.timestamp
        state = self._sources.setdefault(frame.source_id, _Source())
        events: list[Event] = []
        window = state.window
        since = None
        if window is not None and (steady >= state.closes or now >= window.end):
            events.append(self._close(frame.source_id, state, None))
        elif window is not None and (window.model, window.geometry) != (frame.model, frame.geometry):
            events.append(self._close(frame.source_id, state, now))
            since = now
        if state.window is None:
            state.window = self._open(frame, now, since)
            state.closes = steady + state.window.end - now + CLOSE_GRACE_S
        layout = self.layouts.get(frame.source_id)
        occupancy = {zone: self._bounded(layout, zone, classes) for zone, classes in frame.occupancy.items()}
        state.window.add_frame(occupancy)
        state.totals.occupancy = {  # configured classes always (zero included), others while inside
            zone: {**dict.fromkeys(layout.classes(zone) if layout is not None else (), 0),
                   **{c: n for c, n in classes.items() if n}} for zone, classes in occupancy.items()}
        for item in frame.events:
            self._count(layout, state, item)
            if item.alarm:
                events.append(self._alarm(item, frame))
        return events

    def tick(self, now: float | None = None) -> list[Event]:
        """Counts of windows whose end has passed (on the steady clock)."""
        steady = self.steady() if now is None else now
        return [self._close(sid, st, None) for sid, st in self._sources.items()
                if st.window is not None and steady >= st.closes]

    def flush(self, now: float | None = None) -> list[Event]:
        """Counts of every open window, cut short at `now` (shutdown, a change of settings)."""
        wall = self.clock() if now is None else now
        return [self._close(sid, st, wall) for sid, st in self._sources.items() if st.window is not None]

    def totals(self) -> dict[str, SceneTotals]:
        """Per configured source, the running figures (the live objects: read them under the caller's lock)."""
        return {sid: st.totals for sid, st in self._sources.items() if sid in self.layouts}

    def reset(self, source_id: str, name: str) -> dict[str, Any] | None:
        """Zero a line's or zone's totals; returns what they were (for the acknowledgement), None if unknown."""
        layout = self.layouts.get(source_id) or SceneLayout(source_id)
        totals = self._sources.setdefault(source_id, _Source()).totals
        if name in totals.lines or any(x.name == name for x in layout.lines):
            return {"kind": "line", "before": totals.lines.pop(name, {})}
        if any(name in t for t in (totals.entries, totals.exits, totals.dwell, totals.occupancy)) or \
                any(x.name == name for x in layout.zones):
            totals.dwell.pop(name, None)
            return {"kind": "zone", "before": {"entries": totals.entries.pop(name, {}),
                                               "exits": totals.exits.pop(name, {})}}
        return None

    def set_layouts(self, layouts: Iterable[SceneLayout]) -> None:
        """New geometry: a configured source forgets the totals of its lines and zones no longer configured (an open
        window does not: it closes with what it counted). A source without a layout keeps its totals (a module
        starts on its saved settings before the twin's) but no view shows them (`totals`)."""
        self.layouts = {x.source_id: x for x in layouts}
        for sid, state in self._sources.items():
            layout = self.layouts.get(sid)
            if layout is None:
                continue
            lines, zones = {x.name for x in layout.lines}, {x.name for x in layout.zones}
            totals = state.totals
            totals.lines = {k: v for k, v in totals.lines.items() if k in lines}
            for table in (totals.occupancy, totals.entries, totals.exits, totals.dwell):
                for name in [k for k in table if k not in zones]:
                    del table[name]

    def state(self) -> dict[str, str]:
        """The open windows and totals as meta values, for the caller to persist with the events."""
        return {f"scene.{sid}": json.dumps({"window": None if st.window is None else st.window.dump(),
                                            "totals": st.totals.dump()}, separators=(",", ":"))
                for sid, st in self._sources.items()}

    def restore(self, values: Mapping[str, str]) -> None:
        """Take back what `state` persisted (after a restart); a window that ended meanwhile closes on the next tick."""
        wall, steady = self.clock(), self.steady()
        for key, text in values.items():
            data = json.loads(text)
            state = _Source(totals=SceneTotals.load(data["totals"]))
            if data["window"] is not None:
                state.window = CountWindow.load(data["window"])
                state.closes = steady + state.window.end - wall + CLOSE_GRACE_S
            self._sources[key.removeprefix("scene.")] = state

    def _open(self, frame: SceneFrame, now: float, since: float | None) -> CountWindow:
        """The window aligned on the epoch holding `now` (or starting at `since` after a change, same end)."""
        layout = self.layouts.get(frame.source_id)
        base = layout.window_s if layout is not None and layout.window_s else self.window_s
        length = min(base * self.fold, 86400.0)
        start = math.floor(now / length) * length
        if since is not None:
            return CountWindow(since, start + length - since, frame.model, frame.geometry)
        return CountWindow(start, length, frame.model, frame.geometry)

    def _close(self, source_id: str, state: _Source, until: float | None) -> Event:
        """The counts event of the source's open window, which is then forgotten."""
        window, state.window = state.window, None
        state.closes = math.inf
        assert window is not None
        fields = window.fields(until)
        return self.sequencer.make("counts", source_id, fields, window.start + fields["window_s"])

    def _count(self, layout: SceneLayout | None, state: _Source, item: Crossing | ZoneEvent) -> None:
        """Add one crossing or zone event to the open window and to the totals."""
        window, totals = state.window, state.totals
        assert window is not None
        if isinstance(item, Crossing):
            label = self._label(layout, item.line, item.label, _known(totals.lines.get(item.line, {}).values()))
            for table in (window.lines, totals.lines):
                _bump(table.setdefault(item.line, {}), item.direction, label)
            return
        label = self._label(layout, item.zone, item.label,
                            _known(t.get(item.zone, {}) for t in (totals.entries, totals.exits)))
        if item.kind == "enter":
            _bump(window.entries, item.zone, label)
            _bump(totals.entries, item.zone, label)
        elif item.kind == "exit":
            _bump(window.exits, item.zone, label)
            _bump(totals.exits, item.zone, label)
            if item.dwell_s is not None:
                window.dwells.setdefault(item.zone, []).append(round(item.dwell_s, 3))
                totals.observe_dwell(item.zone, item.dwell_s)

    def _alarm(self, item: Crossing | ZoneEvent, frame: SceneFrame) -> Event:
        """One alarm event: what happened, where, to which track, when."""
        fields: dict[str, Any] = {"timestamp": iso_utc(item.timestamp)}
        if isinstance(item, Crossing):
            fields.update(alarm="crossing", line=item.line, direction=item.direction)
        else:
            fields.update(alarm=item.kind, zone=item.zone)
            if item.dwell_s is not None:
                fields["dwell_s"] = round(item.dwell_s, 2)
        fields.update(label=item.label, track_id=item.track_id, model=frame.model, geometry=frame.geometry)
        return self.sequencer.make("alarm", item.source_id, fields, item.timestamp)

    def _bounded(self, layout: SceneLayout | None, name: str, classes: Mapping[str, int]) -> dict[str, int]:
        """A zone's per-class figures with labels bounded (see `_label`), summed where labels fold together."""
        out: dict[str, int] = {}
        for label, n in classes.items():
            key = self._label(layout, name, label, out)
            out[key] = out.get(key, 0) + int(n)
        return out

    @staticmethod
    def _label(layout: SceneLayout | None, name: str, label: str, seen: Collection[str] | None = None) -> str:
        """The label as counted: itself when configured for the geometry (or when none are and fewer than
        MAX_CLASSES are known), else OTHER, so a model with many classes cannot grow the labels without bound."""
        configured = layout.classes(name) if layout is not None else ()
        if configured:
            return label if label in configured else OTHER
        if seen is not None and label not in seen and len(seen) >= MAX_CLASSES:
            return OTHER
        return label
