"""The decoder plug-in point: raw model outputs to labels.

A decoder is one class (a `Classifier` or `Detector` from `base`) and one spec (a `DecoderSpecBase` with a literal
`type` and its parameters); its constructor checks the labels against the model's outputs. `DecoderSpec` below is
the only list of them: the manifest's `decoder` field is validated against it, and `spec.build(...)` makes the
decoder. To add one, write its module and name its spec here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from visionedge.models.decoders.base import Decoder, DecoderSpecBase, Thresholds, classwise_nms, nms
from visionedge.models.decoders.classification import ClassificationDecoder, ClassificationSpec
from visionedge.models.decoders.yolo import YoloAnchorDecoder, YoloHead, YoloSpec
from visionedge.models.decoders.yolox import YoloxDecoder, YoloxSpec

DecoderSpec = Annotated[ClassificationSpec | YoloxSpec | YoloSpec, Field(discriminator="type")]
"""Every decoder a manifest can name, told apart by `type`."""

__all__ = [
    "ClassificationDecoder",
    "ClassificationSpec",
    "Decoder",
    "DecoderSpec",
    "DecoderSpecBase",
    "Thresholds",
    "YoloAnchorDecoder",
    "YoloHead",
    "YoloSpec",
    "YoloxDecoder",
    "YoloxSpec",
    "classwise_nms",
    "nms",
]
