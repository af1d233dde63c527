"""Darknet anchor-grid detectors (Tiny-YOLOv2, YOLOv3-tiny): one or more heads, each with its anchors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from visionedge.errors import ModelError
from visionedge.frame import Geometry
from visionedge.models.decoders.base import (
    Decoder,
    DecoderSpecBase,
    Detector,
    Found,
    OutputShapes,
    Thresholds,
    detections_from_scores,
    sigmoid,
    softmax,
)


class YoloAnchorDecoder(Detector):
    """Darknet anchor grids (Tiny-YOLOv2 / YOLOv3-tiny): sigmoid xy and objectness, exp(wh) * anchor."""

    def __init__(self, spec: YoloSpec, labels: Sequence[str], outputs: OutputShapes, width: int,
                 height: int) -> None:
        self.labels = labels
        self.width = width
        self.height = height
        self.softmax = spec.class_activation == "softmax"
        self.grid_units = spec.anchor_units == "grid"
        self.multi_label = spec.multi_label
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

    def boxes(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds) -> Found:
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


class YoloHead(BaseModel):
    """One anchor-grid output: which tensor, and the anchors that belong to it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    output: str | None = Field(None, description="output tensor name; None = the model's only output")
    anchors: list[tuple[float, float]] = Field(min_length=1)


class YoloSpec(DecoderSpecBase):
    """`decoder: {type: yolo, heads: [{output, anchors}], anchor_units, class_activation, multi_label}`."""

    decoder: ClassVar[type[Decoder]] = YoloAnchorDecoder

    type: Literal["yolo"]
    heads: list[YoloHead] = Field(default_factory=list, description="anchor grids")
    anchor_units: Literal["grid", "pixels"] = "pixels"
    class_activation: Literal["sigmoid", "softmax"] = "sigmoid"
    multi_label: bool = Field(False, description="keep every class above threshold per box (default: best class)")

    @model_validator(mode="after")
    def _at_least_one_head(self) -> YoloSpec:
        if not self.heads:
            raise ValueError("decoder type 'yolo' needs at least one entry in 'heads'")
        return self
