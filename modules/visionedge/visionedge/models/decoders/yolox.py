"""YOLOX anchor-free detectors: one output of every grid cell at strides 8/16/32, score = objectness x class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

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
)


class YoloxDecoder(Detector):
    """YOLOX anchor-free head: (x + grid) * stride, exp(w) * stride, score = obj * cls."""

    def __init__(self, spec: YoloxSpec, labels: Sequence[str], outputs: OutputShapes, width: int,
                 height: int) -> None:
        self.labels = labels
        self.output = next(iter(outputs))
        self.multi_label = spec.multi_label
        columns = outputs[self.output][-1]
        if isinstance(columns, int) and columns != 5 + len(labels):
            raise ModelError(f"labels file has {len(labels)} labels but the yolox output has {columns} columns "
                             "(5 + classes)")
        grids, strides = [], []
        for s in spec.strides:
            gy, gx = np.meshgrid(np.arange(height // s), np.arange(width // s), indexing="ij")
            grids.append(np.stack((gx, gy), axis=-1).reshape(-1, 2))
            strides.append(np.full((grids[-1].shape[0], 1), s))
        self.grid = np.concatenate(grids).astype(np.float32)
        self.stride = np.concatenate(strides).astype(np.float32)

    def boxes(self, outputs: dict[str, np.ndarray], geometry: Geometry, t: Thresholds) -> Found:
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


class YoloxSpec(DecoderSpecBase):
    """`decoder: {type: yolox, strides: [8, 16, 32], multi_label: true}`."""

    decoder: ClassVar[type[Decoder]] = YoloxDecoder

    type: Literal["yolox"]
    strides: list[int] = Field(default_factory=lambda: [8, 16, 32], description="grid strides in order")
    multi_label: bool = Field(True, description="keep every class above threshold per box (default: yes)")
