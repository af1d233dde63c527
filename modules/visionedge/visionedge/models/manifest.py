"""Model manifests: everything needed to preprocess for, run and decode one ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visionedge.config import describe_validation_error, read_yaml
from visionedge.errors import ModelError
from visionedge.models.decoders import DecoderSpec
from visionedge.tasks import TaskName


class VariantInfo(BaseModel):
    """How a variant file was made from its reference model, and how far it agrees with it (`models quantize`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["fp32", "fp16", "int8"]
    reference_file: str = Field(min_length=1, description="file name of the model this variant was made from")
    reference_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="its sha256: the variant is used only "
                                  "with exactly that file")
    agreement: float | None = Field(None, ge=0.0, le=1.0, description="visionedge.compare agreement with the "
                                    "reference (top-1 share or detection F1); None when undefined")
    agreement_frames: int = Field(0, ge=0, description="frames the agreement was measured on")
    latency_ratio: float | None = Field(None, description="p95 latency of the variant over the reference's")
    calibration: list[str] = Field(default_factory=list, description="calibration media (file names)")
    calibration_frames: int = Field(0, ge=0)
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict,
                                                          description="quantization settings used")


class ModelManifest(BaseModel):
    """A model's contract; fields left None are read from the ONNX file itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    version: str = Field("1", min_length=1, max_length=64)
    task: TaskName
    file: str = Field(min_length=1, description="the .onnx file, relative to the manifest or the model cache")
    labels: str = Field(min_length=1, description="labels file: one per line, or a JSON list/object")
    input_name: str | None = None
    width: int | None = Field(None, gt=0, le=8192)
    height: int | None = Field(None, gt=0, le=8192)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["BGR", "RGB"] = "BGR"
    scale: float = Field(1.0, gt=0, description="pixel values (0..255) are multiplied by this first")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: Literal["stretch", "letterbox"] = "stretch"
    letterbox_fill: int = Field(114, ge=0, le=255)
    decoder: DecoderSpec
    confidence: float = Field(0.3, ge=0.0, le=1.0)
    iou: float = Field(0.45, gt=0.0, le=1.0)
    top_k: int = Field(5, ge=1, le=1000)
    variant: VariantInfo | None = Field(None, description="set on variant files written by `models quantize`")

    @model_validator(mode="after")
    def _task_matches_decoder(self) -> ModelManifest:
        if self.task != self.decoder.task:
            raise ValueError(f"task {self.task!r} does not fit decoder {self.decoder.type!r} "
                             f"(expects {self.decoder.task!r})")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self


def parse_manifest(data: Any, origin: str) -> ModelManifest:
    """Validate a manifest mapping; the error names the origin and every bad field."""
    if not isinstance(data, dict):
        raise ModelError(f"model manifest {origin} must be a mapping")
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as err:
        raise ModelError(f"invalid model manifest {origin}: {describe_validation_error(err)}") from err


def load_manifest(path: Path) -> ModelManifest:
    """Read a manifest YAML file."""
    return parse_manifest(read_yaml(path, "model manifest", ModelError), str(path))
