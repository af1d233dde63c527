"""report: `visionedge analyze sample --model yolox-nano --report` (the documented sample command), then
`visionedge report` over --report-records YOLOX records (real records replayed over 24 h): wall time, CPU time and
peak RSS of each command, and the report's size."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from visionedge.result import iso_utc

from bench.common import machine_line

PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")
"""Runs a command and prints its own peak RSS (KB) last on stderr: a wrapper per command, so peaks do not mix."""


def _timed_command(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one command in its own process."""
    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr.strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.monotonic() - started, cpu, int(done.stderr.strip().splitlines()[-1]) / 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This section's own options."""
    parser.add_argument("--report-records", type=int, default=1_000_000,
                        help="report: records in the long result file (default 1,000,000)")


def run(args: argparse.Namespace) -> int:
    """The sample report's time, then a long result file streamed into a report in bounded memory."""
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
