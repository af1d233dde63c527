"""What every decoder shares: thresholds, activations, NMS, box decoding, and the two kinds of decoder."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from visionedge.frame import Classification, Detection, Geometry, Inference
from visionedge.tasks import TaskName

Task = TaskName
OutputShapes = dict[str, tuple[int | str | None, ...]]
"""Model output name -> shape as the ONNX signature gives it (symbolic dimensions are strings or None)."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Decision thresholds in effect for one call (manifest defaults, overridable from the twin)."""

    confidence: float
    iou: float
    top_k: int


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, in float32."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return np.asarray(e / e.sum(axis=axis, keepdims=True), dtype=np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices by descending score."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def classwise_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """NMS within each class only, done in one pass by moving each class to its own coordinate range."""
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    # The step must exceed the whole coordinate span (corners can be negative), or classes could still overlap.
    offset = classes.astype(np.float32)[:, None] * (float(boxes.max()) - float(boxes.min()) + 1.0)
    return nms(boxes + offset, scores, iou)


@dataclass(frozen=True, slots=True)
class Found:
    """One frame's boxes: those NMS kept (the result) and those it removed under a more confident box of their class
    (a person walking behind another: what a tracker may use to keep following them, never a result)."""

    kept: tuple[Detection, ...]
    removed: tuple[Detection, ...] = ()


def detections_from_scores(
    cxcywh: np.ndarray, scores: np.ndarray, labels: Sequence[str], geometry: Geometry, t: Thresholds,
    multi_label: bool,
) -> Found:
    """Threshold per (box, class) or per box's best class, class-wise NMS, boxes back to the original frame."""
    if multi_label:
        rows, classes = np.nonzero(scores > t.confidence)
    else:
        best = scores.argmax(axis=1)
        rows = np.nonzero(scores[np.arange(scores.shape[0]), best] > t.confidence)[0]
        classes = best[rows]
    if rows.size == 0:
        return Found(())
    conf = scores[rows, classes]
    c = cxcywh[rows]
    half = c[:, 2:4] / 2.0
    boxes = np.concatenate([c[:, :2] - half, c[:, :2] + half], axis=1)
    order = classwise_nms(boxes, conf, classes, t.iou)
    keep = order[: t.top_k]
    removed = np.ones(len(conf), dtype=bool)
    removed[order] = False
    gone = np.nonzero(removed)[0]
    gone = gone[np.argsort(-conf[gone], kind="stable")][: t.top_k]
    norm = np.array(
        [geometry.scale_x * geometry.orig_w, geometry.scale_y * geometry.orig_h] * 2, dtype=np.float32
    )

    def found(picked: np.ndarray) -> tuple[Detection, ...]:
        out = np.clip(boxes[picked] / norm, 0.0, 1.0).tolist()  # one conversion per array, not per number
        return tuple(Detection(labels[k], s, (b[0], b[1], b[2], b[3]))
                     for k, s, b in zip(classes[picked].tolist(), conf[picked].tolist(), out, strict=True))

    return Found(found(keep), found(gone))


class Decoder(ABC):
    """Raw outputs of one model to an Inference; the constructor checks labels against the model's outputs."""

    task: ClassVar[Task]

    @abstractmethod
    def __init__(self, spec: DecoderSpecBase, labels: Sequence[str], outputs: OutputShapes, width: int,
                 height: int) -> None:
        """Prepare for one model: its spec, labels, output shapes and input size; ModelError when they disagree."""

    @abstractmethod
    def inference(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds, *, model: tuple[str, str],
                  inference_ms: float) -> Inference:
        """Decode one frame's outputs into what `model` (name, version) concluded."""


class Classifier(Decoder):
    """A decoder whose result is a top-k of classes."""

    task = "classify"

    @abstractmethod
    def __call__(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds) -> tuple[Classification, ...]:
        """Descending top-k above the confidence threshold."""

    def inference(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds, *, model: tuple[str, str],
                  inference_ms: float) -> Inference:
        """Decode one frame's outputs into what `model` (name, version) concluded."""
        return Inference(model[0], model[1], self.task, inference_ms, classifications=self(outputs, geometry, t))


class Detector(Decoder):
    """A decoder whose result is boxes with labels."""

    task = "detect"

    @abstractmethod
    def boxes(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds) -> Found:
        """Boxes above the confidence threshold: those class-wise NMS kept, and those it removed (may be none)."""

    def __call__(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds) -> tuple[Detection, ...]:
        """Boxes above the confidence threshold after class-wise NMS."""
        return self.boxes(outputs, geometry, t).kept

    def inference(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds, *, model: tuple[str, str],
                  inference_ms: float) -> Inference:
        """Decode one frame's outputs into what `model` (name, version) concluded."""
        found = self.boxes(outputs, geometry, t)
        return Inference(model[0], model[1], self.task, inference_ms, detections=found.kept, hidden=found.removed)


class DecoderSpecBase(BaseModel):
    """A decoder's manifest entry: `type` names it, the other fields are its parameters; `decoder` builds it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    decoder: ClassVar[type[Decoder]]

    @property
    def task(self) -> Task:
        """What the decoder produces: a manifest's `task` must say the same."""
        return self.decoder.task

    def build(self, labels: Sequence[str], outputs: OutputShapes, width: int, height: int) -> Decoder:
        """The decoder for one model, checked against its labels and output shapes."""
        return self.decoder(self, labels, outputs, width, height)
