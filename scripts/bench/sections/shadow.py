"""shadow: what a model update's shadow phase costs the active model: the real pipeline over the first --frames
frames of vtest.avi as fast as it goes, rounds alternating without and with a candidate in shadow (default budget,
max_cost 0.1): active fps of each, their ratio per round (target >= 0.90), frames the candidate compared and the k of
"every k-th frame" the budget came to. Pairs: --shadow-pairs."""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field

from visionedge.app import load_model, make_fetcher
from visionedge.config import ShadowSettings
from visionedge.models.catalog import SAMPLE_VIDEO
from visionedge.modelstore.shadow import Shadow, effective_every
from visionedge.pipeline import Pipeline
from visionedge.sources import VideoFileSource

from bench.clips import FirstFrames
from bench.common import config_with, machine_line, worker

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This section's own options."""
    parser.add_argument("--shadow-pairs", nargs="+", default=list(SHADOW_PAIRS),
                        help="shadow: active:candidate built-in names (default: " + " ".join(SHADOW_PAIRS) + ")")


def work(args: argparse.Namespace, params: list[str]) -> object:
    """Child process: one active:candidate pair."""
    return asdict(measure_shadow(params[0], params[1], args.frames, args.rounds))


def run(args: argparse.Namespace) -> int:
    """Per active:candidate pair, a worker process; then the table."""
    print(f"shadow: vtest.avi, first {args.frames} frames as fast as the pipeline goes, {args.rounds} rounds "
          f"alternating without/with a candidate in shadow (max_cost 0.1); {machine_line()}")
    head = (f"{'active':<11} {'candidate':<16} {'fps plain':>10} {'fps shadow':>11} "
            f"{'shadow/plain (median, range)':>29} {'compared':>9} {'every k':>8}")
    print(head)
    print("-" * len(head))
    for pair in args.shadow_pairs:
        active, candidate = pair.split(":", 1)
        r = ShadowCost(**worker(["shadow", active, candidate], args))
        ratios = r.ratios()
        print(f"{r.active:<11} {r.candidate:<16} {statistics.median(r.plain_fps):>10.1f} "
              f"{statistics.median(r.shadow_fps):>11.1f} {statistics.median(ratios):>12.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}){'':>5} {statistics.median(r.compared):>9.0f} "
              f"{statistics.median(r.every):>8.0f}", flush=True)
        print(f"{'':<11} layout: {r.layout}; fps medians over rounds; compared = frames the candidate ran on per round")
    return 0
