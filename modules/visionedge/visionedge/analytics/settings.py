"""The `analytics` section: per source, the lines, zones and tracker settings, validated before anything applies."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from visionedge.analytics.geometry import polygon_area, self_intersection

MAX_LINES = 16
MAX_ZONES = 16
MAX_POLYGON_POINTS = 32
"""More than anyone draws by hand; a bound so a twin cannot make every frame's zone test arbitrarily slow."""
MIN_LINE_LENGTH = 0.01
MIN_ZONE_AREA = 1e-4

Anchor = Literal["bottom-center", "center", "top-center"]


class _Strict(BaseModel):
    """Unknown keys are errors, like every other section."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _in_unit_square(point: tuple[float, float]) -> tuple[float, float]:
    if not (0.0 <= point[0] <= 1.0 and 0.0 <= point[1] <= 1.0):
        raise ValueError(f"point {list(point)} is outside [0, 1]: coordinates are fractions of the frame")
    return point


NormPoint = Annotated[tuple[float, float], AfterValidator(_in_unit_square)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_. -]+$")]
Classes = Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]], Field(max_length=100)]


class LineSettings(_Strict):
    """A counting line: a track's anchor passing from one side to the other within the segment counts once."""

    name: Name = Field(description="names the line in counts and events (unique per source)")
    points: tuple[NormPoint, NormPoint] = Field(description="two [x, y] points, fractions of the frame (0, 0 = top "
                                                "left)")
    directions: tuple[Name, Name] = Field(("in", "out"), description="names of the two directions; the first is "
                                          "the way `analyze --preview` draws the first arrow: for a line drawn left "
                                          "to right, moving down the image; drawn top to bottom, moving left")
    classes: Classes | None = Field(None, description="count only these labels; null = every label")
    alarm: bool = Field(False, description="every crossing leaves at once as an event, not only in a count window")
    hysteresis: float = Field(0.02, ge=0.0, le=0.2, description="distance (fraction of the frame) the anchor must "
                              "get past the line before a side counts: jitter on the line counts once")

    @model_validator(mode="after")
    def _sane(self) -> LineSettings:
        (ax, ay), (bx, by) = self.points
        if ((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5 < MIN_LINE_LENGTH:
            raise ValueError(f"line {self.name!r} has zero length (its points are less than {MIN_LINE_LENGTH} apart)")
        if self.directions[0] == self.directions[1]:
            raise ValueError(f"line {self.name!r} needs two different direction names")
        return self


class ZoneSettings(_Strict):
    """A polygon: occupancy per class, entries and exits, dwell, and alarms for long stays and forbidden classes."""

    name: Name = Field(description="names the zone in occupancy and events (unique per source)")
    points: list[NormPoint] = Field(min_length=3, max_length=MAX_POLYGON_POINTS,
                                    description="3 to 32 polygon corners [x, y] in order, fractions of the frame; "
                                    "edges must not cross")
    classes: Classes | None = Field(None, description="watch only these labels; null = every label")
    forbidden: Classes = Field(default_factory=list, description="labels whose entry is an alarm event")
    max_dwell_s: float | None = Field(None, gt=0, le=7 * 86400, description="a stay longer than this is an alarm "
                                      "event (once per stay); null = none")
    alarm: bool = Field(False, description="entries leave at once as events too, not only in count windows")
    hysteresis: float = Field(0.01, ge=0.0, le=0.2, description="distance (fraction of the frame) past the edge "
                              "before an entry or exit counts")

    @model_validator(mode="after")
    def _simple(self) -> ZoneSettings:
        crossing = self_intersection(self.points)
        if crossing is not None:
            raise ValueError(f"zone {self.name!r} intersects itself (edges {crossing[0]} and {crossing[1]} cross)")
        if polygon_area(self.points) < MIN_ZONE_AREA:
            raise ValueError(f"zone {self.name!r} has no area")
        return self


class TrackerSettings(_Strict):
    """ByteTrack-style association; times in seconds of capture time, so dropped frames or rate changes keep tracks."""

    high: float = Field(0.5, gt=0.0, le=1.0, description="detections at least this confident are matched first")
    low: float = Field(0.1, ge=0.0, le=1.0, description="weaker detections only extend existing tracks")
    birth: float = Field(0.6, gt=0.0, le=1.0, description="a new track gets its id only once one of its detections "
                         "was at least this confident (it may start from weaker ones)")
    match_iou: float = Field(0.2, gt=0.0, lt=1.0, description="least IoU of a first-stage match")
    low_match_iou: float = Field(0.5, gt=0.0, lt=1.0, description="least IoU of a low-score (second-stage) match")
    confirm_hits: int = Field(2, ge=1, le=30, description="matched frames before a track gets an id")
    confirm_score: float = Field(0.8, gt=0.0, le=1.0, description="a new track whose first detection is at least "
                                 "this confident gets its id at once")
    max_lost_s: float = Field(1.0, gt=0.0, le=60.0, description="a track unseen this long ends")
    occluded: bool = Field(True, description="a track without a box of its own is held by one NMS removed under "
                           "another's (people walking close together), written with `occluded: true`; it neither "
                           "moves the track nor counts on lines and zones")

    @model_validator(mode="after")
    def _ordered(self) -> TrackerSettings:
        if self.low > self.high:
            raise ValueError("tracker.low must not exceed tracker.high")
        if self.confirm_score < self.birth:
            raise ValueError("tracker.confirm_score must not be below tracker.birth")
        return self


def _unique(items: list[LineSettings] | list[ZoneSettings]) -> list[LineSettings] | list[ZoneSettings]:
    names = [item.name for item in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"names must be unique: {', '.join(repeated)} used more than once")
    return items


class SourceAnalytics(_Strict):
    """One source's scene analytics."""

    enabled: bool = Field(True, description="false keeps the geometry but tracks nothing")
    lines: Annotated[list[LineSettings], AfterValidator(_unique)] = Field(default_factory=list,
                                                                          max_length=MAX_LINES)
    zones: Annotated[list[ZoneSettings], AfterValidator(_unique)] = Field(default_factory=list,
                                                                          max_length=MAX_ZONES)
    tracker: TrackerSettings = TrackerSettings()
    anchor: Anchor = Field("bottom-center", description="the point of a box that crosses lines and stands in zones")
    window_s: float = Field(60.0, ge=1.0, le=86400.0, description="length of the count windows that leave the device")

    def digest(self) -> str:
        """Short fingerprint of the geometry and tracker settings: a count window never mixes two."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


Analytics = Annotated[dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)], SourceAnalytics],
                      Field(max_length=32)]
"""source id -> its analytics settings."""
