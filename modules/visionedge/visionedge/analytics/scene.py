"""Lines and zones over tracks: crossings with hysteresis, zone entries, exits, dwell and alarms, cumulative counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from visionedge.analytics.events import AnalyticsEvent, Crossing, ZoneEvent, ZoneEventKind
from visionedge.analytics.geometry import Point, contains, crossing_param, distance_to_boundary, distance_to_line
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
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """direction -> label -> crossings since counting began."""
    _sides: dict[int, tuple[int, Point]] = field(default_factory=dict)

    def see(self, track: Seen, now: float) -> Crossing | None:
        """Follow one track; a Crossing when it went from one settled side to the other within the segment."""
        s = self.settings
        if s.classes is not None and track.label not in s.classes:
            return None
        a, b = s.points
        distance = distance_to_line(a, b, track.anchor)
        if abs(distance) < s.hysteresis or distance == 0:
            return None
        now_side = 1 if distance > 0 else -1
        before = self._sides.get(track.track_id)
        self._sides[track.track_id] = (now_side, track.anchor)
        if before is None or before[0] == now_side:
            return None
        u = crossing_param(a, b, before[1], track.anchor)
        if u is None or not 0.0 <= u <= 1.0:
            return None
        direction = s.directions[0] if now_side > 0 else s.directions[1]
        per_label = self.counts.setdefault(direction, {})
        per_label[track.label] = per_label.get(track.label, 0) + 1
        return Crossing(self.source_id, s.name, direction, track.label, track.track_id, now, s.alarm)

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
    """One zone: who is inside now, entries and exits per label, dwell and alarms."""

    settings: ZoneSettings
    source_id: str
    entries: dict[str, int] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    inside: dict[int, Stay] = field(default_factory=dict)

    def watches(self, label: str) -> bool:
        """Labels this zone follows: its classes (all when unset) and its forbidden ones."""
        s = self.settings
        return s.classes is None or label in s.classes or label in s.forbidden

    def see(self, track: Seen, now: float) -> list[ZoneEvent]:
        """Follow one track: enter and exit once the anchor is `hysteresis` past the edge, then dwell alarms."""
        s = self.settings
        if not self.watches(track.label):
            return []
        stay = self.inside.get(track.track_id)
        is_in = contains(s.points, track.anchor)
        settled = distance_to_boundary(s.points, track.anchor) >= s.hysteresis
        events: list[ZoneEvent] = []
        if stay is None and is_in and settled:
            stay = self.inside[track.track_id] = Stay(now, track.label, now)
            self.entries[track.label] = self.entries.get(track.label, 0) + 1
            events.append(self._event("enter", stay, track.track_id, now, s.alarm))
            if track.label in s.forbidden:
                events.append(self._event("forbidden", stay, track.track_id, now, True))
        elif stay is not None and not is_in and settled:
            events.append(self.leave(track.track_id, now))
            return events
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
        self.exits[stay.label] = self.exits.get(stay.label, 0) + 1
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
