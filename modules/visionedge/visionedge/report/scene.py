"""The scene part of a day, accumulated record by record in memory bounded by sources, geometry and time bins."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import cv2
import numpy as np

from visionedge.report.records import Row
from visionedge.report.scenerecords import Shape, geometry_of

TRAIL_GRID: Final = (96, 72)
"""Columns and rows of the trail heat map: a person's path at a door stays visible, the array stays small."""
MAX_BINS: Final = 2000
"""Time bins kept per line direction or zone; past it the bins double in width (a day stays per minute or so)."""
DWELL_SAMPLE: Final = 10_000
"""Dwell times kept per zone (a uniform sample beyond it), for the distribution."""
BACKGROUND_WIDTH: Final = 640
JPEG_QUALITY: Final = 75


@dataclass
class Bins:
    """Values summed per time bin (with the number of samples), widening so they never exceed MAX_BINS."""

    width: float = 1.0
    sums: dict[int, float] = field(default_factory=dict)
    samples: dict[int, int] = field(default_factory=dict)

    def add(self, at: float, value: float) -> None:
        """Add one value at time `at` (epoch seconds)."""
        key = int(at // self.width)
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.samples[key] = self.samples.get(key, 0) + 1
        if len(self.sums) > MAX_BINS:
            self._widen()

    def _widen(self) -> None:
        """Double the bin width, merging neighbours."""
        self.width *= 2
        sums: dict[int, float] = defaultdict(float)
        samples: dict[int, int] = defaultdict(int)
        for key, value in self.sums.items():
            sums[key // 2] += value
            samples[key // 2] += self.samples[key]
        self.sums, self.samples = dict(sums), dict(samples)


@dataclass
class SourceScene:
    """One source's scene over the day."""

    crossings: dict[tuple[str, str], Bins] = field(default_factory=dict)
    totals: Counter[tuple[str, str]] = field(default_factory=Counter)
    occupancy: dict[str, Bins] = field(default_factory=dict)
    dwells: dict[str, list[float]] = field(default_factory=dict)
    dwell_seen: Counter[str] = field(default_factory=Counter)
    trails: np.ndarray = field(default_factory=lambda: np.zeros(TRAIL_GRID[::-1], dtype=np.int64))
    lines: tuple[Shape, ...] = ()
    zones: tuple[Shape, ...] = ()
    size: tuple[int, int] = (640, 480)
    background: bytes | None = None
    """A JPEG of one of the source's frames, when the frames were at hand (analyze --report)."""


class SceneStats:
    """Crossings over time per line and direction, occupancy over time and dwell per zone, trails per source."""

    def __init__(self, seed: int = 0) -> None:
        self.sources: dict[str, SourceScene] = {}
        self._rng = random.Random(seed)

    def __bool__(self) -> bool:
        """Whether any record had a scene part."""
        return bool(self.sources)

    def set_geometry(self, source_id: str, section: Mapping[str, Any]) -> None:
        """The lines and zones to draw for a source, from its analytics section as plain data (`model_dump()`)."""
        source = self.sources.setdefault(source_id, SourceScene())
        lines, zones = geometry_of(section)
        source.lines, source.zones = lines or (), zones or ()

    def add(self, row: Row, image: np.ndarray | None = None) -> None:
        """Fold one record's scene part (and, the first time, its frame as the source's picture)."""
        part = row.scene
        if part is None:
            return
        source = self.sources.setdefault(row.source_id, SourceScene())
        source.size = row.frame_size
        if image is not None and source.background is None:
            source.background = _jpeg(image)
        if part.lines is not None:
            source.lines = part.lines
        if part.zones is not None:
            source.zones = part.zones
        cols, rows = TRAIL_GRID
        for x, y in part.anchors:
            source.trails[min(rows - 1, int(y * rows)), min(cols - 1, int(x * cols))] += 1
        for key in part.crossings:
            source.crossings.setdefault(key, Bins()).add(row.timestamp, 1.0)
            source.totals[key] += 1
        for zone, inside in part.occupancy:
            source.occupancy.setdefault(zone, Bins()).add(row.timestamp, float(inside))
        for zone, seconds in part.dwells:
            kept = source.dwells.setdefault(zone, [])
            source.dwell_seen[zone] += 1
            if len(kept) < DWELL_SAMPLE:
                kept.append(seconds)
            else:
                slot = self._rng.randrange(source.dwell_seen[zone])
                if slot < DWELL_SAMPLE:
                    kept[slot] = seconds


def _jpeg(image: np.ndarray) -> bytes | None:
    """The frame shrunk to BACKGROUND_WIDTH as JPEG bytes."""
    h, w = image.shape[:2]
    if not h or not w:
        return None
    scale = min(1.0, BACKGROUND_WIDTH / w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return encoded.tobytes() if ok else None
