"""rss: --rss-minutes (default 10) of 4 sources at 10 fps on --rss-model (YOLOX-nano), RSS sampled every 30 s
(it must stay flat)."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from bench.common import machine_line, spread, worker
from bench.sections.sources import SOURCE_FPS, SourcesRun, measure_sources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This section's own options."""
    parser.add_argument("--rss-minutes", type=float, default=10.0, help="rss: minutes of the long run (default 10)")
    parser.add_argument("--rss-model", default="yolox-nano", help="rss: the model of the long run (default yolox-nano)")


def work(args: argparse.Namespace, params: list[str]) -> object:
    """Child process: the long run, with its RSS samples."""
    samples: list[tuple[float, float]] = []
    run = measure_sources(params[0], int(params[1]), args.rss_minutes * 60, SOURCE_FPS, samples)
    return {"run": asdict(run), "samples": samples}


def run(args: argparse.Namespace) -> int:
    """A long run of 4 YOLOX-nano sources; RSS sampled every 30 s."""
    data = worker(["rss", args.rss_model, "4"], args)
    result, samples = SourcesRun(**data["run"]), data["samples"]
    print(f"rss: 4 paced sources at {SOURCE_FPS:g} fps on {args.rss_model} for {args.rss_minutes:g} min; "
          f"{machine_line()}")
    print(f"total {result.total:.1f} inf/s, per source {spread(result.per_source_fps)} fps, age p50 "
          f"{result.age_p50_ms:.0f} ms p95 {result.age_p95_ms:.0f} ms; RSS before the pipeline "
          f"{result.rss_start_mb:.0f} MB")
    print("  t (s)  RSS (MB)")
    for t, rss in samples:
        print(f"{t:>7.0f} {rss:>9.1f}")
    return 0
