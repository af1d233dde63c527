"""sources: 1, 2, 4, 8 paced vtest.avi sources at 10 fps each into one module pipeline, per model: total
inferences/s, per-source fps (fairness), frame age p50/p95 at inference start, skipped frames, RSS."""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from visionedge.analytics.live import SceneAnalytics
from visionedge.app import load_model, make_fetcher
from visionedge.models.catalog import SAMPLE_VIDEO
from visionedge.pipeline import Pipeline
from visionedge.sources import Source, VideoFileSource

from bench.common import config_with, machine_line, rss_mb, spread, worker

SOURCE_COUNTS = (1, 2, 4, 8)
SOURCE_FPS = 10.0


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
                    samples: list[tuple[float, float]] | None = None,
                    scene: SceneAnalytics | None = None) -> SourcesRun:
    """N paced sources into one pipeline for `seconds`; per-source analysed rate after a 3 s warm-up."""
    config = config_with({})
    fetcher = make_fetcher(config)
    video = fetcher.media(SAMPLE_VIDEO)
    model = load_model(name, config, fetcher)
    rss_start = rss_mb()
    pipeline = Pipeline(paced_sources(video, count, fps), model, [])
    pipeline.scene = scene
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This section's own options."""
    parser.add_argument("--source-counts", nargs="+", type=int, default=list(SOURCE_COUNTS),
                        help="sources: how many sources per run (default 1 2 4 8)")
    parser.add_argument("--source-seconds", type=float, default=20.0, help="sources: seconds per run (default 20)")


def work(args: argparse.Namespace, params: list[str]) -> object:
    """Child process: one model with N sources for --source-seconds."""
    return asdict(measure_sources(params[0], int(params[1]), args.source_seconds, SOURCE_FPS))


def run(args: argparse.Namespace) -> int:
    """Per model and source count, a worker process; then the table."""
    print(f"sources: paced vtest.avi at {SOURCE_FPS:g} fps each, {args.source_seconds:g} s per run after 3 s warm-up; "
          f"{machine_line()}")
    head = (f"{'model':<11} {'sources':>7} {'total inf/s':>11} {'per-source fps min-max':>23} {'skipped/s':>9} "
            f"{'age p50':>8} {'age p95':>8} {'RSS start':>9} {'RSS end':>8}")
    print(head)
    print("-" * len(head))
    for name in args.models:
        for count in args.source_counts:
            r = SourcesRun(**worker(["sources", name, str(count)], args))
            print(f"{r.model:<11} {r.sources:>7} {r.total:>11.1f} {spread(r.per_source_fps):>23} "
                  f"{r.skipped / r.seconds:>9.1f} {r.age_p50_ms:>6.0f}ms {r.age_p95_ms:>6.0f}ms "
                  f"{r.rss_start_mb:>6.0f} MB {r.rss_end_mb:>5.0f} MB", flush=True)
    print("age: how old a frame was when its inference started (capture to dispatch); skipped: frames a source "
          "captured that no worker took (overwritten by a newer one or over its 10 fps).")
    return 0
