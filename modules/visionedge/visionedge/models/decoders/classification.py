"""Classifiers: top-k of a probability (or logit) vector."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from visionedge.errors import ModelError
from visionedge.frame import Classification, Geometry
from visionedge.models.decoders.base import Classifier, Decoder, DecoderSpecBase, OutputShapes, Thresholds, softmax


class ClassificationDecoder(Classifier):
    """Top-k of the model's only output, optionally through softmax first."""

    def __init__(self, spec: ClassificationSpec, labels: Sequence[str], outputs: OutputShapes, width: int,
                 height: int) -> None:
        self.softmax = spec.softmax
        self.labels = labels
        self.output = next(iter(outputs))
        shape = outputs[self.output]
        dims = [d for d in shape if isinstance(d, int)]
        classes = math.prod(dims[1:]) if len(dims) == len(shape) else None
        if classes is not None and classes != len(labels):
            raise ModelError(f"labels file has {len(labels)} labels but the model outputs {classes} classes")

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


class ClassificationSpec(DecoderSpecBase):
    """`decoder: {type: classification, softmax: false}`."""

    decoder: ClassVar[type[Decoder]] = ClassificationDecoder

    type: Literal["classification"]
    softmax: bool = Field(False, description="apply softmax (False when outputs are probabilities)")
