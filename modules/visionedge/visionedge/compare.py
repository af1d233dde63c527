"""How far a candidate model agrees with the active one on the same frames: defined once, for the device's shadow
phase, `visionedge compare` and reports.

Classifiers: top-1 agreement and top-5 overlap. Detectors: per-frame F1 of the candidate against the active model
(same label, IoU >= 0.5, greedy by candidate confidence), averaged over frames, plus per-label count drift. Both:
mean top confidence of each model and the latency ratio (candidate p50/p95 over active p50/p95). When the tasks or
label sets differ, agreement is undefined (None) and `undefined_reason` says why; no number is invented.
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from visionedge.frame import Frame, Inference
from visionedge.tasks import detection_f1 as detection_f1  # where it was defined before tasks.py
from visionedge.tasks import task_of

if TYPE_CHECKING:
    from visionedge.models.model import Model

WORST_KEPT = 10
"""Frames with the lowest agreement kept for display; the heap stays this small on the device."""
SHOWN_LABELS = 3
OnFrame = Callable[["FrameComparison", Frame, Inference, Inference], None]
"""Called per compared frame with its comparison, the frame and both results (for --jsonl and --report)."""


@dataclass(frozen=True, slots=True)
class Subject:
    """What the comparison needs to know about one model: identity, task and its label set."""

    name: str
    version: str
    task: str
    labels: tuple[str, ...]

    @classmethod
    def of(cls, model: Model) -> Subject:
        """From a loaded model."""
        return cls(model.name, model.version, model.manifest.task, tuple(model.labels))

    def identity(self) -> dict[str, str]:
        """{"name", "version"}, the shape reported properties use."""
        return {"name": self.name, "version": self.version}


def undefined_reason(active: Subject, candidate: Subject) -> str:
    """Why agreement between these two models means nothing, or "" when it is defined."""
    if active.task != candidate.task:
        return f"tasks differ ({active.task} -> {candidate.task})"
    a, c = set(active.labels), set(candidate.labels)
    if a != c:
        return (f"label sets differ ({len(a)} -> {len(c)} labels, {len(a & c)} shared)")
    return ""


def top_confidence(inference: Inference) -> float | None:
    """The most confident item of a result, or None when it asserts nothing."""
    return max((i.confidence for i in task_of(inference.task).items(inference)), default=None)


@dataclass(frozen=True, slots=True)
class FrameComparison:
    """One frame seen by both models."""

    frame: int
    source_id: str
    agreement: float | None
    """1/0 top-1 match (classifiers) or F1 (detectors); None when undefined."""
    overlap: float | None
    """Top-5 overlap (classifiers only)."""
    active_labels: tuple[str, ...]
    candidate_labels: tuple[str, ...]
    active_ms: float
    candidate_ms: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for --jsonl and the worst-frames list."""
        return {
            "frame": self.frame,
            "source_id": self.source_id,
            "agreement": _round(self.agreement),
            "top5_overlap": _round(self.overlap),
            "active": list(self.active_labels),
            "candidate": list(self.candidate_labels),
            "active_ms": round(self.active_ms, 3),
            "candidate_ms": round(self.candidate_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class Figures:
    """The comparison so far: what gates decide on and what every view (twin, metrics, CLI, report) shows."""

    active: Subject
    candidate: Subject
    frames: int
    agreement: float | None
    """Classifiers: top-1 agreement; detectors: mean per-frame F1. None when undefined or no frames."""
    undefined: str
    """Why agreement is undefined ("" when defined)."""
    top5_overlap: float | None
    count_drift: dict[str, tuple[int, int]]
    """Detectors: label -> (active total, candidate total), largest absolute change first."""
    active_confidence: float | None
    candidate_confidence: float | None
    active_p50_ms: float | None
    active_p95_ms: float | None
    candidate_p50_ms: float | None
    candidate_p95_ms: float | None
    worst: tuple[FrameComparison, ...] = field(default=())
    """Frames where the two disagree at all, worst first (at most WORST_KEPT)."""

    @property
    def latency_ratio_p50(self) -> float | None:
        """Candidate p50 over active p50."""
        return _ratio(self.candidate_p50_ms, self.active_p50_ms)

    @property
    def latency_ratio(self) -> float | None:
        """Candidate p95 over active p95: the figure the latency gate and modelHealth use."""
        return _ratio(self.candidate_p95_ms, self.active_p95_ms)

    def describe(self) -> str:
        """One line: "agreement 0.98 over 150 frames (top-5 overlap 0.97); latency p95 1.1x"."""
        if self.agreement is not None:
            head = f"agreement {self.agreement:.2f} over {self.frames} frames"
            if self.top5_overlap is not None:
                head += f" (top-5 overlap {self.top5_overlap:.2f})"
        elif self.undefined:
            head = f"agreement undefined: {self.undefined}; {self.frames} frames"
        else:
            head = f"no agreement yet; {self.frames} frames"
        ratio = self.latency_ratio
        return head + (f"; latency p95 {ratio:.1f}x" if ratio is not None else "")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, the same keys for `visionedge compare --json`, metrics and reports."""
        return {
            "active": self.active.identity(),
            "candidate": self.candidate.identity(),
            "task": self.active.task if self.active.task == self.candidate.task else
            f"{self.active.task}->{self.candidate.task}",
            "frames": self.frames,
            "agreement": _round(self.agreement),
            "agreement_undefined": self.undefined or None,
            "top5_overlap": _round(self.top5_overlap),
            "count_drift": {label: {"active": a, "candidate": c} for label, (a, c) in self.count_drift.items()},
            "confidence": {"active": _round(self.active_confidence), "candidate": _round(self.candidate_confidence)},
            "latency_ms": {"active": {"p50": _round(self.active_p50_ms), "p95": _round(self.active_p95_ms)},
                           "candidate": {"p50": _round(self.candidate_p50_ms), "p95": _round(self.candidate_p95_ms)}},
            "latency_ratio": {"p50": _round(self.latency_ratio_p50), "p95": _round(self.latency_ratio)},
            "worst_frames": [f.as_dict() for f in self.worst],
        }


class Comparison:
    """Accumulates frames seen by both models; add() from one thread, figures() from any."""

    def __init__(self, active: Subject, candidate: Subject, *, worst_kept: int = WORST_KEPT) -> None:
        self.active = active
        self.candidate = candidate
        self.undefined = undefined_reason(active, candidate)
        self._worst_kept = worst_kept
        self._lock = threading.Lock()
        self._frames = 0
        self._agreement_sum = 0.0
        self._overlap_sum = 0.0
        self._counts: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        self._confidence: tuple[list[float], list[float]] = ([], [])
        self._latency: tuple[list[float], list[float]] = ([], [])
        self._worst: list[tuple[float, int, FrameComparison]] = []

    @property
    def frames(self) -> int:
        """Frames compared so far."""
        return self._frames

    def add(self, active: Inference, candidate: Inference, frame: int = 0, source_id: str = "") -> FrameComparison:
        """Compare the two results for one frame and fold them into the figures."""
        agreement = overlap = None
        if not self.undefined:
            agreement, overlap = task_of(active.task).agreement(active, candidate)
        result = FrameComparison(frame, source_id, agreement, overlap, tuple(active.labels()[:SHOWN_LABELS]),
                                 tuple(candidate.labels()[:SHOWN_LABELS]), active.inference_ms,
                                 candidate.inference_ms)
        with self._lock:
            self._frames += 1
            if agreement is not None:
                self._agreement_sum += agreement
            key = disagreement(result)
            if key is not None:
                # A min-heap on disagreement: its root is the most agreeing frame kept, the one a worse frame evicts.
                entry = (key, -self._frames, result)
                if len(self._worst) < self._worst_kept:
                    heapq.heappush(self._worst, entry)
                elif key > self._worst[0][0]:
                    heapq.heapreplace(self._worst, entry)
            if overlap is not None:
                self._overlap_sum += overlap
            for counts, inference in zip(self._counts, (active, candidate), strict=True):
                if task_of(inference.task).counts_objects:
                    counts.update(inference.labels())
            for side, inference in enumerate((active, candidate)):
                top = top_confidence(inference)
                if top is not None:
                    self._confidence[side].append(top)
                self._latency[side].append(inference.inference_ms)
        return result

    def figures(self) -> Figures:
        """The figures over every frame added so far."""
        with self._lock:
            n = self._frames
            defined = n > 0 and not self.undefined
            overlaps = not task_of(self.active.task).counts_objects
            drift = {}
            if task_of(self.active.task).counts_objects and task_of(self.candidate.task).counts_objects:
                labels = set(self._counts[0]) | set(self._counts[1])
                ordered = sorted(labels, key=lambda lb: (-abs(self._counts[1][lb] - self._counts[0][lb]), lb))
                drift = {lb: (self._counts[0][lb], self._counts[1][lb]) for lb in ordered}
            worst = tuple(entry[2] for entry in sorted(self._worst, key=lambda e: (-e[0], -e[1])))
            return Figures(
                self.active, self.candidate, n,
                self._agreement_sum / n if defined else None, self.undefined,
                self._overlap_sum / n if defined and overlaps else None, drift,
                _mean(self._confidence[0]), _mean(self._confidence[1]),
                _percentile(self._latency[0], 50), _percentile(self._latency[0], 95),
                _percentile(self._latency[1], 50), _percentile(self._latency[1], 95),
                worst,
            )


def disagreement(result: FrameComparison) -> float | None:
    """How badly one frame disagrees (higher is worse), or None when it agrees fully or agreement is undefined."""
    if result.agreement is None or (result.agreement >= 1.0 and (result.overlap is None or result.overlap >= 1.0)):
        return None
    return -(result.agreement + (result.overlap or 0.0))


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def compare_frames(active: Model, candidate: Model, frames: Iterable[Frame], *, every: int = 1,
                   limit: int | None = None, on_frame: OnFrame | None = None) -> Comparison:
    """Run both models over every `every`-th frame (up to `limit` compared) and compare them: the offline path."""
    comparison = Comparison(Subject.of(active), Subject.of(candidate))
    for n, frame in enumerate(frames):
        if limit is not None and comparison.frames >= limit:
            break
        if n % every:
            continue
        first, second = active.infer(frame.image), candidate.infer(frame.image)
        result = comparison.add(first, second, frame.index, frame.source_id)
        if on_frame is not None:
            on_frame(result, frame, first, second)
    return comparison
