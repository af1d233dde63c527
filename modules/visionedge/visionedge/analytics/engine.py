"""One source's scene analytics: detections in, tracks, crossings and zone events out (the counts live downstream)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from visionedge.analytics.events import AnalyticsEvent, SceneFrame
from visionedge.analytics.geometry import Point
from visionedge.analytics.scene import LineCounter, Seen, ZoneWatch, ended
from visionedge.analytics.settings import SourceAnalytics
from visionedge.analytics.tracker import Tracker
from visionedge.frame import Detection


def anchor_of(box: tuple[float, float, float, float], anchor: str) -> Point:
    """The point of a box that crosses lines and stands in zones."""
    x1, y1, x2, y2 = box
    y = y2 if anchor == "bottom-center" else y1 if anchor == "top-center" else (y1 + y2) / 2
    return ((x1 + x2) / 2, y)


class SceneEngine:
    """Tracker, lines and zones of one source; `update` once per analysed frame (never for a reused result)."""

    def __init__(self, source_id: str, settings: SourceAnalytics, next_id: int = 1) -> None:
        self.source_id = source_id
        self.settings = settings
        self.geometry = settings.digest()
        self.tracker = Tracker(settings.tracker, next_id)
        self.lines = [LineCounter(line, source_id) for line in settings.lines]
        self.zones = [ZoneWatch(zone, source_id) for zone in settings.zones]
        self._reset_reason: str | None = None
        self._pending: list[AnalyticsEvent] = []

    def update(self, detections: Sequence[Detection], timestamp: float, model: str,
               hidden: Sequence[Detection] = ()) -> SceneFrame:
        """Track one analysed frame's detections (and the boxes NMS removed, `hidden`), move lines and zones on, and
        say what happened."""
        if not self.settings.enabled:
            return self._frame(timestamp, model, [], (None,) * len(detections))
        boxes = np.array([d.box for d in detections], dtype=float).reshape(-1, 4)
        scores = np.array([d.confidence for d in detections], dtype=float)
        removed = (np.array([d.box for d in hidden], dtype=float).reshape(-1, 4), [d.label for d in hidden])
        matched = self.tracker.update(boxes, scores, [d.label for d in detections], timestamp, removed)
        tracks = matched.tracks
        events: list[AnalyticsEvent] = self._pending
        self._pending = []
        alive = {t.id for t in self.tracker.tracks if t.id}
        for gone in self._followed() - alive:
            events.extend(ended((self.lines, self.zones), gone))
        anchor = self.settings.anchor
        seen = [Seen(track.id, track.label, anchor_of(detection.box, anchor))
                for detection, track in zip(detections, tracks, strict=True) if track is not None]
        xy = np.array([s.anchor for s in seen], dtype=float).reshape(-1, 2)
        for line in self.lines:
            events.extend(line.see(seen, xy, timestamp))
        for zone in self.zones:
            events.extend(zone.see(seen, xy, timestamp))
        occluded = tuple((hidden[i], track.id) for i, track in sorted(matched.occluded.items()))
        return self._frame(timestamp, model, events, tuple(t.id if t is not None else None for t in tracks), occluded)

    def reset(self, reason: str) -> None:
        """End every track (a model swap): zones report their exits, the next SceneFrame says why."""
        for track in self.tracker.tracks:
            if track.id:
                self._pending.extend(ended((self.lines, self.zones), track.id))
        self.tracker.reset()
        self._reset_reason = reason

    def finish(self) -> list[AnalyticsEvent]:
        """End of the source: every track still followed ends (zones report exits at their last sighting)."""
        events: list[AnalyticsEvent] = list(self._pending)
        self._pending = []
        for track_id in sorted(self._followed()):
            events.extend(ended((self.lines, self.zones), track_id))
        self.tracker.reset()
        return events

    def _followed(self) -> set[int]:
        return {track_id for zone in self.zones for track_id in zone.inside}.union(
            *(line.followed() for line in self.lines))

    def _frame(self, timestamp: float, model: str, events: list[AnalyticsEvent],
               track_ids: tuple[int | None, ...], occluded: tuple[tuple[Detection, int], ...] = ()) -> SceneFrame:
        reason, self._reset_reason = self._reset_reason, None
        occupancy = {zone.settings.name: zone.occupancy() for zone in self.zones}
        return SceneFrame(self.source_id, timestamp, model, self.geometry, occupancy, tuple(events), reason,
                          track_ids, occluded)
