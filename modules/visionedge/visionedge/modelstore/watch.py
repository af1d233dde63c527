"""Probation for a freshly swapped model: its own frames, errors and latency decide whether it stays."""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from visionedge.config import RollbackSettings

MIN_LATENCY_SAMPLES = 5
"""Fewer inference times than this say too little about a median to judge a model by it."""


class LatencyWindow:
    """Recent inference times of the committed model: the baseline that a new model is compared with."""

    def __init__(self, values: Iterable[float] = (), size: int = 200) -> None:
        self._lock = threading.Lock()
        self._values: deque[float] = deque(values, maxlen=size)

    def add(self, ms: float) -> None:
        """Record one inference time (called per frame from the pipeline)."""
        with self._lock:
            self._values.append(ms)

    def median(self) -> float | None:
        """Median in ms, or None while there are too few samples."""
        with self._lock:
            values = list(self._values)
        return statistics.median(values) if len(values) >= MIN_LATENCY_SAMPLES else None


class Watch:
    """One model on probation; the pipeline feeds it through add(), the manager waits for its verdict."""

    def __init__(self, key: str, settings: RollbackSettings, baseline_ms: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.key = key
        self.settings = settings
        self.baseline_ms = baseline_ms
        self._clock = clock
        self.deadline = clock() + settings.watch_s if settings.watch_s > 0 else None
        self.frames = 0
        self.latencies: list[float] = []
        self._failure: str | None = None
        self._lock = threading.Lock()
        self._decided = threading.Event()

    def describe(self) -> str:
        """What the watch waits for, for the 202 acknowledgement."""
        parts = []
        if self.settings.watch_frames > 0:
            parts.append(f"{self.settings.watch_frames} frames")
        if self.settings.watch_s > 0:
            parts.append(f"{self.settings.watch_s:g} s")
        return f"watching {self.key} for {' or '.join(parts)}"

    def add(self, inference_ms: float, ok: bool, reason: str = "") -> None:
        """One frame of the watched model; the first failure decides at once."""
        with self._lock:
            if self._decided.is_set():
                return
            self.frames += 1
            if not ok:
                self._failure = f"inference failed on frame {self.frames} of the watch: {reason or 'unknown error'}"
                self._decided.set()
                return
            self.latencies.append(inference_ms)
            if 0 < self.settings.watch_frames <= self.frames:
                self._decided.set()

    def abort(self, reason: str) -> None:
        """End the watch with a failure decided elsewhere (e.g. an operator's rollback)."""
        with self._lock:
            if self._failure is None:
                self._failure = reason
            self._decided.set()

    def wait(self, timeout: float) -> bool:
        """True once enough frames have been seen or a failure occurred."""
        return self._decided.wait(timeout)

    def remaining(self) -> float | None:
        """Seconds until the time limit, or None when the watch is bounded by frames only."""
        return None if self.deadline is None else self.deadline - self._clock()

    def verdict(self) -> str | None:
        """None when the model may stay; otherwise the one-line reason to roll it back."""
        with self._lock:
            if self._failure is not None:
                return self._failure
            latencies = list(self.latencies)
        factor = self.settings.max_latency_factor
        if self.baseline_ms is None or len(latencies) < MIN_LATENCY_SAMPLES:
            return None
        median = statistics.median(latencies)
        if median > factor * self.baseline_ms:
            return (f"median inference {median:.1f} ms over {len(latencies)} frames is above {factor:g} x the "
                    f"previous model's {self.baseline_ms:.1f} ms")
        return None
