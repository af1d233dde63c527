"""Scene analytics as JSON: a record's `scene` block (events and occupancy of one frame)."""

from __future__ import annotations

from typing import Any

from visionedge.analytics.events import AnalyticsEvent, Crossing, SceneFrame


def event_json(event: AnalyticsEvent) -> dict[str, Any]:
    """One event as a record's `scene.events` item."""
    if isinstance(event, Crossing):
        return {"kind": "crossing", "line": event.line, "direction": event.direction, "label": event.label,
                "track_id": event.track_id, "alarm": event.alarm}
    return {"kind": event.kind, "zone": event.zone, "label": event.label, "track_id": event.track_id,
            "dwell_s": event.dwell_s, "alarm": event.alarm}


def scene_json(scene: SceneFrame) -> dict[str, Any]:
    """A record's `scene` block: this frame's events and occupancy."""
    block: dict[str, Any] = {"events": [event_json(e) for e in scene.events],
                             "occupancy": {zone: dict(per) for zone, per in scene.occupancy.items()}}
    if scene.tracks_reset is not None:
        block["tracks_reset"] = scene.tracks_reset
    return block
