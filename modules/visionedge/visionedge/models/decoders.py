"""Raw model outputs to labels: vectorised numpy, class-wise NMS, boxes normalised to the original frame."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from visionedge.errors import ModelError
from visionedge.frame import Classification, Detection
from visionedge.models.manifest import DecoderSpec
from visionedge.models.preprocess import Geometry


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


def detections_from_scores(
    cxcywh: np.ndarray, scores: np.ndarray, labels: Sequence[str], geometry: Geometry, t: Thresholds,
    multi_label: bool,
) -> tuple[Detection, ...]:
    """Threshold per (box, class) or per box's best class, class-wise NMS, boxes back to the original frame."""
    if multi_label:
        rows, classes = np.nonzero(scores > t.confidence)
    else:
        best = scores.argmax(axis=1)
        rows = np.nonzero(scores[np.arange(scores.shape[0]), best] > t.confidence)[0]
        classes = best[rows]
    if rows.size == 0:
        return ()
    conf = scores[rows, classes]
    c = cxcywh[rows]
    half = c[:, 2:4] / 2.0
    boxes = np.concatenate([c[:, :2] - half, c[:, :2] + half], axis=1)
    keep = classwise_nms(boxes, conf, classes, t.iou)[: t.top_k]
    norm = np.array(
        [geometry.scale_x * geometry.orig_w, geometry.scale_y * geometry.orig_h] * 2, dtype=np.float32
    )
    out = np.clip(boxes[keep] / norm, 0.0, 1.0)
    return tuple(
        Detection(labels[int(k)], float(s), (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
        for k, s, b in zip(classes[keep], conf[keep], out, strict=True)
    )



class ClassificationDecoder:
    """Top-k of a probability (or logit) vector."""

    def __init__(self, spec: DecoderSpec, labels: Sequence[str], outputs: dict[str, tuple[int | str | None, ...]],
                 width: int, height: int) -> None:
        self.softmax = spec.softmax
        self.labels = labels
        self.output = next(iter(outputs))

    def __call__(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds) -> tuple[Classification, ...]:
        """Descending top-k above the confidence threshold."""
        probs = outputs[self.output].reshape(-1).astype(np.float32)
        if self.softmax:
            probs = softmax(probs)
        k = min(t.top_k, probs.size)
        idx = np.argpartition(-probs, k - 1)[:k]
        idx = idx[np.argsort(-probs[idx], kind="stable")]
        return tuple(
            Classification(self.labels[int(i)], float(probs[i])) for i in idx if probs[i] >= t.confidence
        )


class YoloxDecoder:
    """YOLOX anchor-free head: (x + grid) * stride, exp(w) * stride, score = obj * cls."""

    def __init__(self, spec: DecoderSpec, labels: Sequence[str], outputs: dict[str, tuple[int | str | None, ...]],
                 width: int, height: int) -> None:
        self.labels = labels
        self.output = next(iter(outputs))
        self.multi_label = spec.multi_label is not False
        grids, strides = [], []
        for s in spec.strides:
            gy, gx = np.meshgrid(np.arange(height // s), np.arange(width // s), indexing="ij")
            grids.append(np.stack((gx, gy), axis=-1).reshape(-1, 2))
            strides.append(np.full((grids[-1].shape[0], 1), s))
        self.grid = np.concatenate(grids).astype(np.float32)
        self.stride = np.concatenate(strides).astype(np.float32)

    def __call__(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds) -> tuple[Detection, ...]:
        """Decode every cell at once."""
        pred = np.asarray(outputs[self.output], dtype=np.float32).reshape(-1, 5 + len(self.labels))
        if pred.shape[0] != self.grid.shape[0]:
            raise ModelError(
                f"yolox output has {pred.shape[0]} cells; strides and input size give {self.grid.shape[0]}"
            )
        # score = obj * cls <= obj: only cells whose objectness clears the threshold can give a detection.
        rows = np.nonzero(pred[:, 4] > t.confidence)[0]
        pred, grid, stride = pred[rows], self.grid[rows], self.stride[rows]
        cxcywh = np.concatenate([(pred[:, :2] + grid) * stride, np.exp(pred[:, 2:4]) * stride], axis=1)
        scores = pred[:, 4:5] * pred[:, 5:]
        return detections_from_scores(cxcywh, scores, self.labels, geometry, t, self.multi_label)


class YoloAnchorDecoder:
    """Darknet anchor grids (Tiny-YOLOv2 / YOLOv3-tiny): sigmoid xy and objectness, exp(wh) * anchor."""

    def __init__(self, spec: DecoderSpec, labels: Sequence[str], outputs: dict[str, tuple[int | str | None, ...]],
                 width: int, height: int) -> None:
        self.labels = labels
        self.width = width
        self.height = height
        self.softmax = spec.class_activation == "softmax"
        self.grid_units = spec.anchor_units == "grid"
        self.multi_label = spec.multi_label is True
        names = list(outputs)
        self.heads: list[tuple[str, np.ndarray]] = []
        for head in spec.heads:
            name = head.output if head.output is not None else names[0]
            if name not in outputs:
                raise ModelError(f"decoder head output {name!r} is not a model output (outputs: {', '.join(names)})")
            anchors = np.asarray(head.anchors, dtype=np.float32)
            channels = outputs[name][1] if len(outputs[name]) == 4 else None
            expected = len(anchors) * (5 + len(labels))
            if isinstance(channels, int) and channels != expected:
                raise ModelError(
                    f"output {name!r} has {channels} channels; {len(anchors)} anchors x (5 + {len(labels)} labels) "
                    f"= {expected}"
                )
            self.heads.append((name, anchors))

    def __call__(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds) -> tuple[Detection, ...]:
        """Decode all heads, then one class-wise NMS across them."""
        n_cls = len(self.labels)
        boxes, scores = [], []
        for name, anchors in self.heads:
            raw = outputs[name]
            n_a = anchors.shape[0]
            _, _, gh, gw = raw.shape
            p = raw.reshape(n_a, 5 + n_cls, gh, gw).transpose(0, 2, 3, 1).astype(np.float32)  # A, gh, gw, 5+C
            gy, gx = np.meshgrid(np.arange(gh, dtype=np.float32), np.arange(gw, dtype=np.float32), indexing="ij")
            cx = (sigmoid(p[..., 0]) + gx) / gw * self.width
            cy = (sigmoid(p[..., 1]) + gy) / gh * self.height
            aw = anchors[:, 0, None, None]
            ah = anchors[:, 1, None, None]
            if self.grid_units:
                aw = aw / gw * self.width
                ah = ah / gh * self.height
            w = np.exp(p[..., 2]) * aw
            h = np.exp(p[..., 3]) * ah
            obj = sigmoid(p[..., 4])
            cls = softmax(p[..., 5:]) if self.softmax else sigmoid(p[..., 5:])
            boxes.append(np.stack([cx, cy, w, h], axis=-1).reshape(-1, 4))
            scores.append((obj[..., None] * cls).reshape(-1, n_cls))
        return detections_from_scores(
            np.concatenate(boxes), np.concatenate(scores), self.labels, geometry, t, self.multi_label
        )


DECODERS: dict[str, type[ClassificationDecoder] | type[YoloxDecoder] | type[YoloAnchorDecoder]] = {
    "classification": ClassificationDecoder,
    "yolox": YoloxDecoder,
    "yolo": YoloAnchorDecoder,
}
