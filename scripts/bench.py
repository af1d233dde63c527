#!/usr/bin/env python3
"""The module's speed against the best plain onnxruntime loop a user would write, side by side in one run.

Sections (run all by default, or pick with --section; each prints its own table):
  throughput  per model, in a fresh process, rounds alternating these paths on the same vtest.avi frames:
              plain  - the best plain loop: `ort.InferenceSession(file)` with session defaults, inputs prepared
                       beforehand, only `session.run` timed; for SqueezeNet the faster of the fp32 and fp16 files;
              old    - the previous baseline: `session.run` on the module's single-worker session;
              analyze - the real `analyze` pipeline end to end (decode, preprocess, workers, decode, JSON) with the
                       layout chosen for this machine; analyze-1w - the same with one worker.
              Reports the best round of each and the spread over rounds, and analyze/plain per round.
  sources     1, 2, 4, 8 paced vtest.avi sources at 10 fps each into one module pipeline, per model: total
              inferences/s, per-source fps (fairness), frame age p50/p95 at inference start, skipped frames, RSS.
  rss         --rss-minutes (default 10) of 4 sources at 10 fps on --rss-model (YOLOX-nano), RSS sampled every 30 s
              (it must stay flat).
  gate        the scene-change gate: gated share of a still scene (60 s of one frame with sensor noise) and of
              vtest.avi, CPU per frame with the gate on and off, the gate's own CPU per frame.
  variants    inf/s and agreement (visionedge.compare against the deployed file) of each variant (deployed fp16/fp32,
              fp32, int8 from `models quantize`) on each execution provider onnxruntime offers (OpenVINO when the
              onnxruntime-openvino build is installed).
  report      `visionedge analyze sample --model yolox-nano --report` (the documented sample command), then
              `visionedge report` over --report-records YOLOX records (real records replayed over 24 h): wall time,
              CPU time and peak RSS of each command, and the report's size.
  shadow      what a model update's shadow phase costs the active model: the real pipeline over the first --frames
              frames of vtest.avi as fast as it goes, rounds alternating without and with a candidate in shadow
              (default budget, max_cost 0.1): active fps of each, their ratio per round (target >= 0.90), frames
              the candidate compared and the k of "every k-th frame" the budget came to. Pairs: --shadow-pairs.
The machine is shared and noisy: rerun on a quiet one; every section takes the same flags there.

    python scripts/bench.py [--section throughput sources rss] [--frames 300] [--rounds 5] [--models ...]

To add a section: write `def section_NAME(args) -> int` that prints its table, and add it to SECTIONS.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from visionedge.app import load_model, make_fetcher
from visionedge.config import ModuleConfig, load_config
from visionedge.frame import Frame
from visionedge.models.catalog import ASSETS, SAMPLE_VIDEO
from visionedge.models.fetch import resolve_model
from visionedge.models.model import Model
from visionedge.models.runtime import usable_cores
from visionedge.pipeline import Pipeline
from visionedge.sinks import jsonl_sink
from visionedge.sources import Source, VideoFileSource

DEFAULT_MODELS = ("squeezenet", "yolox-nano")
PLAIN_FILES = {"squeezenet": ("squeezenet", "squeezenet-fp32")}
"""Built-in models whose plain loop tries several files of the same network; the fastest counts."""
WARMUP_RUNS = 20
WARMUP_FRAMES = 30
SOURCE_COUNTS = (1, 2, 4, 8)
SOURCE_FPS = 10.0


def rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def config_with(runtime: dict[str, int]) -> ModuleConfig:
    """The module's own configuration (file/env) with runtime settings overridden."""
    config = load_config()
    desired = config.desired.model_dump()
    desired["runtime"].update(runtime)
    return ModuleConfig.model_validate({"desired": desired, "local": config.local.model_dump()})


def machine_line() -> str:
    """What the figures were taken on."""
    return (f"{usable_cores()} usable cores ({platform.processor() or platform.machine()}), load average "
            f"{os.getloadavg()[0]:.1f} at start; onnxruntime {ort.__version__}, opencv {cv2.__version__}")


# ---- throughput ---------------------------------------------------------------------------------------------------


class FirstFrames(Source):
    """The real video source, stopped after its first `count` frames (the file is still decoded frame by frame)."""

    def __init__(self, inner: VideoFileSource, count: int) -> None:
        super().__init__(inner.source_id, inner.description)
        self.inner = inner
        self.count = count

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """The inner source's frames up to `count`."""
        for frame in self.inner.frames(stop):
            if frame.index >= self.count:
                return
            yield frame


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


def spread(values: Sequence[float]) -> str:
    """min-max of a list of figures."""
    return f"{min(values):.1f}-{max(values):.1f}"


def section_throughput(args: argparse.Namespace) -> int:
    """Per model, a worker process; then the table."""
    results = [Throughput(**worker(["throughput-worker", name], args)) for name in args.models]
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


def run_throughput_worker(name: str, args: argparse.Namespace) -> dict[str, object]:
    """Child process: one model's throughput."""
    return asdict(measure_throughput(name, args.frames, args.rounds))


# ---- several sources ----------------------------------------------------------------------------------------------


@dataclass
class SourcesRun:
    """One model with N sources for a while."""

    model: str
    sources: int
    seconds: float
    per_source_fps: list[float]
    skipped: int
    captured: int
    age_p50_ms: float
    age_p95_ms: float
    rss_start_mb: float
    rss_end_mb: float
    batch: bool

    @property
    def total(self) -> float:
        """Inferences per second over every source."""
        return sum(self.per_source_fps)


def paced_sources(video: Path, count: int, fps: float) -> list[Source]:
    """`count` looping vtest.avi sources paced like cameras, analysed at `fps` each."""
    sources: list[Source] = []
    for i in range(count):
        source = VideoFileSource(video, f"cam{i}", loop=True, realtime=True)
        source.fps = fps
        sources.append(source)
    return sources


def measure_sources(name: str, count: int, seconds: float, fps: float,
                    samples: list[tuple[float, float]] | None = None) -> SourcesRun:
    """N paced sources into one pipeline for `seconds`; per-source analysed rate after a 3 s warm-up."""
    config = config_with({})
    fetcher = make_fetcher(config)
    video = fetcher.media(SAMPLE_VIDEO)
    model = load_model(name, config, fetcher)
    rss_start = rss_mb()
    pipeline = Pipeline(paced_sources(video, count, fps), model, [])
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(stop,), name="bench-pipeline", daemon=True)
    thread.start()
    stop.wait(3.0)
    before = [f.stats.inferred for f in pipeline.feeds]
    skipped_before, captured_before = pipeline.skipped(), pipeline.stats.captured
    for feed in pipeline.feeds:
        feed.stats.ages.clear()
    start = time.monotonic()
    while not stop.wait(min(30.0, max(seconds - (time.monotonic() - start), 0.01))):
        if samples is not None:
            samples.append((time.monotonic() - start, rss_mb()))
        if time.monotonic() - start >= seconds:
            break
    elapsed = time.monotonic() - start
    after = [f.stats.inferred for f in pipeline.feeds]
    ages = sorted(a for f in pipeline.feeds for a in f.stats.ages)
    skipped, captured = pipeline.skipped() - skipped_before, pipeline.stats.captured - captured_before
    stop.set()
    thread.join(timeout=5)
    q = statistics.quantiles(ages, n=20) if len(ages) >= 2 else [0.0] * 19
    return SourcesRun(name, count, elapsed, [(a - b) / elapsed for a, b in zip(after, before, strict=True)],
                      skipped, captured, 1000 * statistics.median(ages) if ages else 0.0, 1000 * q[18],
                      rss_start, rss_mb(), model.batchable)


def section_sources(args: argparse.Namespace) -> int:
    """Per model and source count, a worker process; then the table."""
    print(f"sources: paced vtest.avi at {SOURCE_FPS:g} fps each, {args.source_seconds:g} s per run after 3 s warm-up; "
          f"{machine_line()}")
    head = (f"{'model':<11} {'sources':>7} {'total inf/s':>11} {'per-source fps min-max':>23} {'skipped/s':>9} "
            f"{'age p50':>8} {'age p95':>8} {'RSS start':>9} {'RSS end':>8}")
    print(head)
    print("-" * len(head))
    for name in args.models:
        for count in args.source_counts:
            r = SourcesRun(**worker(["sources-worker", name, str(count)], args))
            print(f"{r.model:<11} {r.sources:>7} {r.total:>11.1f} {spread(r.per_source_fps):>23} "
                  f"{r.skipped / r.seconds:>9.1f} {r.age_p50_ms:>6.0f}ms {r.age_p95_ms:>6.0f}ms "
                  f"{r.rss_start_mb:>6.0f} MB {r.rss_end_mb:>5.0f} MB", flush=True)
    print("age: how old a frame was when its inference started (capture to dispatch); skipped: frames a source "
          "captured that no worker took (overwritten by a newer one or over its 10 fps).")
    return 0


def section_rss(args: argparse.Namespace) -> int:
    """A long run of 4 YOLOX-nano sources; RSS sampled every 30 s."""
    data = worker(["rss-worker", args.rss_model, "4"], args)
    run, samples = SourcesRun(**data["run"]), data["samples"]
    print(f"rss: 4 paced sources at {SOURCE_FPS:g} fps on {args.rss_model} for {args.rss_minutes:g} min; "
          f"{machine_line()}")
    print(f"total {run.total:.1f} inf/s, per source {spread(run.per_source_fps)} fps, age p50 {run.age_p50_ms:.0f} ms "
          f"p95 {run.age_p95_ms:.0f} ms; RSS before the pipeline {run.rss_start_mb:.0f} MB")
    print("  t (s)  RSS (MB)")
    for t, rss in samples:
        print(f"{t:>7.0f} {rss:>9.1f}")
    return 0


PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")
"""Runs a command and prints its own peak RSS (KB) last on stderr: a wrapper per command, so peaks do not mix."""


def _timed_command(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one command in its own process."""
    import resource

    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr.strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.monotonic() - started, cpu, int(done.stderr.strip().splitlines()[-1]) / 1024


def section_report(args: argparse.Namespace) -> int:
    """The sample report's time, then a long result file streamed into a report in bounded memory."""
    import tempfile

    from visionedge.result import iso_utc

    cli = [sys.executable, "-m", "visionedge", "--log-level", "WARNING"]
    print(f"report: {machine_line()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wall, cpu, rss = _timed_command([*cli, "analyze", "sample", "--model", "yolox-nano", "--no-progress",
                                         "--jsonl", str(folder / "sample.jsonl"), "--report", str(folder / "s.html")])
        print(f"analyze sample --model yolox-nano --report: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS "
              f"{rss:.0f} MB, report {(folder / 's.html').stat().st_size / 1e6:.1f} MB")
        records = [json.loads(line) for line in (folder / "sample.jsonl").read_text(encoding="utf-8").splitlines()]
        big = folder / "day.jsonl"
        step = 86_400 / args.report_records
        with big.open("w", encoding="utf-8") as out:
            for i in range(args.report_records):
                record = dict(records[i % len(records)], frame_index=i, timestamp=iso_utc(1.79e9 + i * step))
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
        wall, cpu, rss = _timed_command([*cli, "report", str(big), "-o", str(folder / "day.html"), "--no-progress"])
        print(f"report over {args.report_records:,} records ({big.stat().st_size / 1e9:.2f} GB JSONL, 24 h): "
              f"{wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss:.0f} MB, report "
              f"{(folder / 'day.html').stat().st_size / 1e6:.1f} MB")
    return 0


# ---- shadow phase cost -------------------------------------------------------------------------------------------

SHADOW_PAIRS = ("squeezenet:squeezenet-fp32", "yolox-nano:yolov3-tiny")
"""active:candidate; the second candidate is about three times slower than its active model."""


@dataclass
class ShadowCost:
    """One active model's throughput without and with a candidate in shadow, round by round."""

    active: str
    candidate: str
    frames: int
    plain_fps: list[float] = field(default_factory=list)
    shadow_fps: list[float] = field(default_factory=list)
    compared: list[int] = field(default_factory=list)
    every: list[int] = field(default_factory=list)
    layout: str = ""

    def ratios(self) -> list[float]:
        """With shadow / without, per round (the two ran back to back)."""
        return [b / a for a, b in zip(self.plain_fps, self.shadow_fps, strict=True)]


def measure_shadow(active_name: str, candidate_name: str, frames: int, rounds: int) -> ShadowCost:
    """Rounds of the analyze pipeline on the same frames, alternating no shadow and a candidate in shadow."""
    from visionedge.config import ShadowSettings
    from visionedge.modelstore.shadow import Shadow, effective_every

    config = config_with({})
    fetcher = make_fetcher(config)
    video = fetcher.media(SAMPLE_VIDEO)
    active = load_model(active_name, config, fetcher)
    candidate = load_model(candidate_name, config, fetcher)
    settings = ShadowSettings(frames=100_000, max_s=3600.0)
    result = ShadowCost(active_name, candidate_name, frames,
                        layout=f"{active.layout.workers} worker(s) x {active.layout.intra_op_threads} thread(s)")

    def one(shadow: Shadow | None) -> float:
        source = FirstFrames(VideoFileSource(video, "vtest"), frames)
        pipeline = Pipeline(source, active, [])
        pipeline.shadow = shadow
        start = time.perf_counter()
        stats = pipeline.run(threading.Event())
        if stats.inferred != frames:
            raise SystemExit(f"pipeline analysed {stats.inferred} of {frames} frames")
        return frames / (time.perf_counter() - start)

    one(None)
    one(Shadow(active, candidate, settings))  # warm-up of both paths
    for _ in range(rounds):
        result.plain_fps.append(one(None))
        shadow = Shadow(active, candidate, settings)
        result.shadow_fps.append(one(shadow))
        result.compared.append(shadow.comparison.frames)
        result.every.append(effective_every(shadow))
    return result


def section_shadow(args: argparse.Namespace) -> int:
    """Per active:candidate pair, a worker process; then the table."""
    print(f"shadow: vtest.avi, first {args.frames} frames as fast as the pipeline goes, {args.rounds} rounds "
          f"alternating without/with a candidate in shadow (max_cost 0.1); {machine_line()}")
    head = (f"{'active':<11} {'candidate':<16} {'fps plain':>10} {'fps shadow':>11} "
            f"{'shadow/plain (median, range)':>29} {'compared':>9} {'every k':>8}")
    print(head)
    print("-" * len(head))
    for pair in args.shadow_pairs:
        active, candidate = pair.split(":", 1)
        r = ShadowCost(**worker(["shadow-worker", active, candidate], args))
        ratios = r.ratios()
        print(f"{r.active:<11} {r.candidate:<16} {statistics.median(r.plain_fps):>10.1f} "
              f"{statistics.median(r.shadow_fps):>11.1f} {statistics.median(ratios):>12.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}){'':>5} {statistics.median(r.compared):>9.0f} "
              f"{statistics.median(r.every):>8.0f}", flush=True)
        print(f"{'':<11} layout: {r.layout}; fps medians over rounds; compared = frames the candidate ran on per round")
    return 0


# ---- plumbing -----------------------------------------------------------------------------------------------------


def worker(command: list[str], args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    """A fresh process per measurement, so its RSS and threads belong to it alone; JSON on its last stdout line."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", *command, "--frames", str(args.frames),
            "--rounds", str(args.rounds), "--source-seconds", str(args.source_seconds),
            "--rss-minutes", str(args.rss_minutes)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench worker {' '.join(command)} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_worker(args: argparse.Namespace) -> int:
    """Child side of `worker`."""
    logging.disable(logging.INFO)
    kind, name, *rest = args.worker
    if kind == "throughput-worker":
        data: object = run_throughput_worker(name, args)
    elif kind == "shadow-worker":
        data = asdict(measure_shadow(name, rest[0], args.frames, args.rounds))
    elif kind == "sources-worker":
        data = asdict(measure_sources(name, int(rest[0]), args.source_seconds, SOURCE_FPS))
    else:
        samples: list[tuple[float, float]] = []
        run = measure_sources(name, int(rest[0]), args.rss_minutes * 60, SOURCE_FPS, samples)
        data = {"run": asdict(run), "samples": samples}
    sys.stdout.write(json.dumps(data) + "\n")
    return 0


# ---- less work per frame (i14): the scene-change gate, and model variants per provider -------------------------


class HeldFrame(Source):
    """One frame held still for `seconds` at `fps` with fresh sensor-like noise per frame (sigma 4 grey levels)."""

    def __init__(self, image: np.ndarray, seconds: float, fps: float) -> None:
        super().__init__("still", "a held frame with noise")
        self.image, self.total, self.rate = image.astype(np.float32), int(seconds * fps), fps

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Noisy copies of the frame (25 noise fields made beforehand, so making them costs no CPU per frame),
        timestamped as a camera at `fps` would stamp them."""
        rng = np.random.default_rng(0)
        noisy = [np.clip(self.image + 4.0 * rng.standard_normal(self.image.shape, dtype=np.float32), 0, 255)
                 .astype(np.uint8) for _ in range(25)]
        start = time.time()
        for index in range(int(self.total or 0)):
            yield Frame(noisy[index % len(noisy)], self.source_id, index, start + index / self.rate)


def gate_run(model: Model, source: Source, gate_on: bool) -> dict[str, float]:
    """One pipeline pass; CPU per frame covers every thread of the process (decode, gate, inference, records)."""
    from visionedge.config import GateSettings

    sink = jsonl_sink(Path(os.devnull))
    try:
        pipeline = Pipeline(source, model, [sink], gate=GateSettings(mode="on" if gate_on else "off"))
        wall, cpu = time.perf_counter(), time.process_time()
        pipeline.run(threading.Event())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        sink.close()
    frames = pipeline.stats.published
    stats = pipeline.gate_stats()
    return {"frames": frames, "gated": stats.gated if stats else 0, "fps": frames / wall,
            "cpu_ms_per_frame": 1000 * cpu / frames, "gate_ms_per_frame": 1000 * stats.cpu_s / frames if stats else 0.0}


def section_gate(args: argparse.Namespace) -> int:
    """Gated share and CPU per frame with the gate on and off: a still scene (60 s, noise) and vtest.avi (busy)."""
    from visionedge.config import GateSettings
    from visionedge.gate import SceneGate

    config = load_config()
    fetcher = make_fetcher(config)
    video = fetcher.media(SAMPLE_VIDEO)
    capture = cv2.VideoCapture(str(video))
    first = capture.read()[1]
    capture.release()
    # Camera time: the still clip as a 10 fps camera delivers it, max_skip_s re-checks counted on frame timestamps.
    still = HeldFrame(first, 60.0, 10.0)
    camera = SceneGate(GateSettings(mode="on"))
    for frame in still.frames(threading.Event()):
        camera.should_infer(frame.image, frame.timestamp)
    held = camera.stats()
    print(f"gate decisions on a 10 fps camera clock: still scene 60 s: {held.gated}/{held.gated + held.inferred} "
          f"gated ({100 * held.gated / (held.gated + held.inferred):.1f} %, re-checked every "
          f"{GateSettings().max_skip_s:g} s); gate CPU {1000 * held.cpu_s / (held.gated + held.inferred):.3f} ms/frame")
    print()
    head = (f"{'model':<12} {'clip':<14} {'gate':<5} {'frames':>7} {'gated':>6} {'share':>6} {'fps':>7} "
            f"{'CPU ms/frame':>13} {'gate ms/frame':>14}")
    print(head)
    print("-" * len(head))
    for name in args.models:
        model = load_model(name, config, fetcher)
        for clip, make in (("still 60 s", lambda: HeldFrame(first, 60.0, 10.0)),
                           ("vtest.avi", lambda: VideoFileSource(video, "vtest"))):
            for gate_on in (False, True):
                r = gate_run(model, make(), gate_on)
                print(f"{name:<12} {clip:<14} {'on' if gate_on else 'off':<5} {r['frames']:>7.0f} {r['gated']:>6.0f} "
                      f"{100 * r['gated'] / r['frames']:>5.1f}% {r['fps']:>7.1f} {r['cpu_ms_per_frame']:>13.2f} "
                      f"{r['gate_ms_per_frame']:>14.3f}")
    print()
    print("The still clip's frames carry 10 fps camera timestamps, so its max_skip_s re-checks count as on a camera; "
          "vtest.avi is analysed as fast as it decodes (wall-clock timestamps). CPU ms/frame: all threads of the "
          "process (decode, gate, inference, records) over frames published.")
    return 0


def section_variants(args: argparse.Namespace) -> int:
    """Inferences per second and agreement for each variant of each model on each execution provider offered."""
    from visionedge.compare import compare_frames
    from visionedge.config import RuntimeSettings
    from visionedge.models.fetch import resolve_model
    from visionedge.models.quantize import quantize, sample_frames
    from visionedge.models.variants import discover, time_models, variants_folder

    config = load_config()
    fetcher = make_fetcher(config)
    video = fetcher.media(SAMPLE_VIDEO)
    media = [fetcher.ensure(a) for a in ASSETS.values() if a.kind == "media"]
    root = args.variants_dir
    providers = [p for p in ("OpenVINOExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    print(f"{machine_line()}; providers {', '.join(providers)}; variants in {root}")
    head = f"{'model':<12} {'variant':<8} {'provider':<10} {'inf/s':>7} {'ms p50':>7} {'agreement':>10} {'frames':>7}"
    print(head)
    print("-" * len(head))
    for name in args.models:
        resolved = resolve_model(name, fetcher)
        folder = variants_folder(root, resolved.model_path)
        if not discover(resolved.model_path, root):
            quantize(resolved, folder, media, runtime=config.desired.runtime)
        files = {"deployed": (resolved.manifest, resolved.model_path, resolved.labels_path)}
        files |= {c.kind: (c.manifest, c.path, c.labels) for c in discover(resolved.model_path, root)}
        threads = config.desired.runtime.intra_op_threads
        reference = Model(*files["deployed"], RuntimeSettings(providers=["cpu"], intra_op_threads=threads))
        for provider in providers:
            runtime = RuntimeSettings(providers=[provider], intra_op_threads=threads)
            models = {kind: Model(*spec, runtime) for kind, spec in files.items()}
            timings = time_models(models, runs=args.variant_runs)
            for kind, model in models.items():
                figures = compare_frames(reference, model, sample_frames([video], 100, offset=0.5)).figures()
                agreement = "undefined" if figures.agreement is None else f"{figures.agreement:.3f}"
                label = kind if kind != "deployed" else ("fp16*" if model.signature.dtype == np.float16 else "fp32*")
                print(f"{name:<12} {label:<8} {provider.removesuffix('ExecutionProvider'):<10} "
                      f"{1000 / timings[kind]:>7.1f} {timings[kind]:>7.2f} {agreement:>10} {figures.frames:>7}")
    print()
    print("*: the deployed file. inf/s: session.run alone, median of interleaved runs on one frame. agreement: "
          "visionedge.compare against the deployed file on the CPU provider (classifiers top-1, detectors F1), "
          "on 100 vtest frames between the calibration frames.")
    return 0


SECTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "throughput": section_throughput,
    "sources": section_sources,
    "rss": section_rss,
    "report": section_report,
    "gate": section_gate,
    "variants": section_variants,
    "shadow": section_shadow,
}
DEFAULT_SECTIONS = ("throughput", "sources")
"""`rss` takes 10 minutes, `report` about 3, `gate` and `variants` 2-5 (variants quantizes first): ask by name."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", nargs="+", choices=list(SECTIONS), default=list(DEFAULT_SECTIONS),
                        help=f"sections to run (default: {' '.join(DEFAULT_SECTIONS)})")
    parser.add_argument("--frames", type=int, default=300, help="throughput: first N frames of vtest.avi")
    parser.add_argument("--rounds", type=int, default=5, help="throughput: rounds of every path (default 5)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="built-in model names")
    parser.add_argument("--source-counts", nargs="+", type=int, default=list(SOURCE_COUNTS),
                        help="sources: how many sources per run (default 1 2 4 8)")
    parser.add_argument("--source-seconds", type=float, default=20.0, help="sources: seconds per run (default 20)")
    parser.add_argument("--rss-minutes", type=float, default=10.0, help="rss: minutes of the long run (default 10)")
    parser.add_argument("--report-records", type=int, default=1_000_000,
                        help="report: records in the long result file (default 1,000,000)")
    parser.add_argument("--rss-model", default="yolox-nano", help="rss: the model of the long run (default yolox-nano)")
    parser.add_argument("--min-ratio", type=float, help="throughput: exit 1 when a median analyze/plain is below")
    parser.add_argument("--variants-dir", type=Path, default=Path(tempfile.gettempdir()) / "visionedge-bench-variants",
                        help="variants: where the int8/fp32 variants are made, or reused when already there")
    parser.add_argument("--variant-runs", type=int, default=100, help="variants: timed runs per variant and provider")
    parser.add_argument("--shadow-pairs", nargs="+", default=list(SHADOW_PAIRS),
                        help="shadow: active:candidate built-in names (default: " + " ".join(SHADOW_PAIRS) + ")")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.frames < WARMUP_RUNS or args.rounds < 1:
        parser.error(f"--frames must be at least {WARMUP_RUNS} and --rounds at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections in order."""
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    failed = 0
    for name in args.section:
        failed |= SECTIONS[name](args)
        print()
    return failed


if __name__ == "__main__":
    sys.exit(main())
