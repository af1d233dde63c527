"""One desired `model` block from its first acknowledgement to its last: resolve, stage, shadow, swap, watch; every
failure becomes a one-line reason, and every durable mark is written before the acknowledgement that announces it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from visionedge.compare import Subject, undefined_reason
from visionedge.errors import VisionEdgeError
from visionedge.models.model import Model
from visionedge.modelstore.errors import UpdateCancelled, UpdateFailed, UpdateRejected
from visionedge.modelstore.jobs import Job, pair, rollout
from visionedge.modelstore.phase import UpdateState
from visionedge.modelstore.refs import Resolved
from visionedge.modelstore.serving import InUse
from visionedge.modelstore.shadow import Shadow, effective_every, run_shadow
from visionedge.modelstore.watch import LatencyWindow, Watch

if TYPE_CHECKING:
    from visionedge.modelstore.manager import ModelManager

log = logging.getLogger(__name__)

POLL_S = 0.1
MANUAL_ROLLBACK = "rolled back on request (rollbackModel)"
FIRST_BOOT = "first boot: loaded directly, no shadow against the built-in default"
"""Until a desired block has made its model serve, the built-in default runs only because nothing was asked for: the
first model the twin asks for is validated and watched, never compared with it."""


class UpdateRun:
    """Applies one job on the manager's worker thread, through the manager's store, holder, phase and ledger."""

    def __init__(self, manager: ModelManager, job: Job) -> None:
        self.m = manager
        self.job = job

    def apply(self) -> None:
        """The job to its terminal acknowledgement."""
        m, job = self.m, self.job
        try:
            refused = m.acks.ledger.refusal(job.text)
            if refused is not None:
                m.healthbook.change(desired_version=job.av, rollout=rollout(job))
                m.acks.finish(job, refused[0], refused[1], m.serving.held.block)
                return
            if job.ref is None:
                raise UpdateRejected(job.invalid)
            resolved = m.store.resolve(job.ref)
            if resolved.key == m.serving.held.key and m.store.has(resolved):
                self._already_active(resolved)
                return
            m.healthbook.update(lambda now: now.considering(pair(resolved.key), rollout(job), "validating", job.av))
            for crashed, phase in ((m.store.interrupted_trial, "on probation"),
                                   (m.healthbook.interrupted, "in its shadow phase")):
                if resolved.key == crashed:
                    self._reject(500, f"{resolved.key} was {phase} when the module stopped unexpectedly, so it is "
                                      "not tried again; publish it under a new version to retry")
                    return
            m.store.check_conflict(resolved)
            new = self._obtain(resolved)
            shadowed = FIRST_BOOT if not m.acks.ledger.served else self._shadow(resolved, new.model)
            if shadowed is not None:
                self._activate(new, shadowed)
        except UpdateCancelled:
            log.info("update to desired version %d cancelled", job.av)
            if m.cancelled_by_rollback():  # no newer version will answer this one: its 202 must not stand
                m.acks.finish(job, 409, f"update to desired version {job.av} cancelled by rollbackModel; publish a "
                              "new version to try again", m.serving.held.block)
        except UpdateRejected as err:
            log.warning("model update rejected: %s", err)
            self._reject(400, str(err))
        except UpdateFailed as err:
            log.error("model update failed: %s", err)
            self._fail(str(err))
        except Exception as err:  # the manager must outlive any bug in one update and say why it failed
            log.exception("model update to desired version %d failed unexpectedly", job.av)
            self._fail(f"internal error while applying the model: {type(err).__name__}: {err}")

    def _already_active(self, resolved: Resolved) -> None:
        """The block names the model serving now: for a fleet rollout that device has arrived (promoted)."""
        m, job = self.m, self.job
        text = f"{resolved.key} is already active"
        health = m.healthbook.get()
        if health.candidate == health.active and health.verdict == "promoted":
            m.healthbook.change(rollout=rollout(job), desired_version=job.av)
        else:
            m.healthbook.change(candidate=health.active, rollout=rollout(job), phase="idle", verdict="promoted",
                                frames=0, agreement=None, latency_ratio=None, reason=text, desired_version=job.av)
        m.acks.finish(job, 200, text, resolved.block)

    def _reject(self, code: int, text: str) -> None:
        """Refuse the block for good (this process) and say so in modelHealth too."""
        self.m.phases.enter(UpdateState.IDLE, verdict="rejected", reason=text)
        self.m.acks.refuse(self.job, code, text, self.m.serving.held.block)

    def _fail(self, text: str) -> None:
        """A failure outside the block (transfer, disk, a bug): answered 500, tried again on the next delivery."""
        self.m.phases.enter(UpdateState.IDLE, verdict="rejected", reason=text)
        self.m.acks.finish(self.job, 500, text, self.m.serving.held.block)

    def _obtain(self, resolved: Resolved) -> InUse:
        """The installed copy when this content is on disk already, else a fresh download into staging."""
        m, job = self.m, self.job
        runtime = m.serving.runtime
        if m.store.has(resolved):
            self._progress(resolved, "validating", None)
            try:
                return InUse(m.store.load(resolved.key, runtime), resolved.key, resolved.block, runtime)
            except VisionEdgeError as err:
                log.warning("installed copy of %s is unusable (%s); downloading it again", resolved.key, err)
        staged = m.store.stage(resolved, runtime, cancel=job.cancel,
                               progress=lambda phase, fraction: self._progress(resolved, phase, fraction))
        if job.cancel.is_set():
            m.store.discard(staged)
            raise UpdateCancelled("cancelled after validation")
        m.phases.enter(UpdateState.INSTALLING)
        m.store.install(staged)
        return InUse(staged.model, resolved.key, resolved.block, runtime)

    def _shadow(self, resolved: Resolved, model: Model) -> str | None:
        """Run the candidate beside the active model on sampled live frames until the gates can decide. Returns the
        one-line outcome to carry into the final acknowledgement, or None when the candidate was refused (500)."""
        m, job = self.m, self.job
        settings = m.shadow_settings().with_gates(job.ref.shadow if job.ref else None)
        model.set_overrides(m.serving.inference)
        if not settings.enabled:
            return "shadow skipped (shadow: false)"
        if m.attach_shadow is None:
            return ""
        shadow = Shadow(m.serving.model, model, settings)
        m.phases.enter(UpdateState.SHADOW)
        log.info("%s", shadow.describe())
        verdict = run_shadow(shadow, m.attach_shadow, m.healthbook, resolved.key, self._interrupted, POLL_S,
                             lambda: m.acks.emit(job.av, 202, shadow.describe(), resolved.block))
        log.info("shadow of %s over %d frames (every %d-th frame on average): %s", resolved.key,
                 verdict.figures.frames, effective_every(shadow), verdict.reason)
        # published here when passed; a refusal changes the verdict next and publishes then
        m.healthbook.update(lambda health: health.with_figures(verdict.figures, verdict.reason), publish=verdict.passed)
        if verdict.passed:
            return verdict.reason
        log.error("model update refused: %s", verdict.reason)
        m.store.prune()
        self._reject(500, verdict.reason)
        return None

    def _interrupted(self) -> str | None:
        """Why the shadow phase must end without a verdict, if it must."""
        return "stopping" if self.m.stopping.is_set() else \
            "superseded or cancelled" if self.job.cancel.is_set() else None

    def _activate(self, new: InUse, shadowed: str) -> None:
        """Swap between two frames, then watch; commit the pointer only once the watch passes."""
        m, job = self.m, self.job
        if job.cancel.is_set():
            raise UpdateCancelled("cancelled before the swap")
        settings = m.rollback_settings()
        like = not undefined_reason(Subject.of(m.serving.model), Subject.of(new.model))
        # a latency baseline of another kind of model, or of a default nobody asked for, says nothing about this one
        watch = Watch(new.key, settings, m.latency.median() if like and shadowed != FIRST_BOOT else None)
        watching = settings.watch_frames > 0 or settings.watch_s > 0
        if watching:
            m.store.begin_trial(new.key)
        m.phases.enter(UpdateState.WATCHING)
        m.watch = watch if watching else None
        old = m.serving.swap_in(new, keep_fallback=True)
        log.info("model swapped: %s -> %s", old.key, new.key)
        verdict = None
        if watching:
            m.acks.emit(job.av, 202, watch.describe(), new.block)
            verdict = self._await(watch, old.key)
        if verdict is None:
            self._promote(new, watch, shadowed)
        else:
            self._roll_back(new, verdict)

    def _promote(self, new: InUse, watch: Watch, shadowed: str) -> None:
        """The watch passed: commit the pointer, then say so."""
        m = self.m
        m.store.commit(new.key)
        m.serving.commit()
        m.watch, m.latency = None, LatencyWindow(watch.latencies)
        log.info("model %s passed its watch (%d frames) and is active", new.key, watch.frames)
        text = f"{new.key} is active" + (f" ({shadowed})" if shadowed else "")
        m.phases.enter(UpdateState.IDLE, active=pair(new.key), verdict="promoted", reason=shadowed or text)
        m.acks.finish(self.job, 200, text, new.block)

    def _roll_back(self, new: InUse, verdict: str) -> None:
        """The watch failed (or the operator rolled back): the old model serves again, the candidate is deleted."""
        m, job = self.m, self.job
        m.phases.enter(UpdateState.ROLLING_BACK)
        old = m.serving.restore()
        m.watch = None
        m.store.abort_trial()
        m.store.prune()
        m.phases.enter(UpdateState.IDLE, verdict="rolledBack", reason=f"probation: {verdict}")
        if verdict == MANUAL_ROLLBACK:
            text = f"rolled back {new.key} to {old.key} on request (rollbackModel)"
            m.acks.overrule(text, job, old.block)
            m.rollbacks.answer(m.rollback_result(text))
            return
        text = f"rolled back {new.key} to {old.key}: {verdict}"
        log.error("%s", text)
        m.acks.refuse(job, 500, text, old.block)

    def _await(self, watch: Watch, fallback_key: str) -> str | None:
        """The watch's verdict. Stopping first clears the trial, so a restart retries the model on its next
        delivery; a crash (no stop) leaves the trial in the pointer, and the restart distrusts that model."""
        while True:
            remaining = watch.remaining()
            if watch.wait(POLL_S if remaining is None else max(min(POLL_S, remaining), 0.0)):
                return watch.verdict()
            if remaining is not None and remaining <= 0:
                return watch.verdict()
            if self.m.stopping.is_set():
                self.m.store.abort_trial()
                log.info("stopping while %s is on probation; a restart comes up on %s", watch.key, fallback_key)
                raise UpdateCancelled("stopping during the watch")

    def _progress(self, resolved: Resolved, phase: str, fraction: float | None) -> None:
        """Stage progress as 202s: one per PROGRESS_STEP percent, so the twin is not flooded."""
        m, job = self.m, self.job
        if phase == "downloading":
            first = m.phases.enter(UpdateState.DOWNLOADING, fraction)
            said = m.pacer.note(fraction, first)
            if said is not None:
                m.acks.emit(job.av, 202, f"downloading {resolved.key}{said}", resolved.block)
        else:
            m.phases.enter(UpdateState.VALIDATING)
            m.acks.emit(job.av, 202, f"validating {resolved.key}", resolved.block)

