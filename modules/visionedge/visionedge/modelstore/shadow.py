"""Shadow phase of a model update: the candidate runs beside the active model on sampled live frames, before any
swap, and must agree with it and be fast enough to be let in.

The pipeline offers each analysed frame (inference thread) and hands back the active result (publish thread); the
candidate's results go nowhere but the comparison, so telemetry keeps coming from the active model only. Sampling is
a time budget: the candidate may use `max_cost` of the inference thread's time (0.1 keeps >= 90 % of the active
model's throughput), which amounts to every k-th frame with k adapted to both models' speeds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from visionedge.compare import Comparison, Figures, Subject
from visionedge.config import ShadowSettings
from visionedge.errors import first_line
from visionedge.frame import Frame, Geometry, Inference
from visionedge.models.model import Model
from visionedge.modelstore.errors import UpdateCancelled
from visionedge.modelstore.health import HealthBook

log = logging.getLogger(__name__)

CREDIT_S = 1.0
"""Seconds of budget that may pile up while no frames come (a camera outage), so a burst after it stays short."""
REASON_CHARS = 200
KEEP_UP_SHARE = 0.8
"""A candidate of another kind must fit the frames analysed per second into this share of the inference workers'
time at its p95, leaving a fifth for bursts and the scene-change gate letting more frames through."""
LATENCY_MIN_FRAMES = 30
"""Compared frames a like-for-like latency ratio needs before it may refuse (the default `shadow.min_frames`)."""
HEALTH_EVERY_S = 10.0
"""How often the shadow phase's running figures are reported while it lasts."""
AttachFn = Callable[["Shadow | None"], None]


@dataclass(frozen=True, slots=True)
class ShadowRun:
    """The candidate's raw outputs for one frame, on their way to the publish thread with the active result."""

    shadow: Shadow
    raw: list[np.ndarray]
    geometry: Geometry
    inference_ms: float

    def compare(self, frame: Frame, active: Inference) -> None:
        """Publish thread: decode the candidate's result and compare it with the active model's."""
        self.shadow.compare(frame, active, self)


@dataclass(frozen=True, slots=True)
class ShadowVerdict:
    """What the gates concluded; `reason` is the one line for the acknowledgement and modelHealth."""

    passed: bool
    reason: str
    figures: Figures


class Shadow:
    """One candidate in shadow; the pipeline feeds it through offer()/compare(), the manager waits for verdict()."""

    def __init__(self, active: Model, candidate: Model, settings: ShadowSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.active = active
        self.candidate = candidate
        self.settings = settings
        self.comparison = Comparison(Subject.of(active), Subject.of(candidate))
        self._clock = clock
        self.started = clock()
        self.deadline = self.started + settings.max_s
        self._lock = threading.Lock()
        self._credit = 0.0
        self._last = self.started
        self.offered = 0
        self.sampled = 0
        self._failure: str | None = None
        self._decided = threading.Event()

    def describe(self) -> str:
        """What the shadow waits for, for the 202 acknowledgement."""
        s = self.settings
        return (f"shadow: comparing {self.comparison.candidate.name} {self.comparison.candidate.version} with "
                f"{self.active.name} {self.active.version} on up to {s.frames} live frames or {s.max_s:g} s")

    # ---- pipeline side -------------------------------------------------------------------------------------

    def offer(self, frame: Frame, model: Model) -> ShadowRun | None:
        """Inference thread, after the active model ran on `frame`: run the candidate too when the budget allows. The
        active model is matched by name and version, so one reloaded with new runtime settings still counts."""
        now = self._clock()
        with self._lock:
            if self._decided.is_set() or (model.name, model.version) != (self.active.name, self.active.version):
                return None
            self.offered += 1
            self._credit = min(self._credit + self.settings.max_cost * (now - self._last),
                               self.settings.max_cost * CREDIT_S)
            self._last = now
            if self._credit < 0:
                return None
            self.sampled += 1
        started = time.perf_counter()
        try:
            tensor, geometry = self.candidate.prepare(frame.image)
            raw, elapsed = self.candidate.run(tensor)
        except Exception as err:  # noqa: BLE001 - any candidate failure is a verdict, never a pipeline error
            self._fail(f"candidate failed on a live frame: {first_line(err)}")
            return None
        finally:
            spent = time.perf_counter() - started
            with self._lock:
                self._credit -= spent
        return ShadowRun(self, raw, geometry, elapsed)

    def compare(self, frame: Frame, active: Inference, run: ShadowRun) -> None:
        """Publish thread: decode the candidate's outputs (refusing NaN/inf) and fold the frame into the figures."""
        if self._decided.is_set():
            return
        try:
            candidate = self.candidate.finish(run.raw, run.geometry, run.inference_ms, "a live frame")
        except Exception as err:  # noqa: BLE001 - a candidate that cannot decode a live frame is refused
            self._fail(f"candidate failed on a live frame: {first_line(err)}")
            return
        self.comparison.add(active, candidate, frame.index, frame.source_id)
        if self.comparison.frames >= self.settings.frames:
            self._decided.set()

    # ---- manager side --------------------------------------------------------------------------------------

    def wait(self, timeout: float) -> bool:
        """True once enough frames were compared or the candidate failed."""
        return self._decided.wait(timeout)

    def remaining(self) -> float:
        """Seconds until max_s."""
        return self.deadline - self._clock()

    def finish(self) -> None:
        """Stop sampling: the verdict is about to be taken (or the phase was cancelled)."""
        self._decided.set()

    def verdict(self) -> ShadowVerdict:
        """Apply the gates to the figures so far: health, enough frames, agreement, latency."""
        self.finish()
        figures = self.comparison.figures()
        s = self.settings
        with self._lock:
            failure = self._failure
        if failure is not None:
            return ShadowVerdict(False, _clip(f"shadow: {failure}"), figures)
        needed = min(s.min_frames, s.frames)
        if figures.frames < needed:
            head = f"only {figures.frames} frames compared in {self._clock() - self.started:.0f} s ({needed} needed)"
            if self.offered < needed:
                return ShadowVerdict(False, _clip(f"shadow: {head}; is the camera delivering?"), figures)
            latency = latency_summary(figures, s) if not figures.undefined else \
                f"p95 {figures.candidate_p95_ms or 0:.1f} ms"
            return ShadowVerdict(False, _clip(f"shadow: {head} of {self.offered} analysed: too slow for its "
                                              f"{s.max_cost:.0%} share of the inference time; {latency}"), figures)
        if figures.undefined:
            load = self.load(figures)
            return ShadowVerdict(load is not None and load <= KEEP_UP_SHARE,
                                 _clip(f"shadow: {keep_up_summary(figures, load, self.rate())}"), figures)
        low = figures.agreement is not None and figures.agreement < s.min_agreement
        return ShadowVerdict(not (low or slower(figures, s)), _clip(f"shadow: {summary(figures, s)}"), figures)

    def rate(self) -> float:
        """Frames per second the active model analysed during the phase (every source together)."""
        elapsed = self._clock() - self.started
        return self.offered / elapsed if elapsed > 0 else 0.0

    def load(self, figures: Figures) -> float | None:
        """Share of the inference workers' time the candidate would need at its p95 to analyse every frame that
        came (None without a figure): the latency gate for a model of another kind, which a ratio cannot judge."""
        if figures.candidate_p95_ms is None:
            return None
        return figures.candidate_p95_ms / 1000.0 * self.rate() / max(1, self.active.layout.workers)

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = reason
        self._decided.set()


def judged(figures: Figures) -> bool:
    """Whether there are enough compared frames for a latency ratio to mean something: on 5 frames of 20 devices
    sharing 2 cores, identical weights measured p50 2.2x-4.7x (a ratio of noise, not a regression)."""
    return figures.frames >= LATENCY_MIN_FRAMES


def slower(figures: Figures, settings: ShadowSettings) -> bool:
    """The ratio gate of a like-for-like update: slower at p95 *and* at the median, so that a p95 pushed up by a
    few frames of load on a busy device (the same pair measured 1.4x-3.9x across 20 devices) is not a verdict."""
    p95, p50 = figures.latency_ratio, figures.latency_ratio_p50
    return judged(figures) and p95 is not None and p50 is not None and min(p95, p50) > settings.max_latency_ratio


def summary(figures: Figures, settings: ShadowSettings) -> str:
    """"agreement 0.07 < 0.80 over 150 frames; latency p95 1.13x, p50 1.05x": each figure, with its gate where it
    failed; ratios with two decimals so that a refusal always shows why."""
    a, n = figures.agreement, figures.frames
    if a is None:
        head = f"no agreement figure; {n} frames"
    elif a < settings.min_agreement:
        head = f"agreement {a:.2f} < {settings.min_agreement:.2f} over {n} frames"
    else:
        head = f"agreement {a:.2f} over {n} frames"
    return f"{head}; {latency_summary(figures, settings)}"


def latency_summary(figures: Figures, settings: ShadowSettings) -> str:
    """"latency p95 2.04x, p50 2.01x > 2x": both ratios, and the gate where it refused."""
    p95, p50 = figures.latency_ratio, figures.latency_ratio_p50
    if p95 is None or p50 is None:
        return "latency p95 n/a"
    if not judged(figures):
        return f"latency p95 {p95:.2f}x, p50 {p50:.2f}x, not judged on {figures.frames} frames " \
               f"({LATENCY_MIN_FRAMES} needed; probation still watches it)"
    gate = f" > {settings.max_latency_ratio:g}x" if slower(figures, settings) else ""
    return f"latency p95 {p95:.2f}x, p50 {p50:.2f}x{gate}"


def keep_up_summary(figures: Figures, load: float | None, rate: float) -> str:
    """The gates of an update to another kind of model (agreement undefined) are health and keeping up: said so."""
    head = f"agreement undefined ({figures.undefined}), so gates: health and keeping up, not a latency ratio; " \
           f"{figures.frames} frames"
    if load is None or figures.candidate_p95_ms is None:
        return f"{head}; candidate latency n/a"
    gate = "" if load <= KEEP_UP_SHARE else f" > {KEEP_UP_SHARE:.0%}"
    return (f"{head}; p95 {figures.candidate_p95_ms:.1f} ms at {rate:.1f} frames/s uses {load:.1%} of the "
            f"inference time{gate}")


def _clip(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"


def run_shadow(shadow: Shadow, attach: AttachFn, health: HealthBook, key: str,
               interrupted: Callable[[], str | None], poll_s: float, announce: Callable[[], None]) -> ShadowVerdict:
    """Put the candidate beside the live model until the gates decide, with running figures in modelHealth; raises
    UpdateCancelled when `interrupted()` names a reason (stopping, a newer block) before a verdict. `announce()`
    sends the 202 only once the mark that distrusts this candidate after a crash is on disk."""
    health.mark_shadowing(key)  # a crash from here on distrusts this candidate after restart
    announce()

    def cancelled(why: str) -> None:
        health.change(verdict="none", reason=f"shadow phase ended without a verdict: {why}")

    try:
        return await_verdict(shadow, attach, interrupted, poll_s, cancelled,
                             lambda figures: health.update(lambda current: current.with_figures(figures)))
    finally:
        health.mark_shadowing(None)  # only a crash, which runs no code, leaves the mark behind


def await_verdict(shadow: Shadow, attach: AttachFn, interrupted: Callable[[], str | None], poll_s: float,
                  cancelled: Callable[[str], None], progress: Callable[[Figures], None]) -> ShadowVerdict:
    """The candidate beside the live model until the gates decide, `progress(figures)` every HEALTH_EVERY_S; on
    `interrupted()` naming a reason, `cancelled(reason)` and UpdateCancelled. Used by model updates and by the
    on-device calibration alike, so both are judged by one loop and one set of gates."""
    attach(shadow)
    try:
        next_report = time.monotonic() + HEALTH_EVERY_S
        while not shadow.wait(poll_s) and shadow.remaining() > 0:
            why = interrupted()
            if why:
                shadow.finish()
                cancelled(why)
                raise UpdateCancelled(f"{why} during the shadow phase")
            if time.monotonic() >= next_report:
                next_report += HEALTH_EVERY_S
                progress(shadow.comparison.figures())
        return shadow.verdict()
    finally:
        attach(None)


def effective_every(shadow: Shadow) -> int:
    """The k of "every k-th frame" the budget worked out to, for logs and acknowledgements."""
    return max(1, math.ceil(shadow.offered / shadow.sampled)) if shadow.sampled else 0
