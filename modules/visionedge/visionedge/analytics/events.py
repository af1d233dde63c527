"""What the scene analytics hand to the rest of the module: events as they happen, and one value per analysed frame."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from visionedge.frame import Detection

ZoneEventKind = Literal["enter", "exit", "dwell", "forbidden"]


@dataclass(frozen=True)
class Crossing:
    """A track's anchor passed a line within its extent: counted per line, direction and class."""

    source_id: str
    line: str
    direction: str
    label: str
    track_id: int
    timestamp: float
    alarm: bool
    """True when the line is configured as an alarm line: the event leaves at once, not only in a count window."""


@dataclass(frozen=True)
class ZoneEvent:
    """A track entered or left a zone, stayed past its `max_dwell_s`, or is of a class the zone forbids."""

    source_id: str
    zone: str
    kind: ZoneEventKind
    label: str
    track_id: int
    timestamp: float
    dwell_s: float | None
    """For `exit` and `dwell`: how long the track has been inside; None for `enter` and `forbidden`."""
    alarm: bool
    """True for `dwell` and `forbidden` (and `enter` on a zone configured as an alarm zone)."""


AnalyticsEvent = Crossing | ZoneEvent


@dataclass(frozen=True)
class SceneFrame:
    """The scene analytics' answer for one analysed frame of one source: who is where now, and what just happened."""

    source_id: str
    timestamp: float
    model: str
    """`name@version` of the model whose detections fed the tracks; a count window never mixes two."""
    geometry: str
    """A short digest of the source's analytics settings; a count window never mixes two."""
    occupancy: Mapping[str, Mapping[str, int]]
    """zone -> class -> tracks inside the zone in this frame (every configured zone present, possibly empty)."""
    events: tuple[AnalyticsEvent, ...]
    tracks_reset: str | None = None
    """Why every track ended before this frame (a model swap, a geometry change), or None."""
    track_ids: tuple[int | None, ...] = ()
    """Per detection given to `update`, in its order: the id of the confirmed track it belongs to, or None."""
    occluded: tuple[tuple[Detection, int], ...] = ()
    """Boxes NMS removed that hold a confirmed track this frame (an object behind another), with its id."""
