"""What happened over a run or a day, accumulated record by record in memory bounded by labels and time bins."""

from __future__ import annotations

import heapq
import random
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from visionedge.report.records import Row
from visionedge.tasks import task_of

SECOND, MINUTE, HOUR, DAY = 1, 60, 3600, 86400
HEAT_GRID = (32, 24)
"""Columns and rows of the box-centre heat map: fine enough to see lanes and doors, small for any label count."""
LATENCY_SAMPLE = 10_000
HEAT_FLUSH = 65_536
"""Box centres buffered per label before they are binned: a fast append per box, a bounded buffer."""
ThumbnailMaker = Callable[[Row], bytes | None]
"""Draws a kept frame with its boxes and labels as JPEG bytes, or None when the frame is not at hand."""
TIMELINE_LABELS = 8


def bin_for_span(span_s: float) -> int:
    """Per second up to 15 minutes, per minute up to two days, per hour up to 90 days, else per day."""
    if span_s <= 15 * MINUTE:
        return SECOND
    if span_s <= 2 * DAY:
        return MINUTE
    if span_s <= 90 * DAY:
        return HOUR
    return DAY


@dataclass
class LabelStats:
    """Totals for one label: how much, in how many frames, its peak and when it was first and last seen."""

    total: int = 0
    frames: int = 0
    peak: int = 0
    peak_at: float = 0.0
    first_at: float = float("inf")
    last_at: float = float("-inf")
    confidence_sum: float = 0.0


@dataclass
class Bin:
    """Frames in one time bin and the label counts summed over them."""

    frames: int = 0
    counts: Counter[str] = field(default_factory=Counter)


class Timeline:
    """Label counts per time bin; the bin widens as the span grows, so a day never holds 86,400 bins."""

    def __init__(self) -> None:
        self.width = SECOND
        self.bins: dict[int, Bin] = {}
        self.t_min = float("inf")
        self.t_max = float("-inf")

    def add(self, timestamp: float, counts: dict[str, int]) -> None:
        """Count one frame."""
        self.t_min = min(self.t_min, timestamp)
        self.t_max = max(self.t_max, timestamp)
        wanted = bin_for_span(self.t_max - self.t_min)
        if wanted != self.width:
            self._widen(wanted)
        entry = self.bins.setdefault(int(timestamp // self.width), Bin())
        entry.frames += 1
        entry.counts.update(counts)

    def _widen(self, width: int) -> None:
        merged: dict[int, Bin] = {}
        for key, entry in self.bins.items():
            target = merged.setdefault(key * self.width // width, Bin())
            target.frames += entry.frames
            target.counts.update(entry.counts)
        self.width, self.bins = width, merged


@dataclass(order=True)
class Moment:
    """A frame worth showing: its rank decides which are kept; a thumbnail when the frames were available."""

    score: float
    order: int
    row: Row = field(compare=False)
    why: str = field(compare=False)
    thumbnail: bytes | None = field(default=None, compare=False)


class DayStats:
    """Everything the report shows, fed one record at a time (from JSONL or live from `analyze`)."""

    def __init__(self) -> None:
        self.frames = 0
        self.reused = 0
        self.sources: Counter[str] = Counter()
        self.models: Counter[tuple[str, str]] = Counter()
        self.tasks: Counter[str] = Counter()
        self.labels: dict[str, LabelStats] = {}
        self.timeline = Timeline()
        self._cells: dict[str, array[int]] = {}
        self._grids: dict[str, np.ndarray] = {}
        self.latency_ms: list[float] = []
        self.latency_seen = 0
        self._rng = random.Random(0)

    def add(self, row: Row) -> None:
        """Count one record."""
        self.frames += 1
        self.reused += row.reused
        self.sources[row.source_id] += 1
        self.models[(row.model_name, row.model_version)] += 1
        self.tasks[row.task] += 1
        self.timeline.add(row.timestamp, row.counts)
        if not row.reused:
            self._sample_latency(row.inference_ms)
        for label, n in row.counts.items():
            stats = self.labels.setdefault(label, LabelStats())
            stats.total += n
            stats.frames += 1
            if n > stats.peak:
                stats.peak, stats.peak_at = n, row.timestamp
            stats.first_at = min(stats.first_at, row.timestamp)
            stats.last_at = max(stats.last_at, row.timestamp)
        if not task_of(row.task).counts_objects and row.items:  # a top-1 label: its confidence is the frame's
            self.labels[row.items[0].label].confidence_sum += row.items[0].confidence
        for item in row.items:
            if item.box is not None:
                self._add_box(item.label, item.box)

    def _sample_latency(self, ms: float) -> None:
        self.latency_seen += 1
        if len(self.latency_ms) < LATENCY_SAMPLE:
            self.latency_ms.append(ms)
        else:
            slot = self._rng.randrange(self.latency_seen)
            if slot < LATENCY_SAMPLE:
                self.latency_ms[slot] = ms

    def _add_box(self, label: str, box: tuple[float, float, float, float]) -> None:
        cx = min(max((box[0] + box[2]) / 2, 0.0), 0.999999)
        cy = min(max((box[1] + box[3]) / 2, 0.0), 0.999999)
        cells = self._cells.get(label)
        if cells is None:
            cells = self._cells[label] = array("l")
        cells.append(int(cy * HEAT_GRID[1]) * HEAT_GRID[0] + int(cx * HEAT_GRID[0]))
        if len(cells) >= HEAT_FLUSH:
            self._flush_heat(label)

    def _flush_heat(self, label: str) -> None:
        cells = self._cells.pop(label)
        counts = np.bincount(np.frombuffer(cells, dtype=np.int_), minlength=HEAT_GRID[0] * HEAT_GRID[1])
        grid = counts.reshape(HEAT_GRID[1], HEAT_GRID[0])
        self._grids[label] = self._grids[label] + grid if label in self._grids else grid

    @property
    def heat(self) -> dict[str, np.ndarray]:
        """Box centres per label on a HEAT_GRID (rows, columns) grid."""
        for label in list(self._cells):
            self._flush_heat(label)
        return self._grids

    def top_labels(self, n: int) -> list[str]:
        """The n labels with the most counts, most first (ties by name, so reports are reproducible)."""
        ranked = sorted(self.labels.items(), key=lambda kv: (-kv[1].total, kv[0]))
        return [label for label, _ in ranked[:n]]

    def latency_percentile(self, q: float) -> float | None:
        """Inference time percentile over a uniform sample of the frames that were inferred."""
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else None


class KeyFrames:
    """The top moments: most objects, the first sighting of each label and the biggest changes, K of each kind."""

    def __init__(self, k: int = 6, max_first: int = 24) -> None:
        self.k = k
        self.max_first = max_first
        self.most: list[Moment] = []
        self.changes: list[Moment] = []
        self.first: dict[str, Moment] = {}
        self._previous: dict[str, dict[str, int]] = {}
        self._order = 0

    def offer(self, row: Row, thumbnail: ThumbnailMaker | None = None) -> None:
        """Consider one frame; the thumbnail is drawn only when the frame is kept."""
        self._order += 1
        previous = self._previous.get(row.source_id)
        self._previous[row.source_id] = row.counts
        kept: list[Moment] = []
        for label in row.counts:
            if label not in self.first and len(self.first) < self.max_first:
                self.first[label] = Moment(0, self._order, row, f"first {label}")
                kept.append(self.first[label])
        objects = sum(row.counts.values())
        if task_of(row.task).counts_objects and objects:
            kept += self._push(self.most, Moment(objects, -self._order, row, f"{objects} objects"))
        if previous is not None:
            change = sum(abs(row.counts.get(k, 0) - previous.get(k, 0)) for k in set(row.counts) | set(previous))
            if change:
                kept += self._push(self.changes, Moment(change, -self._order, row, f"{change} counts changed"))
        if kept and thumbnail is not None:
            image = thumbnail(row)
            for moment in kept:
                moment.thumbnail = image

    def _push(self, heap: list[Moment], moment: Moment) -> list[Moment]:
        """Keep the k best; returns the moment when it was kept."""
        if len(heap) < self.k:
            heapq.heappush(heap, moment)
            return [moment]
        if moment > heap[0]:
            heapq.heapreplace(heap, moment)
            return [moment]
        return []

    def moments(self) -> list[tuple[str, list[Moment]]]:
        """Each kind of moment, best first."""
        by_time = sorted(self.first.values(), key=lambda m: m.order)
        return [
            ("Most objects", sorted(self.most, reverse=True)),
            ("First sighting of each label", by_time),
            ("Biggest changes", sorted(self.changes, reverse=True)),
        ]

