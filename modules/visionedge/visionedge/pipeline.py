"""Capture, inference and publishing on their own threads, joined by bounded hand-offs that never stall capture."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from visionedge.errors import VisionEdgeError
from visionedge.frame import Frame, Inference
from visionedge.gate import SceneGate
from visionedge.models.model import Model
from visionedge.models.preprocess import Geometry
from visionedge.result import to_record
from visionedge.sinks import Sink
from visionedge.sources import Source, SourceState

log = logging.getLogger(__name__)

POLL_S = 0.1
RESULTS_QUEUE = 32
"""Frames between inference and publishing; each holds raw model outputs (about 1 MB for a COCO detector)."""


@dataclass(frozen=True, slots=True)
class Job:
    """A captured frame, with its input tensor when the capture thread could prepare it for `model`."""

    frame: Frame
    model: Model | None = None
    tensor: np.ndarray | None = None
    geometry: Geometry | None = None


@dataclass(frozen=True, slots=True)
class Ran:
    """Raw outputs of one frame on their way to decoding on the publish thread."""

    frame: Frame
    model: Model
    raw: list[np.ndarray]
    geometry: Geometry
    inference_ms: float


@dataclass(frozen=True, slots=True)
class Reused:
    """A frame the scene-change gate let through without inference: it gets the last result, marked reused."""

    frame: Frame


class LatestSlot:
    """Holds only the newest frame: a slow consumer sees fresh frames, and every overwritten one is counted."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Job | None = None
        self.overwritten = 0
        self.closed = False

    def put(self, frame: Job, stop: threading.Event) -> None:
        """Replace whatever is waiting."""
        with self._cond:
            if self._frame is not None:
                self.overwritten += 1
            self._frame = frame
            self._cond.notify()

    def get(self, timeout: float) -> Job | None:
        """The newest frame, or None after timeout or when closed and empty."""
        with self._cond:
            if self._frame is None and not self.closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        """No more frames will come."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class OrderedQueue:
    """Every frame, in order, with back-pressure on the producer (for analysis of files)."""

    def __init__(self, size: int = 8) -> None:
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=size + 1)  # + 1: room for the end marker
        self.overwritten = 0
        self.closed = False

    def put(self, frame: Job, stop: threading.Event) -> None:
        """Block until there is room, honouring stop."""
        while not stop.is_set():
            try:
                self._queue.put(frame, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def get(self, timeout: float) -> Job | None:
        """The next job, or None after timeout or at the end."""
        if self.closed and self._queue.empty():
            return None
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """No more frames will come; a consumer waiting in get() wakes at once."""
        self.closed = True
        # End marker (get() returns it as "nothing"); when full, the consumer has frames left and sees `closed` after.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # type: ignore[arg-type]


@dataclass
class PipelineStats:
    """Counters that status, metrics and the closing summary read."""

    started: float = field(default_factory=time.monotonic)
    captured: int = 0
    inferred: int = 0
    skipped: int = 0
    published: int = 0
    errors: int = 0
    last_error: str = ""
    label_counts: Counter[str] = field(default_factory=Counter)
    fps: float = 0.0
    frame_age_s: float = 0.0
    """How old the last frame was when inference started: latency that a latest-frame source keeps bounded."""

    def elapsed(self) -> float:
        """Seconds since start."""
        return time.monotonic() - self.started


Record = dict[str, Any]


class Pipeline:
    """source -> frame -> model -> record -> sinks; the model can be swapped between two frames."""

    def __init__(self, source: Source, model: Model, sinks: Sequence[Sink], *, fps: float | None = None,
                 on_record: Callable[[Record], None] | None = None,
                 on_inference_error: Callable[[Model, Exception], None] | None = None,
                 watchdog_s: float | None = None, gate: SceneGate | None = None) -> None:
        self.source = source
        self.model = model
        self.sinks = sinks
        self.fps = fps
        self.on_record = on_record
        self.on_inference_error = on_inference_error
        self.watchdog_s = watchdog_s if source.live else None
        self.gate = gate
        self._gated_model: Model | None = None
        self._last_inference: Inference | None = None
        self.stats = PipelineStats()
        self.reopened = 0
        self._last_frame = time.monotonic()
        self.handoff: LatestSlot | OrderedQueue = LatestSlot() if source.live else OrderedQueue()
        self.results: queue.Queue[Ran | Reused | None] = queue.Queue(maxsize=RESULTS_QUEUE)
        self.fatal: VisionEdgeError | None = None
        self._threads: list[threading.Thread] = []
        self._capture_thread = threading.Thread()
        self._rate_skipped = 0
        self._recent: deque[float] = deque(maxlen=64)
        self.latest: tuple[Frame, Inference] | None = None
        """The last analysed frame and its result, for on-device snapshots."""

    def swap_model(self, model: Model) -> None:
        """Take effect at the next frame; the frame in flight finishes on the old model."""
        self.model = model

    def run(self, stop: threading.Event) -> PipelineStats:
        """Run until the source ends or stop is set; returns the final counters."""
        done = threading.Event()
        capture_stop = self._start_capture()
        self._threads = [
            threading.Thread(target=self._infer, args=(stop,), name="inference", daemon=True),
            threading.Thread(target=self._publish, args=(done,), name="publish", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        while not done.wait(POLL_S):
            if stop.is_set():
                break
            if self._silent_too_long():
                capture_stop.set()
                capture_stop = self._start_capture()
        capture_stop.set()
        for thread in [*self._threads, self._capture_thread]:
            thread.join(timeout=1.5)
        self.stats.skipped = self.skipped()
        return self.stats

    def skipped(self) -> int:
        """Frames captured but never analysed: overwritten by newer ones, or over the target rate."""
        return self.handoff.overwritten + self._rate_skipped

    def _start_capture(self) -> threading.Event:
        """A capture thread with its own stop event, so a stuck one can be abandoned and replaced."""
        stop = threading.Event()
        self._last_frame = time.monotonic()
        self._capture_thread = threading.Thread(target=self._capture, args=(stop,), name="capture", daemon=True)
        self._capture_thread.start()
        return stop

    def _silent_too_long(self) -> bool:
        """The watchdog: a live source that delivered nothing for watchdog_s is reopened, even if a read hangs."""
        if self.watchdog_s is None or time.monotonic() - self._last_frame < self.watchdog_s:
            return False
        if self.source.state not in (SourceState.STREAMING, SourceState.CONNECTING):
            return False  # retrying already: its own backoff decides when to try again
        self.reopened += 1
        self.source.note_stall(f"no frame for {self.watchdog_s:g} s: reopening")
        return True

    def _capture(self, stop: threading.Event) -> None:
        ordered = isinstance(self.handoff, OrderedQueue)
        try:
            for frame in self.source.frames(stop):
                if stop.is_set():
                    return
                self._last_frame = time.monotonic()
                self.stats.captured += 1
                # Every queued frame will be analysed, so preprocess it here, overlapping the previous inference;
                # a latest-frame hand-off would throw most of that work away, so there inference prepares.
                self.handoff.put(self._prepare(frame) if ordered else Job(frame), stop)
        except VisionEdgeError as err:
            self.fatal = err
            self.stats.last_error = str(err)
            log.error("%s", err)
        if not stop.is_set():
            self.handoff.close()

    def _prepare(self, frame: Frame) -> Job:
        model = self.model
        try:
            tensor, geometry = model.prepare(frame.image)
        except Exception:  # noqa: BLE001 - the inference thread prepares it again and reports the error
            return Job(frame)
        return Job(frame, model, tensor, geometry)

    def _infer(self, stop: threading.Event) -> None:
        period = 1.0 / self.fps if self.fps else 0.0
        next_due = 0.0
        try:
            while not stop.is_set():
                job = self.handoff.get(POLL_S)
                if job is None:
                    if not self.handoff.closed:
                        continue
                    job = self.handoff.get(0)  # a frame put just before close is still analysed
                    if job is None:
                        return
                now = time.monotonic()
                if period and now < next_due:
                    self._rate_skipped += 1
                    continue
                next_due = max(next_due + period, now) if period else 0.0
                if self._unchanged(job.frame):
                    self._put_result(Reused(job.frame), stop)
                else:
                    self._infer_one(job, stop)
        finally:
            self._put_result(None, stop, force=True)

    def _unchanged(self, frame: Frame) -> bool:
        """The gate's verdict; a swapped model always runs first, so a reused result never names an old model."""
        gate, model = self.gate, self.model
        if gate is None:
            return False
        if model is not self._gated_model:
            gate.reset()
            self._gated_model = model
        return not gate.should_infer(frame.image, frame.timestamp)

    def _infer_one(self, job: Job, stop: threading.Event) -> None:
        model, frame = self.model, job.frame
        self.stats.frame_age_s = max(time.time() - frame.timestamp, 0.0)
        try:
            if job.model is model and job.tensor is not None and job.geometry is not None:
                tensor, geometry = job.tensor, job.geometry
            else:  # live hand-off, or the model was swapped after the frame was prepared
                tensor, geometry = model.prepare(frame.image)
            raw, elapsed = model.run(tensor)
        except Exception as err:  # noqa: BLE001 - a model failing on one frame must not stop the pipeline
            self._inference_failed(model, frame, err)
            return
        stats = self.stats
        stats.inferred += 1
        now = time.monotonic()
        self._recent.append(now)
        span = now - self._recent[0]
        stats.fps = (len(self._recent) - 1) / span if span > 0 else 0.0
        self._put_result(Ran(frame, model, raw, geometry, elapsed), stop)

    def _inference_failed(self, model: Model, frame: Frame, err: Exception) -> None:
        if self.gate is not None:
            self.gate.reset()  # the next frame must not reuse a result that never came
        self.stats.errors += 1
        self.stats.last_error = f"inference failed on frame {frame.index}: {err}"
        log.warning("%s", self.stats.last_error)
        if self.on_inference_error is not None:
            self.on_inference_error(model, err)

    def _put_result(self, record: Ran | Reused | None, stop: threading.Event, force: bool = False) -> None:
        while True:
            try:
                self.results.put(record, timeout=POLL_S)
                return
            except queue.Full:
                if stop.is_set() and not force:
                    return

    def _publish(self, done: threading.Event) -> None:
        try:
            while True:
                ran = self.results.get()
                if ran is None:
                    return
                if isinstance(ran, Reused):
                    if self._last_inference is None:  # its reference failed to decode: no result to reuse
                        self.stats.errors += 1
                        continue
                    inference = replace(self._last_inference, inference_ms=0.0)
                else:
                    try:  # decoding here overlaps it with the next frame's inference
                        inference = ran.model.finish(ran.raw, ran.geometry, ran.inference_ms)
                    except Exception as err:  # noqa: BLE001 - one undecodable frame must not stop the pipeline
                        self._last_inference = None
                        self._inference_failed(ran.model, ran.frame, err)
                        continue
                    self._last_inference = inference
                self.latest = (ran.frame, inference)
                record = to_record(ran.frame, inference)
                if isinstance(ran, Reused):
                    record["reused"] = True
                self.stats.label_counts.update(record.get("counts", {}))
                for sink in self.sinks:
                    sink.publish(record)
                self.stats.published += 1
                if self.on_record is not None:
                    self.on_record(record)
        finally:
            done.set()
