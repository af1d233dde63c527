"""On-device calibration's parts: the bounded sample of the camera's own frames and the low-priority child that
quantizes it (the phase that drives them is modelstore/calibrating.py).

`FrameSample` keeps one frame a second of the live stream as a JPEG on the device's own volume (count and bytes capped;
frames never leave the device and the folder is deleted once used, or at the next start when a crash interrupted it).
`start_quantizer` runs `models quantize` on that sample in a child process at the lowest CPU priority, on one core and
one thread, so the serving model keeps its throughput (the phase kills it past `QUANTIZE_MAX_S`); the child dies with
the module, writes into a scratch folder and moves the finished variant into its output folder only at the end, so a
kill -9 leaves nothing half made and the served model untouched.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2

from visionedge.config import RuntimeSettings
from visionedge.errors import VisionEdgeError, first_line
from visionedge.frame import Frame
from visionedge.models.manifest import load_manifest

log = logging.getLogger(__name__)

SAMPLE_FRAMES = 24
"""Frames kept for calibration: half calibrate, half give the child's own agreement figure (the shadow on live
frames decides). 12 calibration frames of TUD-Stadtmitte gave 0.98 top-1 agreement on all 179 frames."""
SAMPLE_BYTES = 24 * 2**20
SAMPLE_EVERY_S = 1.0
"""Seconds between kept frames, so the sample spreads over the scene's changes rather than one moment."""
NICE = 19
"""The child's CPU priority: it yields to the serving model, which keeps its throughput."""
QUANTIZE_MAX_S = 3600.0
"""How long the quantizing child may run before it is killed and the calibration fails. In the idle class it gets
only CPU time nobody else wants, so on a saturated device it could wait forever, holding the sample on disk. Here it
took 2.1 s alone (SqueezeNet, 24 frames; YOLOX-nano 4.2 s) and 26-52 s beside a pipeline running flat out (0.05-0.07
of a core; docs/benchmarks.md): an hour is 70 times that, room for a core ten times slower, and still an end."""
SCRATCH_PREFIX = ".calibrating-"
PR_SET_PDEATHSIG = 1
QUIET_RUNPY = "ignore::RuntimeWarning:runpy"
"""runpy warns that the package imported this module before `-m` ran it; harmless, but it would be the last line of
a child killed before it wrote anything, which the phase reports as the reason."""
VARIANT_FILES = ("int8.onnx", "int8.yaml")
"""Moved in this order: the manifest last, since discovery reads manifests."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one on-device calibration; the defaults serve devices, tests shrink them to stay quick (and
    raise the child's priority on a shared test machine, where the idle class may get no CPU at all)."""

    frames: int = SAMPLE_FRAMES
    every_s: float = SAMPLE_EVERY_S
    quantize_max_s: float = QUANTIZE_MAX_S
    nice: int = NICE


class FrameSample:
    """A bounded folder of the camera's own frames, on the device only, deleted once used."""

    def __init__(self, folder: Path, max_frames: int = SAMPLE_FRAMES, max_bytes: int = SAMPLE_BYTES,
                 every_s: float = SAMPLE_EVERY_S) -> None:
        self.folder = folder
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.every_s = every_s
        self.bytes = 0
        self._last: float | None = None
        self.discard()  # a sample left by a crash is never reused: it may be of another model's time
        folder.mkdir(parents=True, mode=0o700)

    @property
    def count(self) -> int:
        """Frames kept so far."""
        return len(self.paths())

    @property
    def full(self) -> bool:
        """No more frames will be kept."""
        return self.count >= self.max_frames

    def offer(self, frame: Frame, now: float | None = None) -> bool:
        """Keep `frame` when one is due and the bounds allow; True when kept."""
        now = time.monotonic() if now is None else now
        if self.full or (self._last is not None and now - self._last < self.every_s):
            return False
        ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok or self.bytes + len(data) > self.max_bytes:
            return False
        (self.folder / f"{self.count:04d}.jpg").write_bytes(data.tobytes())
        self.bytes += len(data)
        self._last = now
        return True

    def paths(self) -> list[Path]:
        """The kept frames, oldest first."""
        return sorted(self.folder.glob("*.jpg")) if self.folder.is_dir() else []

    def discard(self) -> None:
        """Delete every kept frame and the folder."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.bytes = 0


def start_quantizer(manifest: Path, model_path: Path, labels: Path, sample: FrameSample, out_folder: Path,
                    nice: int = NICE, log_file: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """`models quantize` on the sample in a child at `nice`, pinned to one core, one thread; its messages go to
    `log_file` (a pipe nobody reads could fill and stall it)."""
    for stale in out_folder.glob(f"{SCRATCH_PREFIX}*"):  # left by a child killed mid-way
        shutil.rmtree(stale, ignore_errors=True)
    half = max(1, sample.count // 2)
    command = [sys.executable, "-W", QUIET_RUNPY, "-m", "visionedge.modelstore.calibration", str(manifest),
               str(model_path), str(labels), str(sample.folder), str(out_folder), "--frames", str(half)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=log_file or subprocess.DEVNULL, preexec_fn=lambda: _low_priority(nice))


def _low_priority(nice: int) -> None:
    """In the child before exec: a low CPU priority, on the last core only, and death with the module (a kill -9 of
    the module must not leave a child that moves a variant in after the restart cleaned up)."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.nice(nice)
    if nice == NICE:  # and the idle class: it runs only on CPU time no other process of the device wants
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[-1]})


def discard_variant(out_folder: Path) -> None:
    """Remove a calibrated variant (refused, or of a model no longer served) so `auto` never picks it."""
    for name in reversed(VARIANT_FILES):
        (out_folder / name).unlink(missing_ok=True)


def _child(argv: Sequence[str]) -> int:
    """The quantizing child: calibrate in a scratch folder, then move the variant in, manifest last."""
    from visionedge.models.fetch import ResolvedModel
    from visionedge.quantize import quantize

    parser = argparse.ArgumentParser(prog="visionedge.modelstore.calibration")
    for name in ("manifest", "model", "labels", "sample", "out"):
        parser.add_argument(name, type=Path)
    parser.add_argument("--frames", type=int, required=True)
    args = parser.parse_args(argv)
    resolved = ResolvedModel(load_manifest(args.manifest), args.model, args.labels)
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = args.out / f"{SCRATCH_PREFIX}{os.getpid()}"
    try:
        quantize(resolved, scratch, [args.sample], frames=args.frames, measure=[args.sample],
                 measure_frames=args.frames, runtime=RuntimeSettings(intra_op_threads=1))
        for name in VARIANT_FILES:
            os.replace(scratch / name, args.out / name)
        labels = args.out / args.labels.name
        if not labels.exists():
            shutil.copyfile(args.labels, labels)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _main(argv: Sequence[str]) -> int:
    """The child's entry: a failure it can explain is one line on stderr (the phase reports the last line)."""
    try:
        return _child(argv)
    except VisionEdgeError as err:
        sys.stderr.write(f"{first_line(err)}\n")
        return 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(_main(sys.argv[1:]))
