"""calibration: what on-device calibration's quantizing child costs the serving model: the real pipeline (the fp16
SqueezeNet a device serves) over the first --frames frames of vtest.avi as fast as it goes, rounds alternating without
and with the child quantizing a 24-frame sample beside it (nice 19 in the idle scheduling class, one core, one
thread, as the module starts it): serving fps of each, their ratio per round (target >= 0.90), and the child's wall
time alone and beside the pipeline with the CPU share it got."""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from visionedge.app import make_fetcher
from visionedge.models.catalog import SAMPLE_VIDEO
from visionedge.models.fetch import resolve_model
from visionedge.models.model import Model
from visionedge.modelstore.calibration import SAMPLE_FRAMES, FrameSample, start_quantizer
from visionedge.pipeline import Pipeline
from visionedge.quantize import sample_frames
from visionedge.sources import VideoFileSource

from bench.clips import FirstFrames
from bench.common import config_with, machine_line, worker


@dataclass
class CalibrationCost:
    """Serving throughput without and with the quantizing child, round by round, and the child's own figures."""

    frames: int
    plain_fps: list[float] = field(default_factory=list)
    child_fps: list[float] = field(default_factory=list)
    alone_s: float = 0.0
    beside_s: list[float] = field(default_factory=list)
    beside_cpu_share: list[float] = field(default_factory=list)
    layout: str = ""

    def ratios(self) -> list[float]:
        """With the child / without, per round (the two ran back to back)."""
        return [b / a for a, b in zip(self.plain_fps, self.child_fps, strict=True)]


class Quantizer:
    """The module's quantizing child, run one at a time, with the wall and CPU seconds of each."""

    def __init__(self, manifest: Path, resolved_model: Path, labels: Path, sample: FrameSample, out: Path) -> None:
        self.args = (manifest, resolved_model, labels, sample, out)
        self.child: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.finished: list[tuple[float, float]] = []
        """(wall s, CPU s) of each child, in order."""

    def start(self) -> None:
        """A child quantizing the sample, as the module starts it."""
        self.started = time.monotonic()
        self.child = start_quantizer(*self.args)

    def running(self) -> bool:
        """Whether the child has not ended yet."""
        return self.child is not None and self.child.poll() is None

    def finish(self) -> None:
        """Wait for the child and note its figures (CPU from the waited-for children's usage)."""
        assert self.child is not None
        if self.child.wait() != 0:
            raise SystemExit(f"the quantizing child failed (exit {self.child.returncode})")
        wall = time.monotonic() - self.started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime - sum(c for _, c in self.finished)
        self.finished.append((wall, cpu))
        self.child = None


def measure_calibration(frames: int, rounds: int) -> CalibrationCost:
    """Rounds of the analyze pipeline on the same frames, alternating alone and beside the quantizing child."""
    config = config_with({})
    fetcher = make_fetcher(config)
    video = fetcher.media(SAMPLE_VIDEO)
    resolved = resolve_model("squeezenet", fetcher)
    active = Model(resolved.manifest, resolved.model_path, resolved.labels_path, config.desired.runtime)
    result = CalibrationCost(frames, layout=f"{active.layout.workers} worker(s) x "
                                            f"{active.layout.intra_op_threads} thread(s)")
    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as work:
        manifest = Path(work) / "manifest.yaml"
        manifest.write_text(yaml.safe_dump(resolved.manifest.model_dump(mode="json", exclude_none=True)),
                            encoding="utf-8")
        sample = FrameSample(Path(work) / "sample")
        for i, frame in enumerate(sample_frames([video], SAMPLE_FRAMES)):
            sample.offer(frame, now=i * sample.every_s)
        quantizer = Quantizer(manifest, resolved.model_path, resolved.labels_path, sample, Path(work) / "out")
        quantizer.start()
        quantizer.finish()
        result.alone_s = quantizer.finished[0][0]

        def one() -> float:
            pipeline = Pipeline(FirstFrames(VideoFileSource(video, "vtest"), frames), active, [])
            start = time.perf_counter()
            stats = pipeline.run(threading.Event())
            if stats.inferred != frames:
                raise SystemExit(f"pipeline analysed {stats.inferred} of {frames} frames")
            return frames / (time.perf_counter() - start)

        one()  # warm-up
        for _ in range(rounds):
            result.plain_fps.append(one())
            quantizer.start()
            beside = [one()]
            while quantizer.running():  # runs that ended while the child ran; the one it ended in is dropped
                beside.append(one())
            quantizer.finish()
            result.child_fps.append(statistics.median(beside[:-1] or beside))
        children = quantizer.finished[1:]
        result.beside_s = [wall for wall, _ in children]
        result.beside_cpu_share = [cpu / wall for wall, cpu in children]
    return result


def work(args: argparse.Namespace, params: list[str]) -> object:
    """Child process: the whole measurement."""
    return asdict(measure_calibration(args.frames, args.rounds))


def run(args: argparse.Namespace) -> int:
    """One worker process, then the table."""
    print(f"calibration: vtest.avi, first {args.frames} frames as fast as the pipeline goes, {args.rounds} rounds "
          f"alternating without/with the quantizing child (nice 19, idle class, one core); {machine_line()}")
    r = CalibrationCost(**worker(["calibration"], args))
    ratios = r.ratios()
    head = (f"{'serving':<11} {'fps plain':>10} {'fps beside child':>17} {'child/plain (median, range)':>28} "
            f"{'child alone s':>14} {'child beside s':>15} {'child CPU share':>16}")
    print(head)
    print("-" * len(head))
    print(f"{'squeezenet':<11} {statistics.median(r.plain_fps):>10.1f} {statistics.median(r.child_fps):>17.1f} "
          f"{statistics.median(ratios):>11.2f} ({min(ratios):.2f}-{max(ratios):.2f}){'':>4} {r.alone_s:>14.1f} "
          f"{statistics.median(r.beside_s) if r.beside_s else 0.0:>15.1f} "
          f"{statistics.median(r.beside_cpu_share) if r.beside_cpu_share else 0.0:>16.2f}", flush=True)
    print(f"{'':<11} layout: {r.layout}; fps medians over rounds; child beside = wall time of the children that ran "
          f"beside the pipeline rounds ({len(r.beside_s)})")
    return 0
