"""Which file of a model runs here: the one deployed, or a variant of it (fp32, int8 from `models quantize`) that is
faster on this device and agrees with it well enough.

Variants live in `<variants root>/<first 16 hex of the model file's sha256>/<kind>.yaml` (+ .onnx), each manifest
recording the exact file it was made from, so a variant never outlives its model. `runtime.variant`:
- `auto`: load every variant, time them here (alternating blocks of consecutive runs, median), take the fastest
  whose recorded agreement with the deployed file is at least `runtime.min_variant_agreement` (the deployed file
  itself always qualifies);
- `fp32` / `fp16` / `int8`: that variant, or a one-line error when there is none;
- a path to an .onnx or manifest .yaml: that file, with the deployed model's manifest unless a .yaml is given.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visionedge.config import LocalSettings, RuntimeSettings
from visionedge.download import sha256_file
from visionedge.errors import ModelError, VisionEdgeError
from visionedge.models.choice import VariantChoice
from visionedge.models.manifest import ModelManifest, load_manifest
from visionedge.models.model import Model

log = logging.getLogger(__name__)

KINDS = ("fp32", "fp16", "int8")
TIMING_RUNS = 30
"""Timed runs per variant ("a few dozen"), after WARMUP_RUNS untimed ones."""
WARMUP_RUNS = 3
BLOCK_RUNS = 6
"""Consecutive runs of one variant before the next one's: a device runs one model frame after frame, and int8
kernels lose a quarter of their speed when every run follows another model's (docs/benchmarks.md, int8 levers)."""

Timer = Callable[[Mapping[str, Model]], dict[str, float]]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A variant file found for the deployed model; agreement None marks the deployed file itself."""

    kind: str
    manifest: ModelManifest
    path: Path
    labels: Path
    agreement: float | None


def variants_root(local: LocalSettings) -> Path:
    """Where `models quantize` writes variants and loading looks for them."""
    return local.cache() / "variants"


def variants_folder(root: Path, model_path: Path) -> Path:
    """The variants of one exact model file: keyed by its sha256, so they never outlive it."""
    return root / sha256_file(model_path)[:16]


def kind_of(model: Model) -> str:
    """A loaded model's variant kind: from its manifest when it is a variant, else from its input type."""
    if model.manifest.variant is not None:
        return model.manifest.variant.kind
    return "fp16" if model.signature.dtype == np.float16 else "fp32"


def discover(model_path: Path, root: Path | None) -> list[Candidate]:
    """Variants recorded for exactly this model file (by sha256); unreadable ones are skipped with a warning."""
    if root is None:
        return []
    digest = sha256_file(model_path)
    folder = root / digest[:16]
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            manifest = load_manifest(path)
        except VisionEdgeError as err:
            log.warning("variant %s ignored: %s", path, err)
            continue
        info = manifest.variant
        if info is None or info.reference_sha256 != digest:
            continue
        found.append(Candidate(info.kind, manifest, path.parent / manifest.file, path.parent / manifest.labels,
                               info.agreement))
    return found


def choose(reference: str, candidates: Sequence[Candidate], timings_ms: Mapping[str, float],
           min_agreement: float) -> tuple[str, str]:
    """The fastest kind that qualifies (the reference always does) and a one-line reason."""
    agreement = {c.kind: c.agreement for c in candidates}
    eligible = [reference] + [k for k, a in agreement.items() if a is not None and a >= min_agreement]
    refused = [f"{k} (agreement {'undefined' if a is None else f'{a:.3f}'} < {min_agreement:g})"
               for k, a in agreement.items() if k not in eligible]
    best = min((k for k in eligible if k in timings_ms), key=lambda k: timings_ms[k])
    timed = ", ".join(f"{k} {timings_ms[k]:.2f} ms" for k in sorted(timings_ms, key=timings_ms.__getitem__))
    reason = f"fastest qualifying: {timed}" + (f"; not eligible: {', '.join(refused)}" if refused else "")
    return best, reason


def time_models(models: Mapping[str, Model], runs: int = TIMING_RUNS) -> dict[str, float]:
    """Median milliseconds of session.run per model on the same frame, in alternating blocks of consecutive runs so
    load affects all alike and each is timed as a device runs it."""
    rng = np.random.default_rng(0)
    inputs = {}
    for kind, model in models.items():
        image = rng.integers(0, 256, (model.signature.height, model.signature.width, 3), dtype=np.uint8)
        inputs[kind] = model.prepare(image)[0]
        for _ in range(WARMUP_RUNS):
            model.run(inputs[kind])
    samples: dict[str, list[float]] = {kind: [] for kind in models}
    for start in range(0, runs, BLOCK_RUNS):
        for kind, model in models.items():
            for _ in range(min(BLOCK_RUNS, runs - start)):
                samples[kind].append(model.run(inputs[kind])[1])
    return {kind: statistics.median(values) for kind, values in samples.items()}


def open_model(manifest: ModelManifest, model_path: Path, labels_path: Path, runtime: RuntimeSettings,
               root: Path | None, timer: Timer = time_models) -> Model:
    """Load the model file `runtime.variant` asks for (see the module docstring); the result records the choice."""
    requested = runtime.variant
    deployed = Model(manifest, model_path, labels_path, runtime)
    reference = kind_of(deployed)
    if requested not in ("auto", *KINDS):
        return _explicit_file(Path(requested), deployed, runtime)
    candidates = [c for c in discover(model_path, root) if c.kind != reference]
    if requested == reference or (requested == "auto" and not candidates):
        why = "the deployed file" if requested != "auto" else "no variants of this model file"
        return _chosen(deployed, VariantChoice(requested, reference, model_path.name, why))
    if requested != "auto":
        match = next((c for c in candidates if c.kind == requested), None)
        if match is None:
            kinds = ", ".join([reference] + [c.kind for c in candidates])
            raise ModelError(f"runtime.variant {requested}: {manifest.name} {manifest.version} has no {requested} "
                             f"variant of {model_path.name} (here: {kinds}; `visionedge models quantize` makes one)")
        return _chosen(Model(match.manifest, match.path, match.labels, runtime),
                       VariantChoice(requested, requested, match.path.name, "requested", {}, match.agreement))
    models = {reference: deployed}
    for candidate in candidates:
        try:
            models[candidate.kind] = Model(candidate.manifest, candidate.path, candidate.labels, runtime)
        except VisionEdgeError as err:
            log.warning("variant %s of %s ignored: %s", candidate.kind, manifest.name, err)
    timings = timer(models)
    loaded = [c for c in candidates if c.kind in models]
    best, reason = choose(reference, loaded, timings, runtime.min_variant_agreement)
    agreement = next((c.agreement for c in candidates if c.kind == best), None)
    return _chosen(models[best], VariantChoice("auto", best, models[best].path.name, reason, timings, agreement))


def _explicit_file(path: Path, deployed: Model, runtime: RuntimeSettings) -> Model:
    """runtime.variant names a file: an .onnx runs with the deployed manifest, a .yaml with its own."""
    if not path.is_file():
        raise ModelError(f"runtime.variant {path}: no such file")
    if path.suffix.lower() in (".yaml", ".yml"):
        manifest = load_manifest(path)
        model = Model(manifest, path.parent / manifest.file, path.parent / manifest.labels, runtime)
    else:
        model = Model(deployed.manifest, path, Path(deployed.labels_path), runtime)
    agreement = model.manifest.variant.agreement if model.manifest.variant is not None else None
    return _chosen(model, VariantChoice(str(path), kind_of(model), model.path.name, "requested file", {}, agreement))


def _chosen(model: Model, choice: VariantChoice) -> Model:
    model.variant = choice
    log.info("model %s %s: variant %s (%s, runtime.variant %s): %s", model.name, model.version, choice.chosen,
             choice.file, choice.requested, choice.reason)
    return model
