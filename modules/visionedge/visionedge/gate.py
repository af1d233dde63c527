"""Scene-change gate: a frame that looks like the last inferred one reuses its result instead of running the model.

The test is a difference of two 64x48 greyscale copies: the frame's and the one of the last frame that was inferred
(not the previous frame, so a slow drift adds up until it counts). A pixel counts as changed when it moved by more
than `threshold` grey levels; the scene changed when at least `min_area` of the pixels did. Each small pixel averages
about 3x3 samples of the frame, which divides sensor noise by three, so noise alone does not open the gate.
Whatever the test says, a frame is inferred at least every `max_skip_s` (a light turned on fades in without motion).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from visionedge.config import GateSettings

SIZE = (64, 48)
"""Width and height of the grey copy the gate compares."""


@dataclass(frozen=True, slots=True)
class GateStats:
    """Counters for status, metrics and the heartbeat."""

    gated: int
    inferred: int
    cpu_s: float
    """CPU time the gate itself spent (thread time), to compare with what it saves."""


def shrink(image: np.ndarray) -> np.ndarray:
    """64x48 copy averaging about 3x3 samples per pixel: every k-th pixel first, so the cost does not grow with the
    frame (0.15 ms for 768x576 instead of 0.34 ms averaging every pixel), while noise still drops threefold."""
    height, width = image.shape[:2]
    step = max(1, min(height // SIZE[1], width // SIZE[0]) // 3)
    return cv2.resize(image[::step, ::step], SIZE, interpolation=cv2.INTER_AREA)


class SceneGate:
    """Decides per frame whether the model must run; used by the inference thread only."""

    def __init__(self, settings: GateSettings) -> None:
        self.settings = settings
        self._reference: np.ndarray | None = None
        self._reference_at = 0.0
        self._gated = 0
        self._inferred = 0
        self._cpu_ns = 0

    def should_infer(self, image: np.ndarray, timestamp: float) -> bool:
        """True when the scene changed since the last inferred frame, or it is due a re-check; that frame becomes
        the new reference."""
        start = time.thread_time_ns()
        small = shrink(image)
        if small.ndim == 3:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        reference = self._reference
        infer = (reference is None or timestamp - self._reference_at >= self.settings.max_skip_s
                 or self._changed(small, reference))
        if infer:
            self._reference, self._reference_at = small, timestamp
            self._inferred += 1
        else:
            self._gated += 1
        self._cpu_ns += time.thread_time_ns() - start
        return infer

    def _changed(self, small: np.ndarray, reference: np.ndarray) -> bool:
        moved = cv2.absdiff(small, reference) > self.settings.threshold
        return int(np.count_nonzero(moved)) >= self.settings.min_area * moved.size

    def reset(self) -> None:
        """Forget the reference, so the next frame is inferred (model swapped, or the last inference failed)."""
        self._reference = None

    def stats(self) -> GateStats:
        """Frames gated and inferred so far, and the gate's CPU time."""
        return GateStats(self._gated, self._inferred, self._cpu_ns / 1e9)


def gate_for(settings: GateSettings, live: bool) -> SceneGate | None:
    """The gate a source gets: `auto` gates live sources (cameras, paced files) and not analysis of files."""
    enabled = settings.mode == "on" or (settings.mode == "auto" and live)
    return SceneGate(settings) if enabled else None
