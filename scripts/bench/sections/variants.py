"""variants: inf/s and agreement (visionedge.compare against the deployed file) of each variant (deployed fp16/fp32,
fp32, int8 from `models quantize`) on each execution provider onnxruntime offers (OpenVINO when the
onnxruntime-openvino build is installed)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from visionedge.app import make_fetcher
from visionedge.config import RuntimeSettings, load_config
from visionedge.models.catalog import SAMPLE_VIDEO
from visionedge.models.fetch import resolve_model
from visionedge.models.model import Model

from bench.common import ensure_variants, machine_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This section's own options."""
    parser.add_argument("--variants-dir", type=Path, default=Path(tempfile.gettempdir()) / "visionedge-bench-variants",
                        help="variants: where the int8/fp32 variants are made, or reused when already there")
    parser.add_argument("--variant-runs", type=int, default=100, help="variants: timed runs per variant and provider")


def run(args: argparse.Namespace) -> int:
    """Inferences per second and agreement for each variant of each model on each execution provider offered."""
    from visionedge.compare import compare_frames
    from visionedge.models.variants import discover, time_models
    from visionedge.quantize import MEASURE_FRAMES, picked_frames, sample_frames

    config = load_config()
    fetcher = make_fetcher(config)
    video = fetcher.media(SAMPLE_VIDEO)
    root = args.variants_dir
    providers = [p for p in ("OpenVINOExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    print(f"{machine_line()}; providers {', '.join(providers)}; variants in {root}")
    head = f"{'model':<12} {'variant':<8} {'provider':<10} {'inf/s':>7} {'ms p50':>7} {'agreement':>10} {'frames':>7}"
    print(head)
    print("-" * len(head))
    calibrated = picked_frames([video], list(sample_frames([video], 20)))  # what `models quantize` calibrates on
    for name in args.models:
        resolved = resolve_model(name, fetcher)
        ensure_variants(name, config, root)
        files = {"deployed": (resolved.manifest, resolved.model_path, resolved.labels_path)}
        files |= {c.kind: (c.manifest, c.path, c.labels) for c in discover(resolved.model_path, root)}
        threads = config.desired.runtime.intra_op_threads
        reference = Model(*files["deployed"], RuntimeSettings(providers=["cpu"], intra_op_threads=threads))
        for provider in providers:
            runtime = RuntimeSettings(providers=[provider], intra_op_threads=threads)
            models = {kind: Model(*spec, runtime) for kind, spec in files.items()}
            timings = time_models(models, runs=args.variant_runs)
            for kind, model in models.items():
                figures = compare_frames(reference, model, sample_frames([video], MEASURE_FRAMES, calibrated)).figures()
                agreement = "undefined" if figures.agreement is None else f"{figures.agreement:.3f}"
                label = kind if kind != "deployed" else ("fp16*" if model.signature.dtype == np.float16 else "fp32*")
                print(f"{name:<12} {label:<8} {provider.removesuffix('ExecutionProvider'):<10} "
                      f"{1000 / timings[kind]:>7.1f} {timings[kind]:>7.2f} {agreement:>10} {figures.frames:>7}")
    print()
    print("*: the deployed file. inf/s: session.run alone, median of interleaved runs on one frame. agreement: "
          "visionedge.compare against the deployed file on the CPU provider (classifiers top-1, detectors F1), "
          f"on {MEASURE_FRAMES} vtest frames the calibration never saw.")
    return 0
