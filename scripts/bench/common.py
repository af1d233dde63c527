"""What several sections share: the module's configuration with runtime overrides, the machine line, RSS, and the
worker process each measurement runs in."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import onnxruntime as ort
from visionedge.config import ModuleConfig, load_config
from visionedge.models.runtime import usable_cores

DEFAULT_MODELS = ("squeezenet", "yolox-nano")
WARMUP_RUNS = 20
WARMUP_FRAMES = 30
ENTRY = Path(__file__).resolve().parent.parent / "bench.py"
"""The script a worker process runs (the same command line as the parent, plus --worker)."""


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


def spread(values: Sequence[float]) -> str:
    """min-max of a list of figures."""
    return f"{min(values):.1f}-{max(values):.1f}"


def worker(command: list[str], args: argparse.Namespace) -> dict:  # type: ignore[type-arg]
    """A fresh process per measurement, so its RSS and threads belong to it alone; JSON on its last stdout line.

    `command` is a section name and its parameters; the child runs that section's `work(args, parameters)` with the
    parent's own command-line options."""
    argv = [sys.executable, str(ENTRY), *args.argv, "--worker", *command]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench worker {' '.join(command)} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
