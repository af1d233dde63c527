"""A loaded, validated model: preprocess -> run -> decode, safe to call from one inference thread."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionedge.config import InferenceSettings, RuntimeSettings
from visionedge.errors import ModelError
from visionedge.frame import Geometry, Inference
from visionedge.models.choice import VariantChoice
from visionedge.models.decoders import Thresholds
from visionedge.models.manifest import ModelManifest
from visionedge.models.preprocess import Preprocessor
from visionedge.models.runtime import create_session

log = logging.getLogger(__name__)

DTYPES: dict[str, np.dtype[Any]] = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}


MAX_LABELS = 100_000
MAX_LABEL_CHARS = 1024
MAX_JSON_LABELS_BYTES = 16 << 20


def read_labels(path: Path) -> list[str]:
    """Labels from a text file (one per line, streamed) or JSON (a list, or an object keyed "0".."N-1"), bounded."""
    try:
        if path.suffix.lower() == ".json":
            return _json_labels(path)
        return _text_labels(path)
    except OSError as err:
        raise ModelError(f"cannot read labels file {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ModelError(f"labels file {path} is not UTF-8 text (byte {err.start} of a line)") from err


def _text_labels(path: Path) -> list[str]:
    """Line by line, so a huge file costs at most MAX_LABELS short lines of memory before it is refused."""
    labels: list[str] = []
    with path.open(encoding="utf-8", newline=None) as f:
        while line := f.readline(MAX_LABEL_CHARS + 1):
            if len(line) > MAX_LABEL_CHARS and not line.endswith("\n"):
                raise ModelError(f"labels file {path}: line {len(labels) + 1} is longer than "
                                 f"{MAX_LABEL_CHARS} characters")
            if len(labels) == MAX_LABELS:
                raise ModelError(f"labels file {path} has more than {MAX_LABELS} lines")
            labels.append(line.strip())
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise ModelError(f"labels file {path} is empty")
    return labels


def _json_labels(path: Path) -> list[str]:
    with path.open("rb") as f:
        data_bytes = f.read(MAX_JSON_LABELS_BYTES + 1)
    if len(data_bytes) > MAX_JSON_LABELS_BYTES:
        raise ModelError(f"labels file {path} is larger than {MAX_JSON_LABELS_BYTES >> 20} MiB")
    try:
        data = json.loads(data_bytes.decode("utf-8"))
    except json.JSONDecodeError as err:
        raise ModelError(f"labels file {path} is not valid JSON: {err.msg}") from err
    except RecursionError as err:
        raise ModelError(f"labels file {path} is nested too deeply to be a list of labels") from err
    if isinstance(data, dict):
        try:
            labels = [data[str(i)] for i in range(len(data))]
        except KeyError as err:
            raise ModelError(f"labels file {path} must be keyed 0..{len(data) - 1}; {err} is missing") from err
    elif isinstance(data, list):
        labels = data
    else:
        raise ModelError(f"labels file {path} must hold a JSON list or object")
    if not labels or len(labels) > MAX_LABELS:
        raise ModelError(f"labels file {path} must hold 1 to {MAX_LABELS} labels, not {len(labels)}")
    if not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in labels):
        raise ModelError(f"labels file {path}: every label must be a string (or a number), not a list or object")
    return [str(x) for x in labels]


@dataclass(frozen=True, slots=True)
class Signature:
    """The model's input geometry and outputs as read from the file."""

    input_name: str
    width: int
    height: int
    dtype: np.dtype
    outputs: dict[str, tuple[int | str | None, ...]]
    batchable: bool
    """The batch dimension is dynamic, so frames of several sources can share one run."""


def read_signature(session: object, manifest: ModelManifest) -> Signature:
    """Check the ONNX signature against the manifest and fill what the manifest leaves open."""
    inputs = session.get_inputs()  # type: ignore[attr-defined]
    by_name = {i.name: i for i in inputs}
    if manifest.input_name is not None:
        if manifest.input_name not in by_name:
            raise ModelError(f"manifest input {manifest.input_name!r} is not a model input "
                             f"(inputs: {', '.join(by_name)})")
        tensor = by_name[manifest.input_name]
    elif len(inputs) == 1:
        tensor = inputs[0]
    else:
        raise ModelError(f"model has {len(inputs)} inputs; name one with input_name ({', '.join(by_name)})")
    if tensor.type not in DTYPES:
        raise ModelError(f"model input {tensor.name!r} is {tensor.type}; only float32/float16 images are supported")
    shape = list(tensor.shape)
    if len(shape) != 4:
        raise ModelError(f"model input {tensor.name!r} has shape {shape}; an image input has 4 dimensions")
    c, h, w = (shape[1], shape[2], shape[3]) if manifest.layout == "NCHW" else (shape[3], shape[1], shape[2])
    if isinstance(c, int) and c != 3:
        raise ModelError(f"model input {tensor.name!r} has {c} channels in {manifest.layout} layout; expected 3")
    width = _dimension("width", w, manifest.width, tensor.name)
    height = _dimension("height", h, manifest.height, tensor.name)
    outputs = {o.name: tuple(o.shape) for o in session.get_outputs()}  # type: ignore[attr-defined]
    batch = shape[0]
    batchable = not isinstance(batch, int) and all(o and not isinstance(o[0], int) for o in outputs.values())
    return Signature(tensor.name, width, height, DTYPES[tensor.type], outputs, batchable)


def _dimension(what: str, in_model: int | str | None, in_manifest: int | None, name: str) -> int:
    if isinstance(in_model, int):
        if in_manifest is not None and in_manifest != in_model:
            raise ModelError(f"manifest {what} {in_manifest} does not match model input {name!r} {what} {in_model}")
        return in_model
    if in_manifest is None:
        raise ModelError(f"model input {name!r} has a variable {what}; set {what} in the manifest")
    return in_manifest


class Model:
    """One model ready to infer; construction verifies it end to end so a bad file never reaches the pipeline."""

    def __init__(self, manifest: ModelManifest, model_path: Path, labels_path: Path,
                 runtime: RuntimeSettings | None = None) -> None:
        self.manifest = manifest
        self.path = model_path
        self.labels_path = labels_path
        self.variant: VariantChoice | None = None
        """Which variant file this is and why it was chosen; set by models.variants.open_model."""
        self.labels = read_labels(labels_path)
        self.session, self.providers, self.layout = create_session(model_path, runtime or RuntimeSettings())
        self.signature = read_signature(self.session, manifest)
        sig = self.signature
        self.decode = manifest.decoder.build(self.labels, sig.outputs, sig.width, sig.height)
        self.preprocess = Preprocessor(manifest, sig.width, sig.height, sig.dtype)
        self.output_names = list(sig.outputs)
        self.thresholds = Thresholds(manifest.confidence, manifest.iou, manifest.top_k)
        self.smoke_test()

    @property
    def name(self) -> str:
        """Manifest name."""
        return self.manifest.name

    @property
    def batchable(self) -> bool:
        """Frames of several sources can share one run."""
        return self.signature.batchable

    @property
    def version(self) -> str:
        """Manifest version."""
        return self.manifest.version

    def set_overrides(self, overrides: InferenceSettings) -> None:
        """Apply twin threshold overrides on top of the manifest's defaults."""
        m = self.manifest
        self.thresholds = Thresholds(
            overrides.confidence if overrides.confidence is not None else m.confidence,
            overrides.iou if overrides.iou is not None else m.iou,
            overrides.top_k if overrides.top_k is not None else m.top_k,
        )

    def smoke_test(self) -> None:
        """Run a mid-grey probe: outputs must be finite and decodable; doubles as the warm-up inference."""
        probe = np.full((self.signature.height, self.signature.width, 3), 127, dtype=np.uint8)
        tensor, geometry = self.prepare(probe)
        raw, elapsed = self.run(tensor)
        self.finish(raw, geometry, elapsed, "a probe input")

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """Stage 1, any thread: a BGR frame to this model's input tensor and the geometry to map boxes back."""
        return self.preprocess(image)

    def run(self, tensor: np.ndarray) -> tuple[list[np.ndarray], float]:
        """Stage 2, the inference thread: raw outputs and the milliseconds session.run took."""
        start = time.perf_counter()
        raw: list[np.ndarray] = self.session.run(None, {self.signature.input_name: tensor})
        return raw, (time.perf_counter() - start) * 1000.0

    def run_batch(self, tensors: list[np.ndarray]) -> tuple[list[list[np.ndarray]], float]:
        """Stage 2 for several frames in one session.run (a model with a dynamic batch dimension): per-frame outputs."""
        start = time.perf_counter()
        raw: list[np.ndarray] = self.session.run(None, {self.signature.input_name: np.concatenate(tensors)})
        elapsed = (time.perf_counter() - start) * 1000.0
        return [[out[i:i + 1] for out in raw] for i in range(len(tensors))], elapsed

    def finish(self, raw: list[np.ndarray], geometry: Geometry, elapsed_ms: float,
               what: str = "this frame") -> Inference:
        """Stage 3, any thread: refuse NaN/inf outputs (decoders would read them as 'nothing seen'), then decode."""
        for name, value in zip(self.output_names, raw, strict=True):
            if not np.isfinite(value).all():
                raise ModelError(f"model output {name!r} is not finite (NaN or inf) on {what}")
        return self.decode.inference(dict(zip(self.output_names, raw, strict=True)), geometry, self.thresholds,
                                     model=(self.name, self.version), inference_ms=elapsed_ms)

    def infer(self, image: np.ndarray) -> Inference:
        """Labels for one BGR frame: the three stages on this thread."""
        tensor, geometry = self.prepare(image)
        raw, elapsed = self.run(tensor)
        return self.finish(raw, geometry, elapsed)
