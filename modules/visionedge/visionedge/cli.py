"""Command line: analyze files, run the module locally or under IoT Edge, fetch models."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeAlias

from pydantic import ValidationError

from visionedge import __version__
from visionedge.analytics.events import AnalyticsEvent
from visionedge.analytics.live import SceneAnalytics
from visionedge.analytics.offline import MotWriter, load_settings, summary, write_preview
from visionedge.app import (
    check_data_dir,
    install_stop_handlers,
    load_model,
    make_fetcher,
    sample_video,
    stop_after,
)
from visionedge.assembly import Assembly
from visionedge.compare import Figures, FrameComparison, compare_frames
from visionedge.config import ModuleConfig, SourceSettings, describe_validation_error, load_config
from visionedge.errors import ConfigError, VisionEdgeError
from visionedge.fleet import cli as fleet_cli
from visionedge.frame import Frame, Inference
from visionedge.gate import GateStats
from visionedge.intake import refuse_overlap
from visionedge.logs import setup_logging
from visionedge.models.catalog import ASSETS, DEFAULT_MODEL, assets_for, builtin_manifest, builtin_names
from visionedge.models.fetch import Fetcher, resolve_model
from visionedge.pipeline import Pipeline, PipelineStats
from visionedge.quantize import MEASURE_FRAMES, quantize
from visionedge.report import Outputs, ReportBuilder, check_inputs, report_from_files
from visionedge.sinks import jsonl_sink, parse_sink, stdout_sink
from visionedge.sources import open_source
from visionedge.tasks import task_of

log = logging.getLogger("visionedge")

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their options."""
    parser = argparse.ArgumentParser(prog="visionedge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"visionedge {__version__}")
    parser.add_argument("--config", type=Path, help="YAML config file (default: $VISIONEDGE_CONFIG)")
    parser.add_argument("--data-dir", type=Path,
                        help="model cache, outbox and snapshots (default: $VISIONEDGE_DATA_DIR)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", choices=["text", "json"])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_analyze_parser, _report_parser, _run_parser, _compare_parser, _models_parser, fleet_cli.add_parser):
        add(sub)
    return parser


def _analyze_parser(sub: Subparsers) -> None:
    """`analyze`: records for an image, folder or video, optionally with a report and exports."""
    analyze = sub.add_parser("analyze", help="analyse an image, a folder of images or a video file, frame by frame")
    analyze.add_argument("path", help="image, folder or video file")
    _model_options(analyze)
    analyze.add_argument("--jsonl", type=Path, help="write records here instead of stdout")
    analyze.add_argument("--no-progress", action="store_true", help="no progress bar")
    analyze.add_argument("--report", type=Path, help="also write an HTML report, with key-frame pictures, here")
    analyze.add_argument("--analytics", type=Path, metavar="FILE.yaml",
                         help="track objects and count line crossings and zone stays (one source's `analytics` "
                         "settings); records carry track_id and scene, the counts are printed at the end")
    analyze.add_argument("--mot", type=Path, metavar="OUT.txt", help="with --analytics: write the tracks here in "
                         "MOTChallenge format")
    analyze.add_argument("--mot-classes", nargs="+", metavar="LABEL", help="with --mot: write only the tracks of "
                         "these labels (e.g. person, to score against a pedestrian ground truth); default every label")
    analyze.add_argument("--preview", type=Path, metavar="FRAME.png", help="with --analytics: draw its lines and "
                         "zones on the first frame, write the picture and stop")
    _export_options(analyze)


def _report_parser(sub: Subparsers) -> None:
    """`report`: the offline HTML report from JSONL files already written."""
    report = sub.add_parser("report", help="an offline HTML report (and CSV/Parquet exports) from result JSONL files")
    report.add_argument("inputs", nargs="+", type=Path, help="JSONL files written by analyze or run")
    report.add_argument("-o", "--output", type=Path, help="the HTML report to write")
    report.add_argument("--title", default="visionedge report", help="the report's heading")
    report.add_argument("--no-progress", action="store_true", help="no progress bar")
    _export_options(report)


def _run_parser(sub: Subparsers) -> None:
    """`run`: the long-running module."""
    run = sub.add_parser("run", help="the long-running module (IoT Edge when IOTEDGE_* is set, else local)")
    run.add_argument("--source", help="file, folder, camera index, /dev/videoN, rtsp:// or http:// URL, or 'sample'")
    _model_options(run)
    run.add_argument("--fps", type=float, help="target analysis rate")
    run.add_argument("--sink", action="append", help="stdout (default) or jsonl:PATH; repeatable")
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument("--no-loop", action="store_true", help="stop at the end of a video file")


def _compare_parser(sub: Subparsers) -> None:
    """`compare`: two models over the same frames."""
    compare = sub.add_parser("compare", help="run two models over the same frames and say how far they agree")
    compare.add_argument("path", help="image, folder or video file")
    compare.add_argument("--model", required=True, help="the model in use: built-in name or .onnx/.yaml path")
    compare.add_argument("--against", required=True, help="the candidate: built-in name or .onnx/.yaml path")
    compare.add_argument("--manifest", type=Path, help="manifest for --model given as .onnx")
    compare.add_argument("--against-manifest", type=Path, help="manifest for --against given as .onnx")
    compare.add_argument("--every", type=int, default=1, help="compare every Nth frame (default 1)")
    compare.add_argument("--max-frames", type=int, help="stop after comparing this many frames")
    compare.add_argument("--worst", type=int, default=5, help="frames shown where the two disagree most (default 5)")
    compare.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    compare.add_argument("--jsonl", type=Path, help="also write one comparison record per frame here")
    compare.add_argument("--report", type=Path,
                         help="also write an HTML comparison view: figures, label counts, worst frames side by side")


def _models_parser(sub: Subparsers) -> None:
    """`models list|fetch|quantize`."""
    models = sub.add_parser("models", help="list or fetch models")
    msub = models.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="built-in models and whether they are cached")
    fetch = msub.add_parser("fetch", help="download (or copy from a mirror) and verify models")
    fetch.add_argument("names", nargs="*", help="model names (default: every model with a URL or a mirror copy)")
    fetch.add_argument("--mirror", type=Path, action="append", help="local folder searched first; repeatable")
    fetch.add_argument("--media", action="store_true", help="also fetch the sample video and test images")
    quantize = msub.add_parser("quantize", help="write an int8 variant (static QDQ, per-channel) and measure it")
    quantize.add_argument("name", help="built-in name or .onnx/.yaml path")
    quantize.add_argument("--manifest", type=Path, help="manifest for an .onnx given by path")
    quantize.add_argument("--calibration", type=Path, action="append",
                          help="images, folder or video to calibrate on; repeatable (default: the sample media)")
    quantize.add_argument("--frames", type=int, default=20, help="calibration frames (default 20)")
    quantize.add_argument("--measure", type=Path, action="append",
                          help="media to measure agreement on (default: the calibration media, other frames)")
    quantize.add_argument("--measure-frames", type=int, default=MEASURE_FRAMES,
                          help=f"frames compared (default {MEASURE_FRAMES})")
    quantize.add_argument("--out", type=Path, help="output folder (default: where the module looks for variants)")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help=f"built-in name or .onnx/.yaml path (default: {DEFAULT_MODEL})")
    p.add_argument("--manifest", type=Path, help="manifest for an .onnx given by path")
    p.add_argument("--top-k", type=int)
    p.add_argument("--confidence", type=float)
    p.add_argument("--providers", help="comma-separated execution providers in preference order")
    p.add_argument("--gate", choices=["auto", "on", "off"],
                   help="scene-change gate: reuse the last result while the scene does not change "
                        "(auto: on for live sources, off for analyze)")

    p.add_argument("--workers", type=int, help="inference workers sharing the model (runtime.workers; 0 = auto)")
    p.add_argument("--intra-op-threads", type=int, help="threads per inference (runtime.intra_op_threads; 0 = auto)")


def _export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", type=Path, help="one row per detection or classification, as CSV (docs/report.md)")
    p.add_argument("--parquet", type=Path, help="the same rows as Parquet (needs the 'parquet' extra)")


def apply_overrides(config: ModuleConfig, args: argparse.Namespace) -> ModuleConfig:
    """Command-line flags win over the config file; the result is validated like any twin patch."""
    desired: dict[str, Any] = config.desired.model_dump()
    local: dict[str, Any] = config.local.model_dump()
    if args.data_dir:
        local["data_dir"] = args.data_dir
    if args.log_level:
        local["log_level"] = args.log_level
    if args.log_format:
        local["log_format"] = args.log_format
    if getattr(args, "model", None):
        desired["model"] = {"name": args.model}
    for flag, key in (("top_k", "top_k"), ("confidence", "confidence")):
        if getattr(args, flag, None) is not None:
            desired["inference"][key] = getattr(args, flag)
    if getattr(args, "gate", None):
        desired["inference"]["gate"]["mode"] = args.gate
    for flag in ("workers", "intra_op_threads"):
        if getattr(args, flag, None) is not None:
            desired["runtime"][flag] = getattr(args, flag)
    if getattr(args, "providers", None):
        desired["runtime"]["providers"] = [p.strip() for p in args.providers.split(",") if p.strip()]
    if getattr(args, "source", None):
        desired["source"]["uri"] = args.source
        desired["sources"] = []
    if getattr(args, "fps", None) is not None:
        for entry in [desired["source"], *desired["sources"]]:
            entry["fps"] = args.fps
    if getattr(args, "no_loop", False):
        desired["source"]["loop"] = False
    try:
        return ModuleConfig.model_validate({"desired": desired, "local": local})
    except ValidationError as err:
        raise VisionEdgeError(f"invalid option: {describe_validation_error(err)}") from err


def file_source(path: str) -> SourceSettings:
    """Settings for a file given on the command line; its name becomes the source id, unsafe characters as '_'."""
    source_id = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem)[:64] or "file"
    try:
        return SourceSettings(uri=path, id=source_id)
    except ValidationError as err:
        raise ConfigError(f"invalid path: {describe_validation_error(err, 'path')}") from err


def summary_line(stats: PipelineStats, gate: GateStats | None = None) -> str:
    """Closing summary: frames, rate, counts per label, and what the scene-change gate saved."""
    elapsed = stats.elapsed()
    frames = stats.inferred + (gate.gated if gate else 0)
    fps = frames / elapsed if elapsed > 0 else 0.0
    top = ", ".join(f"{label} {n}" for label, n in stats.label_counts.most_common(10)) or "none"
    gated = f" ({gate.gated} unchanged, reusing the last result)" if gate else ""
    return (f"frames {frames}{gated} in {elapsed:.1f} s ({fps:.1f} fps), skipped {stats.skipped}, "
            f"errors {stats.errors}; counts: {top}")


def cmd_analyze(args: argparse.Namespace, config: ModuleConfig) -> int:
    """Every frame of a file or folder, in order, no drops."""
    fetcher = make_fetcher(config)
    if not args.path.strip():
        raise ConfigError("analyze needs a path: an image, a folder or a video file")
    if (args.mot or args.preview) and not args.analytics:
        raise ConfigError("--mot and --preview need --analytics FILE.yaml (the lines and zones)")
    if args.mot_classes and not args.mot:
        raise ConfigError("--mot-classes needs --mot OUT.txt (the tracks it filters)")
    settings = load_settings(args.analytics) if args.analytics else None
    source = open_source(file_source(args.path),
                         resolve_sample=lambda: sample_video(fetcher), for_analysis=True)
    outputs = Outputs(html=args.report, csv=args.csv, parquet=args.parquet, title=f"visionedge analyze {args.path}")
    refuse_overlap([Path(args.path), *getattr(source, "paths", ()), *([args.analytics] if args.analytics else [])],
                   [args.jsonl, args.mot, args.preview, *outputs.paths()])
    if settings is not None and args.preview:
        return write_preview(source, settings, args.preview)
    model = load_model(config.desired.model.name, config, fetcher, args.manifest)
    sink = jsonl_sink(args.jsonl) if args.jsonl else stdout_sink()
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        progress = tqdm(total=getattr(source, "total", None), unit="frame", file=sys.stderr, dynamic_ncols=True)
    builder = ReportBuilder(outputs, (args.path,)) if outputs.any() else None
    if builder is not None and settings is not None:  # the report draws the lines and zones on the source's frame
        builder.scene.set_geometry(source.source_id, settings.model_dump())

    scene = SceneAnalytics(None, into_records=True) if settings is not None else None
    if scene is not None and settings is not None:
        try:
            scene.configure({source.source_id: settings}, model.manifest.task)
        except ValueError as err:
            raise ConfigError(f"--analytics: {err}") from err
    unknown = sorted(set(args.mot_classes or ()) - set(model.labels))
    if unknown:
        raise ConfigError(f"--mot-classes: {', '.join(unknown)} not among the labels of {config.desired.model.name} "
                          f"(e.g. {', '.join(model.labels[:5])})")
    mot = MotWriter.open(args.mot, frozenset(args.mot_classes) if args.mot_classes else None) if args.mot else None

    def on_record(record: dict[str, Any]) -> None:
        if progress is not None:
            progress.update(1)
        if mot is not None:
            mot.add(record)
        if builder is not None:  # runs on the publish thread right after `latest` is set for this record
            latest = pipeline.latest
            builder.add_record(record, latest[0].image if latest is not None else None)

    pipeline = Pipeline(source, model, [sink], on_record=on_record, gate=config.desired.inference.gate)
    pipeline.scene = scene
    events: list[AnalyticsEvent] = []
    if scene is not None:
        scene.listeners.append(lambda frame: events.extend(frame.events))
    stop = threading.Event()
    sink.on_broken = stop.set
    install_stop_handlers(stop)
    try:
        stats = pipeline.run(stop)
    finally:
        sink.close()
        if progress is not None:
            progress.close()
        if mot is not None:
            mot.out.close()
    sys.stderr.write(summary_line(stats, pipeline.gate_stats()) + "\n")
    if scene is not None and settings is not None:
        events.extend(scene.engines[source.source_id].finish())
        for line in summary(settings, events):
            sys.stderr.write(line + "\n")
    if pipeline.fatal is not None:
        raise pipeline.fatal
    if builder is not None:
        elapsed = stats.elapsed()
        for path in builder.finish(tuple(model.providers), stats.inferred / elapsed if elapsed > 0 else None):
            sys.stderr.write(f"wrote {path}\n")
    return 0


def cmd_report(args: argparse.Namespace, _config: ModuleConfig) -> int:
    """Stream result files into a report and exports; bad lines are skipped, counted and named."""
    outputs = Outputs(html=args.output, csv=args.csv, parquet=args.parquet, title=args.title)
    if not outputs.any():
        raise ConfigError("nothing to write: give -o REPORT.html, --csv FILE or --parquet FILE")
    check_inputs(args.inputs, outputs)
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        total = sum(p.stat().st_size for p in args.inputs if p.is_file())
        progress = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, dynamic_ncols=True)
    try:
        builder, written = report_from_files(args.inputs, outputs, progress.update if progress else None)
    finally:
        if progress is not None:
            progress.close()
    if builder.bad.count:
        sys.stderr.write(f"visionedge: warning: {builder.bad.describe()}\n")
    sys.stderr.write(f"{builder.stats.frames} records; wrote {', '.join(str(p) for p in written)}\n")
    return 0


def cmd_run(args: argparse.Namespace, config: ModuleConfig) -> int:
    """The module's main job; under IoT Edge it is driven by the twin, locally by flags and the config file."""
    stop = threading.Event()
    install_stop_handlers(stop)
    if os.environ.get("IOTEDGE_MODULEID"):
        from visionedge.edge import run_edge_module

        return run_edge_module(config, stop, duration=args.duration)
    sinks = [parse_sink(s) for s in (args.sink or ["stdout"])]
    for sink in sinks:
        sink.on_broken = stop.set
    assembly = Assembly(config, sinks=sinks, stop=stop)
    sources = assembly.open_sources(config.desired)
    model = load_model(config.desired.model.name, config, assembly.fetcher, args.manifest)
    assembly.use_model(model)
    if config.desired.analytics:
        try:
            assembly.apply_analytics(config.desired)
        except ValueError as err:
            raise ConfigError(f"analytics: {err}") from err
    pipeline = assembly.build_pipeline(config.desired, sources, model)
    assembly.metrics.start(config.local.metrics_port, config.local.metrics_host)
    stop_after(args.duration, stop)
    log.info("running %s on %s (%s)", model.name, ", ".join(s.description for s in sources.values()),
             ", ".join(s.name for s in sinks))
    started = time.monotonic()
    try:
        stats = pipeline.run(stop)
    finally:
        assembly.close()
        assembly.metrics.close()
    log.info("stopped after %.1f s: %s", time.monotonic() - started,
             summary_line(stats, pipeline.gate_stats()))
    if len(pipeline.feeds) > 1:
        for feed in pipeline.feeds:
            log.info("source %s: frames %d, skipped %d, errors %d, state %s", feed.source_id, feed.stats.inferred,
                     feed.skipped(), feed.stats.errors, feed.source.state.value)
    if pipeline.fatal is not None:
        raise pipeline.fatal
    return 0


def cmd_compare(args: argparse.Namespace, config: ModuleConfig) -> int:
    """Both models over the same frames of a file or folder, compared exactly like the device's shadow phase."""
    if args.every < 1 or (args.max_frames is not None and args.max_frames < 1) or args.worst < 0:
        raise VisionEdgeError("--every and --max-frames must be at least 1 and --worst at least 0")
    fetcher = make_fetcher(config)
    source = open_source(file_source(args.path),
                         resolve_sample=lambda: sample_video(fetcher), for_analysis=True)
    active = load_model(args.model, config, fetcher, args.manifest)
    candidate = load_model(args.against, config, fetcher, args.against_manifest)
    names = getattr(source, "paths", None)
    refuse_overlap([Path(args.path), *(names or ())], [args.jsonl, args.report])
    stop = threading.Event()
    install_stop_handlers(stop)
    out = args.jsonl.open("w", encoding="utf-8") if args.jsonl else None
    view = None
    if args.report is not None:
        from visionedge.report.comparison import ComparisonReport

        view = ComparisonReport(worst_kept=max(args.worst, 1))
    try:
        def write(result: FrameComparison, frame: Frame, first: Inference, second: Inference) -> None:
            if out is not None:
                out.write(json.dumps(result.as_dict(), separators=(",", ":")) + "\n")
            if view is not None:
                view.offer(result, frame, first, second)

        frames = (replace(f, source_id=names[f.index].name) if names else f for f in source.frames(stop))
        comparison = compare_frames(active, candidate, frames, every=args.every, limit=args.max_frames,
                                    on_frame=write)
    finally:
        if out is not None:
            out.close()
    figures = comparison.figures()
    if figures.frames == 0:
        raise VisionEdgeError(f"no frames compared from {args.path}")
    shown = replace(figures, worst=figures.worst[:args.worst])
    if view is not None:
        view.write(args.report, shown, f"{active.name} {active.version} vs {candidate.name} {candidate.version}")
        sys.stderr.write(f"wrote {args.report}\n")
    sys.stdout.write(json.dumps(shown.as_dict(), indent=2) + "\n" if args.json else format_figures(shown))
    return 0


def format_figures(figures: Figures) -> str:
    """The comparison as a short text report for a terminal."""
    a, c = figures.active, figures.candidate
    lines = [f"active     {a.name} {a.version} ({a.task})", f"candidate  {c.name} {c.version} ({c.task})",
             f"frames     {figures.frames}"]
    if figures.agreement is None:
        lines.append(f"agreement  undefined: {figures.undefined}")
    else:
        lines.append(task_of(a.task).agreement_line(figures))
    if figures.count_drift:
        drift = ", ".join(f"{label} {n_a} -> {n_c}" for label, (n_a, n_c) in list(figures.count_drift.items())[:8])
        lines.append(f"counts     {drift}")
    lines.append(f"confidence mean top {_fmt(figures.active_confidence)} -> {_fmt(figures.candidate_confidence)}")
    for q, x, y, ratio in (("p50", figures.active_p50_ms, figures.candidate_p50_ms, figures.latency_ratio_p50),
                           ("p95", figures.active_p95_ms, figures.candidate_p95_ms, figures.latency_ratio)):
        lines.append(f"latency    {q} {_fmt(x, 1)} ms -> {_fmt(y, 1)} ms ({_fmt(ratio, 2)}x)")
    if figures.worst:
        lines.append("disagree most:")
        for f in figures.worst:
            overlap = f", top-5 {f.overlap:.2f}" if f.overlap is not None else ""
            lines.append(f"  frame {f.frame} ({f.source_id}) agreement {_fmt(f.agreement, 2)}{overlap}: "
                         f"{'; '.join(f.active_labels) or '-'} | {'; '.join(f.candidate_labels) or '-'}")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def cmd_models(args: argparse.Namespace, config: ModuleConfig) -> int:
    """List built-ins, or fetch them (mirror first) with verification."""
    fetcher = make_fetcher(config)
    if args.models_command == "list":
        for name in builtin_names():
            manifest = builtin_manifest(name)
            assets = assets_for(manifest)
            cached = all(fetcher.path(a).is_file() for a in assets)
            origin = "download" if all(a.url for a in assets) else "mirror only"
            sys.stdout.write(f"{name:14} {manifest.task:8} {manifest.version:18} {manifest.file:26} "
                             f"{'cached' if cached else 'not cached':10} {origin}\n")
        return 0
    if args.models_command == "quantize":
        return cmd_quantize(args, config, fetcher)
    if args.mirror:
        fetcher.mirrors = list(args.mirror) + fetcher.mirrors
    names = args.names or [n for n in builtin_names()
                           if all(a.url or fetcher.in_mirror(a) for a in assets_for(builtin_manifest(n)))]
    failures = _fetch_all(fetcher, names, args.media)
    return 1 if failures else 0


def cmd_quantize(args: argparse.Namespace, config: ModuleConfig, fetcher: Fetcher) -> int:
    """Quantize a model to int8 and print how each variant written agrees with it and how fast it runs."""
    if args.frames < 1 or args.measure_frames < 1:
        raise VisionEdgeError("--frames and --measure-frames must be at least 1")
    try:
        import onnx  # noqa: F401 - onnxruntime.quantization needs it; say so before any work
    except ImportError as err:
        raise VisionEdgeError("models quantize needs the onnx package: pip install 'visionedge[quantize]'") from err
    from visionedge.models.variants import variants_folder, variants_root

    resolved = resolve_model(args.name, fetcher, args.manifest)
    calibration = args.calibration or [fetcher.ensure(a) for a in ASSETS.values() if a.kind == "media"]
    out = args.out or variants_folder(variants_root(config.local), resolved.model_path)
    made = quantize(resolved, out, calibration, frames=args.frames, measure=args.measure or (),
                    measure_frames=args.measure_frames, runtime=config.desired.runtime)
    measure = task_of(resolved.manifest.task).measure_tool
    for variant in made:
        f = variant.figures
        agreement = "undefined" if f.agreement is None else f"{f.agreement:.3f}"
        ratio = "n/a" if f.latency_ratio is None else f"{f.latency_ratio:.2f}x"
        sys.stdout.write(f"{variant.kind:5} {variant.manifest_path}\n      {measure} with {resolved.model_path.name}: "
                         f"{agreement} over {f.frames} frames; latency p50 {_ms(f.active_p50_ms)} -> "
                         f"{_ms(f.candidate_p50_ms)} ms, p95 ratio {ratio}\n")
    return 0


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _fetch_all(fetcher: Fetcher, names: Sequence[str], media: bool) -> int:
    assets = [a for n in names for a in assets_for(builtin_manifest(n))]
    if media:
        assets += [a for a in ASSETS.values() if a.kind == "media"]
    failures = 0
    for asset in dict.fromkeys(assets):
        try:
            path = fetcher.ensure(asset)
            sys.stdout.write(f"ok      {asset.name} -> {path}\n")
        except VisionEdgeError as err:
            failures += 1
            sys.stderr.write(f"error: {err}\n")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one-line reasons and a non-zero exit for every expected failure, never a traceback."""
    args = build_parser().parse_args(argv)
    if args.command == "fleet":
        return fleet_cli.run(args)
    try:
        config = apply_overrides(load_config(args.config), args)
        setup_logging(config.local.log_level, config.local.log_format)
        data = config.local.data_dir
        if data.exists() and not data.is_dir():
            raise ConfigError(f"data dir {data} is a file, not a folder: pass --data-dir or set VISIONEDGE_DATA_DIR")
        if args.command in ("analyze", "run", "compare") or getattr(args, "models_command", "") == "fetch":
            check_data_dir(config.local)  # the commands that write the model cache (and, for run, the outbox)
        handlers = {"analyze": cmd_analyze, "run": cmd_run, "compare": cmd_compare, "models": cmd_models,
                    "report": cmd_report}
        return handlers[args.command](args, config)
    except VisionEdgeError as err:
        sys.stderr.write(f"visionedge: error: {err}\n")
        return 1
    except OSError as err:  # the disk or the file system refused (a data dir that is a file, a full disk)
        where = f": {err.filename}" if err.filename else ""
        sys.stderr.write(f"visionedge: error: {err.strerror or err}{where}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
