"""One source's side of the pipeline: its capture thread, hand-off, watchdog, sequence numbers and counters."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from visionedge.config import GateSettings
from visionedge.errors import VisionEdgeError
from visionedge.frame import Frame, Geometry, Inference
from visionedge.gate import SceneGate, gate_for
from visionedge.models.model import Model
from visionedge.sources import Source, SourceState
from visionedge.supervise import Part

log = logging.getLogger(__name__)

POLL_S = 0.1
ORDERED_DEPTH = 8
"""Prepared frames a file source may queue ahead of inference (each a model input tensor)."""
AGE_SAMPLES = 1024


@dataclass(frozen=True, slots=True)
class Job:
    """A captured frame, with its input tensor when the capture thread could prepare it for `model`."""

    frame: Frame
    model: Model | None = None
    tensor: np.ndarray | None = None
    geometry: Geometry | None = None


@dataclass
class Counters:
    """What the pipeline counts, for one source or over all of them."""

    captured: int = 0
    inferred: int = 0
    published: int = 0
    errors: int = 0
    last_error: str = ""
    label_counts: Counter[str] = field(default_factory=Counter)
    fps: float = 0.0
    frame_age_s: float = 0.0
    """How old the last frame was when inference started: latency that a latest-frame source keeps bounded."""


@dataclass
class FeedStats(Counters):
    """Counters of one source that status, metrics and the closing summary read; only `Feed` changes them, each on
    one thread (captured: capture; frame ages: dispatch, under the pipeline's condition; the rest: publishing)."""

    ages: deque[float] = field(default_factory=lambda: deque(maxlen=AGE_SAMPLES))
    """Recent frame ages, for percentiles."""


class Handoff:
    """Frames of one source waiting for a worker, under the pipeline's shared condition.

    `latest`: only the newest frame waits and every overwritten one is counted (live sources: a slow model sees fresh
    frames). Otherwise every frame waits in order and capture blocks when ORDERED_DEPTH are waiting (file analysis).
    """

    def __init__(self, cond: threading.Condition, latest: bool) -> None:
        self._cond = cond
        self.latest = latest
        self._jobs: deque[Job] = deque()
        self.overwritten = 0
        self.closed = False

    def put(self, job: Job, stop: threading.Event) -> None:
        """Queue a frame (replacing the waiting one when `latest`); blocks for room otherwise, honouring stop."""
        with self._cond:
            if self.latest:
                if self._jobs:
                    self._jobs.clear()
                    self.overwritten += 1
            else:
                while len(self._jobs) >= ORDERED_DEPTH and not stop.is_set():
                    self._cond.wait(POLL_S)
                if stop.is_set():
                    return
            self._jobs.append(job)
            self._cond.notify_all()

    def pop(self) -> Job | None:
        """The next waiting frame; the caller holds the shared condition."""
        if not self._jobs:
            return None
        job = self._jobs.popleft()
        self._cond.notify_all()  # a producer may be waiting for room
        return job

    @property
    def drained(self) -> bool:
        """Closed and nothing left waiting: this source is finished."""
        return self.closed and not self._jobs

    def close(self) -> None:
        """No more frames will come."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Feed:
    """A source as the pipeline drives it: capture on its own thread, reopened by the watchdog when it goes silent."""

    def __init__(self, source: Source, cond: threading.Condition, model: Callable[[], Model],
                 fps: float | None, watchdog_s: float | None) -> None:
        self.source = source
        self.current_model = model
        self.period = 1.0 / fps if fps else 0.0
        self.watchdog_s = watchdog_s if source.live else None
        self.handoff = Handoff(cond, latest=source.live)
        self.stats = FeedStats()
        self.reopened = 0
        self.fatal: VisionEdgeError | None = None
        self.latest: tuple[Frame, Inference] | None = None
        """The last analysed frame of this source and its result, for on-device snapshots."""
        self.gate: SceneGate | None = None
        """Scene-change gate of this source (consulted at dispatch, under the pipeline's condition)."""
        self.gated_model: Model | None = None
        self._last_inference: Inference | None = None
        """The result a frame the gate found unchanged reuses (publish thread; None after a failure)."""
        # Scheduling state, changed only under the pipeline's condition.
        self.next_due = 0.0
        self.rate_skipped = 0
        self._dispatched = 0
        # Publishing state, changed only on the publish thread.
        self._recent: deque[float] = deque(maxlen=64)
        self._last_frame = time.monotonic()
        self._thread = threading.Thread()
        self._stop = threading.Event()
        self.part = Part(f"capture-{source.source_id}")
        """The capture thread is restarted after an unexpected error (not after a source's own end or failure)."""

    @property
    def source_id(self) -> str:
        """The id every record of this source carries."""
        return self.source.source_id

    @property
    def last_error(self) -> str:
        """Why this source's frames last went unanalysed: the error that ended it, else the last frame that failed."""
        return str(self.fatal) if self.fatal is not None else self.stats.last_error

    def skipped(self) -> int:
        """Frames captured but never analysed: overwritten by newer ones, or over the target rate."""
        return self.handoff.overwritten + self.rate_skipped

    def start(self) -> None:
        """A capture thread with its own stop event, so a stuck one can be abandoned and replaced."""
        self._stop = threading.Event()
        self._last_frame = time.monotonic()
        stop = self._stop
        self._thread = self.part.thread(lambda: self._capture(stop), stop)
        self._thread.start()

    def stop(self) -> None:
        """Ask the capture thread to end."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        """Wait a bounded time for the capture thread."""
        self._thread.join(timeout)

    def watch(self) -> None:
        """The watchdog: a live source that delivered nothing for watchdog_s is reopened, even if a read hangs."""
        if self.watchdog_s is None or time.monotonic() - self._last_frame < self.watchdog_s:
            return
        if self.source.state not in (SourceState.STREAMING, SourceState.CONNECTING):
            return  # retrying already: its own backoff decides when to try again
        self.reopened += 1
        self.source.note_stall(f"no frame for {self.watchdog_s:g} s: reopening")
        self.stop()
        self.start()

    def set_gate(self, settings: GateSettings) -> None:
        """A scene-change gate as the settings say (`auto`: live sources only), under the pipeline's condition."""
        self.gate = gate_for(settings, self.source.live)

    def dispatch(self, now: float, model: Model) -> tuple[int, Job, bool] | None:
        """The next due frame (caller holds the pipeline's condition): its number in this source's dispatch order,
        the job, and whether the gate found it unchanged for `model`; None when no frame is due."""
        job = self.handoff.pop()
        while job is not None and not self.due(now):
            job = self.handoff.pop()
        if job is None:
            return None
        age = max(time.time() - job.frame.timestamp, 0.0)
        self.stats.frame_age_s = age
        self.stats.ages.append(age)
        seq = self._dispatched
        self._dispatched += 1
        return seq, job, self.unchanged(job.frame, model)

    def due(self, now: float) -> bool:
        """Rate limit at dispatch (caller holds the condition): a frame before the next due time is skipped."""
        if not self.period:
            return True
        if now < self.next_due:
            self.rate_skipped += 1
            return False
        self.next_due = max(self.next_due + self.period, now)
        return True

    def unchanged(self, frame: Frame, model: Model) -> bool:
        """The gate's verdict; a swapped model always runs first, so a reused result never names an old model."""
        gate = self.gate
        if gate is None:
            return False
        if model is not self.gated_model:
            gate.reset()
            self.gated_model = model
        return not gate.should_infer(frame.image, frame.timestamp)

    # ---- publishing (the publish thread only) ---------------------------------------------------------------

    def note_result(self) -> None:
        """One frame of this source came out of the model: refresh the recent rate."""
        self.stats.inferred += 1
        now = time.monotonic()
        self._recent.append(now)
        span = now - self._recent[0]
        self.stats.fps = (len(self._recent) - 1) / span if span > 0 else 0.0

    def decoded(self, inference: Inference) -> None:
        """A frame's fresh result: the one the next unchanged frames reuse."""
        self._last_inference = inference

    def reuse(self) -> Inference | None:
        """The result an unchanged frame takes; None, counted as an error, when the frame it follows failed."""
        if self._last_inference is None:
            self.stats.errors += 1
            return None
        return replace(self._last_inference, inference_ms=0.0)

    def failed(self, reason: str) -> None:
        """A frame's inference or decoding failed: counted and said, and no later frame reuses a result from before."""
        self._last_inference = None
        if self.gate is not None:
            self.gate.reset()  # the next frame must not reuse a result that never came
        self.stats.errors += 1
        self.stats.last_error = reason

    def analysed(self, frame: Frame, inference: Inference, counts: Mapping[str, int]) -> None:
        """A record of this source is about to leave: its frame is the newest, its labels are counted."""
        self.latest = (frame, inference)
        self.stats.label_counts.update(counts)

    def published(self) -> None:
        """Every sink took the record."""
        self.stats.published += 1

    def _capture(self, stop: threading.Event) -> None:
        ordered = not self.handoff.latest
        try:
            for frame in self.source.frames(stop):
                if stop.is_set():
                    return
                self._last_frame = time.monotonic()
                self.stats.captured += 1
                # Every queued frame will be analysed, so preprocess it here, overlapping inference; a latest-frame
                # hand-off would throw most of that work away, so there the worker prepares.
                self.handoff.put(self._prepare(frame) if ordered else Job(frame), stop)
        except VisionEdgeError as err:
            self.fatal = err  # this thread's only error: last_error reads it, publishing writes stats.last_error
            log.error("%s", err)
        if not stop.is_set():
            self.handoff.close()

    def _prepare(self, frame: Frame) -> Job:
        model = self.current_model()
        try:
            tensor, geometry = model.prepare(frame.image)
        except Exception:  # noqa: BLE001 - the worker prepares it again and reports the error
            return Job(frame)
        return Job(frame, model, tensor, geometry)
