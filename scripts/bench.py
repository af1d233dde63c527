#!/usr/bin/env python3
"""Bare onnxruntime throughput against the real `analyze` pipeline on the same vtest.avi frames, with peak RSS.

For each model, in a fresh worker process (so peak RSS belongs to that model alone):
  (a) bare: the first N frames are decoded and preprocessed beforehand with the model's own Preprocessor, then only
      `model.session.run` is timed in a loop (the session is the module's: built by `Model`, same options);
  (b) end-to-end: the real Pipeline (capture, preprocess, inference, decode, record, JSON sink) on the same N frames
      read from the video file, decode included;
  (c) their ratio. Rounds alternate (a) and (b) after a warm-up of each, and the best round of each counts.
A second table shows where the time goes, stage by stage, measured one stage at a time on one thread, and the CPU
time each path spends per frame: on a machine with C cores, end-to-end cannot beat (CPU ms per frame) / C.

    python scripts/bench.py [--frames 300] [--rounds 3] [--models squeezenet yolox-nano] [--intra-op-threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from visionedge.app import load_model, make_fetcher
from visionedge.config import ModuleConfig, load_config
from visionedge.frame import Frame
from visionedge.models.catalog import SAMPLE_VIDEO
from visionedge.models.model import Model
from visionedge.pipeline import Pipeline
from visionedge.result import to_record
from visionedge.sinks import jsonl_sink
from visionedge.sources import Source, VideoFileSource

DEFAULT_MODELS = ("squeezenet", "yolox-nano")
WARMUP_RUNS = 20
WARMUP_FRAMES = 30
TARGET_RATIO = 0.90


@dataclass
class Result:
    """What one worker measured for one model."""

    model: str
    frames: int
    rounds: int
    intra_op_threads: int
    bare_s: float
    e2e_s: float
    bare_cpu_s: float
    e2e_cpu_s: float
    rss_e2e_mb: float
    rss_peak_mb: float
    decode_ms: float
    preprocess_ms: float
    run_ms: float
    postprocess_ms: float
    record_json_ms: float

    @property
    def bare_fps(self) -> float:
        """Frames per second through session.run alone."""
        return self.frames / self.bare_s

    @property
    def e2e_fps(self) -> float:
        """Frames per second through the whole pipeline."""
        return self.frames / self.e2e_s

    @property
    def ratio(self) -> float:
        """End-to-end throughput as a fraction of bare throughput."""
        return self.e2e_fps / self.bare_fps


class FirstFrames(Source):
    """The real video source, stopped after its first `count` frames (the file is still decoded frame by frame)."""

    def __init__(self, inner: VideoFileSource, count: int) -> None:
        super().__init__(inner.source_id, inner.description)
        self.inner = inner
        self.count = count
        self.total = count

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """The inner source's frames up to `count`."""
        for frame in self.inner.frames(stop):
            if frame.index >= self.count:
                return
            yield frame


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def decode_frames(video: Path, count: int) -> tuple[list[np.ndarray], float]:
    """The first `count` frames, and the mean decode time per frame in ms."""
    capture = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    start = time.perf_counter()
    try:
        while len(frames) < count:
            ok, image = capture.read()
            if not ok:
                break
            frames.append(image)
    finally:
        capture.release()
    if len(frames) < count:
        raise SystemExit(f"{video} has only {len(frames)} frames; use --frames {len(frames)} or fewer")
    return frames, (time.perf_counter() - start) * 1000.0 / count


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (all threads of this process) that `action` takes."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_bare(model: Model, tensors: Sequence[np.ndarray]) -> None:
    """session.run over every prepared tensor, nothing else."""
    session, name = model.session, model.signature.input_name
    for tensor in tensors:
        session.run(None, {name: tensor})


def run_pipeline(model: Model, video: Path, count: int) -> None:
    """The analyze path: video file -> Pipeline -> JSON Lines sink (to the null device)."""
    source = FirstFrames(VideoFileSource(video, "vtest"), count)
    sink = jsonl_sink(Path(os.devnull))
    try:
        pipeline = Pipeline(source, model, [sink])
        stats = pipeline.run(threading.Event())
    finally:
        sink.close()
    if stats.inferred != count or pipeline.fatal is not None:
        raise SystemExit(f"pipeline analysed {stats.inferred} of {count} frames ({pipeline.fatal})")


def per_frame_ms(action: Callable[[Any], object], items: Sequence[Any]) -> float:
    """Mean ms per item of `action`, one item at a time on this thread."""
    start = time.perf_counter()
    for item in items:
        action(item)
    return (time.perf_counter() - start) * 1000.0 / len(items)


def measure(name: str, frames: int, rounds: int, config: ModuleConfig) -> Result:
    """Everything for one model, in this process."""
    fetcher = make_fetcher(config)
    video = fetcher.media(SAMPLE_VIDEO)
    model = load_model(name, config, fetcher)

    run_pipeline(model, video, WARMUP_FRAMES)  # warm-up: first-run allocations, file cache, thread start
    e2e_wall, e2e_cpu = timed(lambda: run_pipeline(model, video, frames))
    rss_e2e = peak_rss_mb()  # before the bare path holds N decoded frames and tensors in memory

    images, decode_ms = decode_frames(video, frames)
    prepared = [model.preprocess(image) for image in images]
    tensors = [tensor for tensor, _ in prepared]
    for tensor in tensors[:WARMUP_RUNS]:
        model.session.run(None, {model.signature.input_name: tensor})
    bare_wall, bare_cpu = timed(lambda: run_bare(model, tensors))
    for _ in range(rounds - 1):  # alternate, so a busy moment on the machine hurts both paths alike
        wall, cpu = timed(lambda: run_pipeline(model, video, frames))
        if wall < e2e_wall:
            e2e_wall, e2e_cpu = wall, cpu
        wall, cpu = timed(lambda: run_bare(model, tensors))
        if wall < bare_wall:
            bare_wall, bare_cpu = wall, cpu

    # Where the time goes: each stage alone, on this thread.
    sample = list(range(min(frames, 100)))
    preprocess_ms = per_frame_ms(lambda i: model.preprocess(images[i]), sample)
    raw = [model.session.run(None, {model.signature.input_name: tensors[i]}) for i in sample]
    run_ms = bare_wall * 1000.0 / frames
    outputs = [dict(zip(model.output_names, r, strict=True)) for r in raw]
    postprocess_ms = per_frame_ms(lambda i: model.decode(outputs[i], prepared[i][1], model.thresholds), sample)
    inference = model.infer(images[0])
    frame = Frame(images[0], "vtest", 0, time.time())
    record_json_ms = per_frame_ms(lambda _i: json.dumps(to_record(frame, inference), separators=(",", ":")), sample)

    return Result(
        model=name, frames=frames, rounds=rounds, intra_op_threads=config.desired.runtime.intra_op_threads,
        bare_s=bare_wall, e2e_s=e2e_wall, bare_cpu_s=bare_cpu, e2e_cpu_s=e2e_cpu,
        rss_e2e_mb=rss_e2e, rss_peak_mb=peak_rss_mb(), decode_ms=decode_ms, preprocess_ms=preprocess_ms,
        run_ms=run_ms, postprocess_ms=postprocess_ms, record_json_ms=record_json_ms,
    )


def module_config(intra_op_threads: int | None) -> ModuleConfig:
    """The module's own configuration (file/env), with the thread count overridden when asked."""
    config = load_config()
    if intra_op_threads is None:
        return config
    desired = config.desired.model_dump()
    desired["runtime"]["intra_op_threads"] = intra_op_threads
    return ModuleConfig.model_validate({"desired": desired, "local": config.local.model_dump()})


def run_worker(args: argparse.Namespace) -> int:
    """Measure one model and print the Result as JSON on the last line of stdout."""
    import logging

    logging.disable(logging.INFO)
    result = measure(args.worker, args.frames, args.rounds, module_config(args.intra_op_threads))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    return 0


def spawn_worker(name: str, args: argparse.Namespace) -> Result:
    """One fresh process per model, so each peak RSS is that model's alone."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name,
               "--frames", str(args.frames), "--rounds", str(args.rounds)]
    if args.intra_op_threads is not None:
        command += ["--intra-op-threads", str(args.intra_op_threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench worker for {name} failed:\n{done.stderr.strip()}")
    return Result(**json.loads(done.stdout.strip().splitlines()[-1]))


def print_tables(results: Sequence[Result], args: argparse.Namespace) -> None:
    """The throughput table and the per-stage table."""
    cores = os.cpu_count() or 1
    threads = args.intra_op_threads if args.intra_op_threads is not None else "module default"
    print(f"vtest.avi, first {args.frames} frames, best of {args.rounds} rounds; {cores} CPUs "
          f"({platform.processor() or platform.machine()}); onnxruntime {ort.__version__}, opencv {cv2.__version__}; "
          f"intra_op_threads: {threads}")
    print()
    head = (f"{'model':<12} {'bare fps':>9} {'e2e fps':>8} {'e2e/bare':>9} {'bare ms':>8} {'e2e ms':>7} "
            f"{'RSS e2e':>9} {'RSS peak':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        flag = "" if r.ratio >= TARGET_RATIO else f"  < {TARGET_RATIO:.2f}"
        print(f"{r.model:<12} {r.bare_fps:>9.1f} {r.e2e_fps:>8.1f} {r.ratio:>9.2f} "
              f"{1000 * r.bare_s / r.frames:>8.2f} {1000 * r.e2e_s / r.frames:>7.2f} "
              f"{r.rss_e2e_mb:>6.0f} MB {r.rss_peak_mb:>6.0f} MB{flag}")
    print()
    print("Where the time goes (ms per frame; stages timed alone on one thread; CPU = all threads of the process):")
    head = (f"{'model':<12} {'decode':>7} {'preproc':>8} {'run':>7} {'postproc':>9} {'rec+json':>9} "
            f"{'CPU bare':>9} {'CPU e2e':>8} {'e2e floor':>10}")
    print(head)
    print("-" * len(head))
    for r in results:
        cpu_e2e = 1000 * r.e2e_cpu_s / r.frames
        print(f"{r.model:<12} {r.decode_ms:>7.2f} {r.preprocess_ms:>8.2f} {r.run_ms:>7.2f} {r.postprocess_ms:>9.2f} "
              f"{r.record_json_ms:>9.3f} {1000 * r.bare_cpu_s / r.frames:>9.2f} {cpu_e2e:>8.2f} "
              f"{cpu_e2e / cores:>10.2f}")
    print()
    print("RSS e2e: peak of the worker after the pipeline runs (model, decoder, pipeline); RSS peak: after the bare "
          f"path also holds {args.frames} decoded frames and tensors. e2e floor: CPU e2e / {cores} cores.")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="first N frames of vtest.avi (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each path; best counts (default 3)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="built-in model names")
    parser.add_argument("--intra-op-threads", type=int, help="override runtime.intra_op_threads (0 = one per core)")
    parser.add_argument("--min-ratio", type=float, help="exit 1 when any e2e/bare ratio is below this")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.rounds < 1:
        parser.error("--frames and --rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run a worker per model and print the tables."""
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    results = [spawn_worker(name, args) for name in args.models]
    print_tables(results, args)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n", encoding="utf-8")
    if args.min_ratio is not None and any(r.ratio < args.min_ratio for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
