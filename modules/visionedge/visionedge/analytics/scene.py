"""Lines and zones over tracks: crossings with hysteresis, zone entries, exits, dwell and alarms.

They say what happened; the running counts are kept once, by the telemetry side (`telemetry/scene.py`'s SceneTotals),
which persists them with the events that carry them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from visionedge.analytics.events import AnalyticsEvent, Crossing, ZoneEvent, ZoneEventKind
from visionedge.analytics.geometry import Point, Polygon, crossing_param
from visionedge.analytics.settings import LineSettings, ZoneSettings


@dataclass(frozen=True, slots=True)
class Seen:
    """One confirmed track in one frame: where its anchor is and what it is."""

    track_id: int
    label: str
    anchor: Point


@dataclass
class LineCounter:
    """One line: each track's last side, taken only once its anchor is `hysteresis` past the line."""

    settings: LineSettings
    source_id: str
    _sides: dict[int, tuple[int, Point]] = field(default_factory=dict)

    def see(self, tracks: Sequence[Seen], xy: np.ndarray, now: float) -> list[Crossing]:
        """Follow this frame's tracks (anchors as rows of xy); a Crossing for each that went from one settled side
        to the other within the segment."""
        s = self.settings
        (ax, ay), (bx, by) = s.points
        distance = ((bx - ax) * (xy[:, 1] - ay) - (by - ay) * (xy[:, 0] - ax)) / math.hypot(bx - ax, by - ay)
        crossings = []
        for track, d in zip(tracks, distance.tolist(), strict=True):
            if abs(d) < s.hysteresis or d == 0 or (s.classes is not None and track.label not in s.classes):
                continue
            now_side = 1 if d > 0 else -1
            before = self._sides.get(track.track_id)
            self._sides[track.track_id] = (now_side, track.anchor)
            if before is None or before[0] == now_side:
                continue
            u = crossing_param(s.points[0], s.points[1], before[1], track.anchor)
            if u is None or not 0.0 <= u <= 1.0:
                continue
            direction = s.directions[0] if now_side > 0 else s.directions[1]
            crossings.append(Crossing(self.source_id, s.name, direction, track.label, track.track_id, now, s.alarm))
        return crossings

    def followed(self) -> set[int]:
        """Tracks whose side this line remembers."""
        return set(self._sides)

    def forget(self, track_id: int) -> None:
        """The track ended."""
        self._sides.pop(track_id, None)


@dataclass
class Stay:
    """A track inside a zone: since when, as what, and whether its long stay was already reported."""

    since: float
    label: str
    last_seen: float
    dwell_reported: bool = False


@dataclass
class ZoneWatch:
    """One zone: who is inside now, their entries, exits, dwell and alarms."""

    settings: ZoneSettings
    source_id: str
    inside: dict[int, Stay] = field(default_factory=dict)
    polygon: Polygon = field(init=False)

    def __post_init__(self) -> None:
        self.polygon = Polygon(self.settings.points)

    def watches(self, label: str) -> bool:
        """Labels this zone follows: its classes (all when unset) and its forbidden ones."""
        s = self.settings
        return s.classes is None or label in s.classes or label in s.forbidden

    def see(self, tracks: Sequence[Seen], xy: np.ndarray, now: float) -> list[ZoneEvent]:
        """Follow this frame's tracks: enter and exit once the anchor is `hysteresis` past the edge, then alarms."""
        s = self.settings
        if not tracks:
            return []
        inside = self.polygon.contains(xy).tolist()
        settled = (self.polygon.distance_to_boundary(xy) >= s.hysteresis).tolist()
        events: list[ZoneEvent] = []
        for track, is_in, firm in zip(tracks, inside, settled, strict=True):
            if not self.watches(track.label):
                continue
            stay = self.inside.get(track.track_id)
            if stay is None and is_in and firm:
                stay = self.inside[track.track_id] = Stay(now, track.label, now)
                events.append(self._event("enter", stay, track.track_id, now, s.alarm))
                if track.label in s.forbidden:
                    events.append(self._event("forbidden", stay, track.track_id, now, True))
            elif stay is not None and not is_in and firm:
                events.append(self.leave(track.track_id, now))
                continue
            if stay is not None:
                stay.last_seen = now
                if s.max_dwell_s is not None and not stay.dwell_reported and now - stay.since > s.max_dwell_s:
                    stay.dwell_reported = True
                    events.append(self._event("dwell", stay, track.track_id, now, True))
        return events

    def leave(self, track_id: int, now: float | None = None) -> ZoneEvent:
        """The track left (now) or ended (at its last sighting inside): its exit with the dwell time."""
        stay = self.inside.pop(track_id)
        when = stay.last_seen if now is None else now
        return self._event("exit", stay, track_id, when, False)

    def occupancy(self) -> dict[str, int]:
        """label -> tracks inside now."""
        counts: dict[str, int] = {}
        for stay in self.inside.values():
            counts[stay.label] = counts.get(stay.label, 0) + 1
        return counts

    def _event(self, kind: ZoneEventKind, stay: Stay, track_id: int, now: float, alarm: bool) -> ZoneEvent:
        dwell = None if kind in ("enter", "forbidden") else round(now - stay.since, 3)
        return ZoneEvent(self.source_id, self.settings.name, kind, stay.label, track_id, now, dwell, alarm)


def ended(watchers: tuple[list[LineCounter], list[ZoneWatch]], track_id: int) -> list[AnalyticsEvent]:
    """A track ended: lines forget it, zones report its exit."""
    lines, zones = watchers
    for line in lines:
        line.forget(track_id)
    return [zone.leave(track_id) for zone in zones if track_id in zone.inside]
