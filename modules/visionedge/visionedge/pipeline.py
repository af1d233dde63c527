"""Capture, inference and publishing on their own threads, joined by bounded hand-offs that never stall capture."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from visionedge.errors import VisionEdgeError
from visionedge.frame import Frame, Inference
from visionedge.models.model import Model
from visionedge.result import to_record
from visionedge.sinks import Sink
from visionedge.sources import Source, SourceState

log = logging.getLogger(__name__)

POLL_S = 0.1


class LatestSlot:
    """Holds only the newest frame: a slow consumer sees fresh frames, and every overwritten one is counted."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self.overwritten = 0
        self.closed = False

    def put(self, frame: Frame, stop: threading.Event) -> None:
        """Replace whatever is waiting."""
        with self._cond:
            if self._frame is not None:
                self.overwritten += 1
            self._frame = frame
            self._cond.notify()

    def get(self, timeout: float) -> Frame | None:
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
        self._queue: queue.Queue[Frame] = queue.Queue(maxsize=size)
        self.overwritten = 0
        self.closed = False

    def put(self, frame: Frame, stop: threading.Event) -> None:
        """Block until there is room, honouring stop."""
        while not stop.is_set():
            try:
                self._queue.put(frame, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def get(self, timeout: float) -> Frame | None:
        """The next frame, or None after timeout."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """No more frames will come."""
        self.closed = True


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
    inference_ms_total: float = 0.0
    fps: float = 0.0
    frame_age_s: float = 0.0
    """How old the last frame was when inference started: latency that a latest-frame source keeps bounded."""

    def elapsed(self) -> float:
        """Seconds since start."""
        return time.monotonic() - self.started


Record = dict[str, Any]


class Pipeline:
    """source -> frame -> model -> record -> sinks; the model can be swapped between two frames."""

    def __init__(self, source: Source, model: Model, sinks: list[Sink], *, fps: float | None = None,
                 on_record: Callable[[Record], None] | None = None,
                 on_inference_error: Callable[[Model, Exception], None] | None = None,
                 watchdog_s: float | None = None) -> None:
        self.source = source
        self.model = model
        self.sinks = sinks
        self.fps = fps
        self.on_record = on_record
        self.on_inference_error = on_inference_error
        self.watchdog_s = watchdog_s if source.live else None
        self.stats = PipelineStats()
        self.reopened = 0
        self._last_frame = time.monotonic()
        self.handoff: LatestSlot | OrderedQueue = LatestSlot() if source.live else OrderedQueue()
        self.results: queue.Queue[Record | None] = queue.Queue(maxsize=256)
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
        try:
            for frame in self.source.frames(stop):
                if stop.is_set():
                    return
                self._last_frame = time.monotonic()
                self.stats.captured += 1
                self.handoff.put(frame, stop)
        except VisionEdgeError as err:
            self.fatal = err
            self.stats.last_error = str(err)
            log.error("%s", err)
        if not stop.is_set():
            self.handoff.close()

    def _infer(self, stop: threading.Event) -> None:
        period = 1.0 / self.fps if self.fps else 0.0
        next_due = 0.0
        try:
            while not stop.is_set():
                frame = self.handoff.get(POLL_S)
                if frame is None:
                    if self.handoff.closed and self.handoff.get(0) is None:
                        return
                    continue
                now = time.monotonic()
                if period and now < next_due:
                    self._rate_skipped += 1
                    continue
                next_due = max(next_due + period, now) if period else 0.0
                self._infer_one(frame, stop)
        finally:
            self._put_result(None, stop, force=True)

    def _infer_one(self, frame: Frame, stop: threading.Event) -> None:
        model = self.model
        self.stats.frame_age_s = max(time.time() - frame.timestamp, 0.0)
        try:
            inference = model.infer(frame.image)
        except Exception as err:  # noqa: BLE001 - a model failing on one frame must not stop the pipeline
            self.stats.errors += 1
            self.stats.last_error = f"inference failed on frame {frame.index}: {err}"
            log.warning("%s", self.stats.last_error)
            if self.on_inference_error is not None:
                self.on_inference_error(model, err)
            return
        self.latest = (frame, inference)
        stats = self.stats
        stats.inferred += 1
        stats.inference_ms_total += inference.inference_ms
        now = time.monotonic()
        self._recent.append(now)
        span = now - self._recent[0]
        stats.fps = (len(self._recent) - 1) / span if span > 0 else 0.0
        self._put_result(to_record(frame, inference), stop)

    def _put_result(self, record: Record | None, stop: threading.Event, force: bool = False) -> None:
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
                record = self.results.get()
                if record is None:
                    return
                self.stats.label_counts.update(record.get("counts", {}))
                for sink in self.sinks:
                    sink.publish(record)
                self.stats.published += 1
                if self.on_record is not None:
                    self.on_record(record)
        finally:
            done.set()
