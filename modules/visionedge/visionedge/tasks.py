"""One class per task (what a kind of model concludes about a frame), holding everything that differs by task: which
items a result carries, how they become a record, how two models' results on one frame agree, and how reports name
them. A new task is one subclass of `Task` and one entry in `TASKS` (plus its decoder base in
`models/decoders/base.py` and its name in `TaskName`); nothing else switches on a task's name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

if TYPE_CHECKING:
    from visionedge.compare import Figures
    from visionedge.frame import Classification, Detection, Inference

TaskName = Literal["classify", "detect"]
"""The tasks a manifest may name and a decoder may serve."""
IOU_MATCH: Final = 0.5
TOP_K: Final = 5


class Task:
    """What differs between tasks; the class attributes name it in records, exports and reports."""

    name: ClassVar[TaskName]
    items_field: ClassVar[str]
    """The `Inference` field and the record key that hold its items."""
    item_kind: ClassVar[str]
    """An item's kind in export rows."""
    boxes: ClassVar[bool]
    """Whether its items carry boxes."""
    counts_objects: ClassVar[bool]
    """True: a frame counts every item (objects); False: only its top-1 label."""
    measure: ClassVar[str]
    """The agreement measure's short name (charts)."""
    measure_long: ClassVar[str]
    """The agreement measure with its definition (report tables)."""
    measure_tool: ClassVar[str]
    """The agreement measure as `models quantize` prints it."""
    counted: ClassVar[str]
    """What a count chart counts."""
    per_frame: ClassVar[str]
    """What the report's timeline plots per frame."""

    def items(self, inference: Inference) -> tuple[Classification | Detection, ...]:
        """The result's items, most confident first."""
        items: tuple[Classification | Detection, ...] = getattr(inference, self.items_field)
        return items

    def counted_labels(self, labels: Sequence[str]) -> list[str]:
        """The labels a frame counts: every object, or the top-1 only."""
        return list(labels) if self.counts_objects else list(labels[:1])

    def record_fields(self, inference: Inference) -> dict[str, Any]:
        """The record's items and its per-label counts."""
        raise NotImplementedError

    def agreement(self, active: Inference, candidate: Inference) -> tuple[float, float | None]:
        """How far the candidate agrees with the active model on one frame (1 = fully), and the top-k overlap where
        the task has one."""
        raise NotImplementedError

    def agreement_line(self, figures: Figures) -> str:
        """The agreement as `visionedge compare` prints it (agreement defined)."""
        raise NotImplementedError


class Classify(Task):
    """A classifier: top-k labels for the whole frame."""

    name = "classify"
    items_field = "classifications"
    item_kind = "classification"
    boxes = False
    counts_objects = False
    measure = "top-1 agreement"
    measure_long = "top-1 agreement"
    measure_tool = "top-1 agreement"
    counted = "frames as top-1"
    per_frame = "share of frames (top-1)"

    def record_fields(self, inference: Inference) -> dict[str, Any]:
        """Classifications, and the top-1 label counted once."""
        top = inference.classifications[:1]
        return {"classifications": [{"label": c.label, "confidence": round(c.confidence, 5)}
                                    for c in inference.classifications],
                "counts": {top[0].label: 1} if top else {}}

    def agreement(self, active: Inference, candidate: Inference) -> tuple[float, float | None]:
        """Top-1 match (1 or 0) and the overlap of the top-k label sets."""
        a, c = active.labels(), candidate.labels()
        k = min(TOP_K, len(a), len(c))
        return 1.0 if a[:1] == c[:1] else 0.0, len(set(a[:k]) & set(c[:k])) / k if k else float(len(a) == len(c))

    def agreement_line(self, figures: Figures) -> str:
        """Top-1 agreement and top-5 overlap."""
        return f"agreement  top-1 {figures.agreement or 0:.4f}, top-5 overlap {figures.top5_overlap or 0:.4f}"


class Detect(Task):
    """A detector: labelled boxes."""

    name = "detect"
    items_field = "detections"
    item_kind = "detection"
    boxes = True
    counts_objects = True
    measure = "F1"
    measure_long = "F1 (same label, IoU >= 0.5), mean over frames"
    measure_tool = "detection F1"
    counted = "objects"
    per_frame = "objects per frame"

    def record_fields(self, inference: Inference) -> dict[str, Any]:
        """Detections with boxes, and every object counted per label."""
        return {"detections": [detection_record(d) for d in inference.detections],
                "counts": dict(Counter(d.label for d in inference.detections))}

    def agreement(self, active: Inference, candidate: Inference) -> tuple[float, float | None]:
        """Detection F1 of the candidate against the active model; no top-k overlap."""
        return detection_f1(active.detections, candidate.detections), None

    def agreement_line(self, figures: Figures) -> str:
        """Mean per-frame F1."""
        return f"agreement  F1 {figures.agreement or 0:.4f} (same label, IoU >= 0.5, mean over frames)"


TASKS: Final[dict[str, Task]] = {"detect": Detect(), "classify": Classify()}
"""Every task by name; records are recognised in this order."""


def task_of(name: str) -> Task:
    """The task called `name` (a manifest's or a result's `task`)."""
    return TASKS[name]


def detection_record(d: Detection) -> dict[str, Any]:
    """One detection as a result record holds it (schema 1.0)."""
    return {"label": d.label, "confidence": round(d.confidence, 5), "box": [round(v, 5) for v in d.box]}


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detection_f1(active: tuple[Detection, ...], candidate: tuple[Detection, ...]) -> float:
    """F1 of candidate detections against the active ones: greedy in candidate confidence order, each active box
    matched at most once, same label and IoU >= 0.5. Two empty frames agree fully."""
    if not active and not candidate:
        return 1.0
    unmatched = list(active)
    matched = 0
    for det in sorted(candidate, key=lambda d: -d.confidence):
        best, best_iou = -1, IOU_MATCH
        for i, ref in enumerate(unmatched):
            if ref.label == det.label:
                overlap = iou(ref.box, det.box)
                if overlap >= best_iou:
                    best, best_iou = i, overlap
        if best >= 0:
            unmatched.pop(best)
            matched += 1
    return 2.0 * matched / (len(active) + len(candidate))

