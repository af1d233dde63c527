"""The decoder plug-in point: raw model outputs to labels.

A decoder is one class (a `Classifier` or `Detector` from `base`) and one spec (a `DecoderSpecBase` with a literal
`type` and its parameters); its constructor checks the labels against the model's outputs. `DecoderSpec` below is
the only list of them: the manifest's `decoder` field is validated against it, and `spec.build(...)` makes the
decoder. To add one, write its module and name its spec here.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import BeforeValidator, Field

from visionedge.models.decoders.base import Decoder, DecoderSpecBase, Thresholds, classwise_nms, nms
from visionedge.models.decoders.classification import ClassificationDecoder, ClassificationSpec
from visionedge.models.decoders.yolo import YoloAnchorDecoder, YoloHead, YoloSpec
from visionedge.models.decoders.yolox import YoloxDecoder, YoloxSpec

AnySpec = ClassificationSpec | YoloxSpec | YoloSpec
"""Every decoder a manifest can name: the one list to extend."""


def without_merge_residue(value: Any) -> Any:
    """Drop keys that only other decoders have: IoT Hub merges desired patches key by key, so a model block whose
    decoder `type` changed keeps the old decoder's keys unless the operator nulls each one. Typos are still refused."""
    if not isinstance(value, dict):
        return value
    specs: tuple[type[DecoderSpecBase], ...] = get_args(AnySpec)
    own = next((s for s in specs if value.get("type") in get_args(s.model_fields["type"].annotation)), None)
    if own is None:
        return value
    others = {key for s in specs if s is not own for key in s.model_fields} - set(own.model_fields)
    return {key: item for key, item in value.items() if key not in others}


DecoderSpec = Annotated[AnySpec, Field(discriminator="type"), BeforeValidator(without_merge_residue)]
"""A manifest's `decoder`, told apart by `type`."""

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
