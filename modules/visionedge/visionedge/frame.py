"""Values that flow between pipeline stages: a frame in, an inference result out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from visionedge.tasks import task_of


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image with where and when it was taken, so results can be traced to it."""

    image: np.ndarray = field(repr=False)
    source_id: str
    index: int
    timestamp: float
    """Capture time, seconds since the epoch."""


@dataclass(frozen=True, slots=True)
class Classification:
    """One class of a classifier's top-k."""

    label: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Detection:
    """One object; the box is x1, y1, x2, y2 normalised to 0..1 of the original frame."""

    label: str
    confidence: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Inference:
    """What one model concluded about one frame; names the model version so swaps stay traceable."""

    model_name: str
    model_version: str
    task: str
    inference_ms: float
    classifications: tuple[Classification, ...] = ()
    detections: tuple[Detection, ...] = ()
    hidden: tuple[Detection, ...] = ()
    """Boxes NMS removed under a more confident box of their class: never a result (not sent, not counted), only a
    tracker's evidence that an object it follows is still there, behind another."""

    def labels(self) -> list[str]:
        """The labels this result asserts, in order of confidence."""
        return [item.label for item in task_of(self.task).items(self)]


@dataclass(frozen=True, slots=True)
class Geometry:
    """How a frame maps into a model input (preprocess makes it, decoders read it): input_xy = original_xy * scale."""

    orig_w: int
    orig_h: int
    scale_x: float
    scale_y: float
