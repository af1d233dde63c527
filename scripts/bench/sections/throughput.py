"""throughput: per model, in a fresh process, rounds alternating these paths on the same vtest.avi frames:
plain - the best plain loop: `ort.InferenceSession(file)` with session defaults, inputs prepared beforehand, only
        `session.run` timed; for SqueezeNet the faster of the fp32 and fp16 files;
old - the previous baseline: `session.run` on the module's single-worker session;
analyze - the real `analyze` pipeline end to end (decode, preprocess, workers, decode, JSON) with the layout chosen
          for this machine; analyze-1w - the same with one worker.
Reports the best round of each and the spread over rounds, and analyze/plain per round."""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from visionedge.app import load_model, make_fetcher
from visionedge.models.catalog import SAMPLE_VIDEO
from visionedge.models.fetch import resolve_model
from visionedge.models.model import Model
from visionedge.pipeline import Pipeline
from visionedge.sinks import jsonl_sink
from visionedge.sources import VideoFileSource

from bench.clips import FirstFrames
from bench.common import WARMUP_FRAMES, WARMUP_RUNS, config_with, machine_line, spread, worker

PLAIN_FILES = {"squeezenet": ("squeezenet", "squeezenet-fp32")}
"""Built-in models whose plain loop tries several files of the same network; the fastest counts."""


@dataclass
class Throughput:
    """Frames per second of each path in each round, for one model."""

    model: str
    frames: int
    layout: str
    plain_file: str = ""
    rounds: dict[str, list[float]] = field(default_factory=dict)

    def best(self, path: str) -> float:
        """The best round of a path."""
        return max(self.rounds[path])

    def ratios(self, path: str) -> list[float]:
        """path / plain, round by round (each round runs both back to back)."""
        return [a / p for a, p in zip(self.rounds[path], self.rounds["plain"], strict=True)]


def prepared_inputs(model: Model, video: Path, count: int) -> list[np.ndarray]:
    """The first `count` frames decoded and preprocessed with the model's own preprocessing."""
    capture = cv2.VideoCapture(str(video))
    tensors: list[np.ndarray] = []
    try:
        while len(tensors) < count:
            ok, image = capture.read()
            if not ok:
                raise SystemExit(f"{video} has only {len(tensors)} frames; use --frames {len(tensors)} or fewer")
            tensors.append(model.prepare(image)[0])
    finally:
        capture.release()
    return tensors


def plain_loop(session: ort.InferenceSession, tensors: Sequence[np.ndarray]) -> float:
    """Frames per second of `session.run` over prepared inputs, nothing else timed."""
    name = session.get_inputs()[0].name
    start = time.perf_counter()
    for tensor in tensors:
        session.run(None, {name: tensor})
    return len(tensors) / (time.perf_counter() - start)


def plain_e2e_loop(session: ort.InferenceSession, model: Model, video: Path, count: int) -> float:
    """Frames per second of the plain loop a user writes for a video: decode, the model's preprocessing, session.run."""
    name = session.get_inputs()[0].name
    dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    capture = cv2.VideoCapture(str(video))
    start = time.perf_counter()
    try:
        for _ in range(count):
            ok, image = capture.read()
            if not ok:
                raise SystemExit(f"{video} ended before {count} frames")
            session.run(None, {name: model.prepare(image)[0].astype(dtype, copy=False)})
    finally:
        capture.release()
    return count / (time.perf_counter() - start)


def analyze_fps(model: Model, video: Path, count: int, workers: int | None = None) -> float:
    """Frames per second of the analyze path: video file -> Pipeline -> JSON Lines sink (to the null device)."""
    source = FirstFrames(VideoFileSource(video, "vtest"), count)
    sink = jsonl_sink(Path(os.devnull))
    start = time.perf_counter()
    try:
        pipeline = Pipeline(source, model, [sink], workers=workers)
        stats = pipeline.run(threading.Event())
    finally:
        sink.close()
    elapsed = time.perf_counter() - start
    if stats.inferred != count or pipeline.fatal is not None:
        raise SystemExit(f"pipeline analysed {stats.inferred} of {count} frames ({pipeline.fatal})")
    return count / elapsed


def measure_throughput(name: str, frames: int, rounds: int) -> Throughput:
    """Every path for one model, rounds alternating so a busy moment on the machine hurts all paths alike."""
    config = config_with({})
    fetcher = make_fetcher(config)
    video = fetcher.media(SAMPLE_VIDEO)
    model = load_model(name, config, fetcher)
    single = load_model(name, config_with({"workers": 1}), fetcher)
    tensors = prepared_inputs(model, video, frames)
    plain: dict[str, ort.InferenceSession] = {}
    typed: dict[str, list[np.ndarray]] = {}
    for variant in PLAIN_FILES.get(name, (name,)):
        file = resolve_model(variant, fetcher).model_path
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])  # session defaults
        dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
        plain[file.name] = session
        typed[file.name] = [t.astype(dtype) for t in tensors]
        plain_loop(session, typed[file.name][:WARMUP_RUNS])
    plain_loop(single.session, tensors[:WARMUP_RUNS])
    analyze_fps(model, video, WARMUP_FRAMES)
    analyze_fps(single, video, WARMUP_FRAMES)
    result = Throughput(name, frames, f"{model.layout.workers} worker(s) x {model.layout.intra_op_threads} thread(s)")
    per_file: dict[str, list[float]] = {file: [] for file in plain}
    paths: dict[str, Callable[[], float]] = {
        "old": lambda: plain_loop(single.session, tensors),
        "analyze": lambda: analyze_fps(model, video, frames),
        "analyze-1w": lambda: analyze_fps(single, video, frames),
    }
    result.rounds = {"plain": [], "plain-e2e": [], **{p: [] for p in paths}}
    for _ in range(rounds):
        for key, session in plain.items():
            per_file[key].append(plain_loop(session, typed[key]))
        result.rounds["plain"].append(max(per_file[f][-1] for f in plain))
        result.rounds["plain-e2e"].append(max(plain_e2e_loop(s, model, video, frames) for s in plain.values()))
        for label, action in paths.items():
            result.rounds[label].append(action())
    fastest = max(per_file, key=lambda f: max(per_file[f]))
    result.plain_file = fastest + "".join(f"; {f} best {max(v):.1f}" for f, v in per_file.items())
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This section's own options."""
    parser.add_argument("--min-ratio", type=float, help="throughput: exit 1 when a median analyze/plain is below")


def work(args: argparse.Namespace, params: list[str]) -> object:
    """Child process: one model's throughput."""
    return asdict(measure_throughput(params[0], args.frames, args.rounds))


def run(args: argparse.Namespace) -> int:
    """Per model, a worker process; then the table."""
    results = [Throughput(**worker(["throughput", name], args)) for name in args.models]
    print(f"throughput: vtest.avi, first {args.frames} frames, {args.rounds} rounds; {machine_line()}")
    head = (f"{'model':<11} {'path':<11} {'best fps':>9} {'fps range':>13} {'/plain best':>12} "
            f"{'/plain per round (median, range)':>33}")
    print(head)
    print("-" * len(head))
    failed = 0
    for r in results:
        for path in r.rounds:
            ratio = r.best(path) / r.best("plain")
            per_round = "" if path == "plain" else (f"{statistics.median(r.ratios(path)):.2f} "
                                                     f"({min(r.ratios(path)):.2f}-{max(r.ratios(path)):.2f})")
            print(f"{r.model:<11} {path:<11} {r.best(path):>9.1f} {spread(r.rounds[path]):>13} {ratio:>12.2f} "
                  f"{per_round:>33}")
        print(f"{'':<11} plain file: {r.plain_file}; analyze layout: {r.layout}")
        e2e = [a / p for a, p in zip(r.rounds["analyze"], r.rounds["plain-e2e"], strict=True)]
        print(f"{'':<11} analyze / plain-e2e: best {r.best('analyze') / r.best('plain-e2e'):.2f}, per round "
              f"{statistics.median(e2e):.2f} ({min(e2e):.2f}-{max(e2e):.2f})")
        if args.min_ratio is not None and statistics.median(r.ratios("analyze")) < args.min_ratio:
            failed = 1
    print("plain = best plain loop (session defaults, prepared inputs, session.run only); plain-e2e = the same "
          "loop decoding and preparing each frame itself; old = the previous baseline (module session, one worker); "
          "analyze = end to end, decode included.")
    return failed
