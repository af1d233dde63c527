"""Applies twin `model` blocks one at a time on a named worker thread: acknowledge, stage, swap, watch, roll back.

Acknowledgements follow the IoT Plug and Play writable-property convention, reported through `report(ack)`:
    {"value": <block>, "ac": <code>, "av": <desired $version>, "ad": "<one line>"}
    202  in progress: "downloading K 40%" (every 10%), "validating K", "shadow: comparing ... on up to N live
         frames or S s", "watching K for N frames or S s"; value = the block being applied
    200  "K is active" / "K is already active" (same content: nothing downloaded or swapped), or an operator's
         "rolled back A to B on request (rollbackModel)"; value = the block applied, or in use after a rollback
    400  the block can never work as given: invalid setting, policy (http, host, size), sha256/size mismatch, not
         ONNX, manifest, labels, signature, non-finite probe output; value = the block still in use
    500  applying failed outside the block (HTTP error, timeout, disk), the candidate failed its shadow phase
         ("shadow: agreement 0.07 < 0.80 over 150 frames; latency p95 1.1x"; it never served), or the new model
         failed its watch and was rolled back ("rolled back A to B: <reason>"); value = the block still in use
Before the swap, the candidate runs in shadow beside the active model on sampled live frames (modelstore/shadow.py)
and must pass the agreement and latency gates. The outcome is also kept as a compact `modelHealth` value
(modelstore/health.py), reported through `report_health`.
A block that ended 400, 500-by-shadow, 500-by-watch or was rolled back by the operator is not retried when the same
block comes again with a newer $version (the outcome is repeated); transfer failures (500) are retried. A newer
block cancels a download, validation or shadow phase in progress; during a watch it waits for the verdict.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import ValidationError

from visionedge.compare import Subject, undefined_reason
from visionedge.config import (
    InferenceSettings,
    ModelRef,
    RollbackSettings,
    RuntimeSettings,
    ShadowSettings,
    describe_validation_error,
)
from visionedge.errors import VisionEdgeError, first_line
from visionedge.models.model import Model
from visionedge.modelstore.errors import UpdateCancelled, UpdateFailed, UpdateRejected
from visionedge.modelstore.health import HealthBook, HealthFn, ModelHealth
from visionedge.modelstore.ledger import Acknowledger, DeliveryLedger, ReportFn
from visionedge.modelstore.progress import ProgressPacer
from visionedge.modelstore.refs import Resolved, canonical, split_key, version_key
from visionedge.modelstore.rollbacks import RollbackDesk
from visionedge.modelstore.shadow import AttachFn, Shadow, effective_every, run_shadow
from visionedge.modelstore.store import ModelStore
from visionedge.modelstore.watch import LatencyWindow, Watch
from visionedge.supervise import Part

log = logging.getLogger(__name__)

SwapFn = Callable[[Model], None]

POLL_S = 0.1
MANUAL_ROLLBACK = "rolled back on request (rollbackModel)"
REASON_CHARS = 200
"""Inference errors can carry pages of runtime internals; a reported reason stays one short line."""
FIRST_BOOT = "first boot: loaded directly, no shadow against the built-in default"
"""Until a desired block has made its model serve, the built-in default runs only because nothing was asked for: the
first model the twin asks for is validated and watched, never compared with it."""
HEALTH_FILE = "health.json"
"""Beside updates.json in the store: the last modelHealth and the candidate in its shadow phase, if any."""


class UpdateState(str, Enum):
    """What the manager is doing, as shown in status()."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    VALIDATING = "validating"
    INSTALLING = "installing"
    SHADOW = "shadow"
    WATCHING = "watching"
    ROLLING_BACK = "rolling back"


@dataclass
class _Job:
    """One desired block to apply; av follows re-deliveries of the same block."""

    ref: ModelRef | None
    av: int
    text: str
    invalid: str = ""
    """Why the block is not even a valid `model` setting (then ref is None)."""
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class _InUse:
    """The model the pipeline runs, with its key, the twin block that produced it and the runtime it was loaded
    with (a model kept for a rollback is loaded again when the runtime settings changed since)."""

    model: Model
    key: str
    block: dict[str, Any]
    runtime: RuntimeSettings


class ModelManager:
    """The only writer of the model store while the module runs; every other thread talks to it through calls.

    Threading: request(), rollback_now(), status(), update_settings() and the observe*() hooks may be called from
    any thread and never block on downloads (rollback_now waits for its own result). Staging, swap(), the watch
    and report() calls all happen on the "model-manager" thread, so acknowledgements are emitted in order.
    """

    def __init__(self, store: ModelStore, initial: Model, *, swap: SwapFn, report: ReportFn,
                 runtime: RuntimeSettings | None = None, inference: InferenceSettings | None = None,
                 rollback: RollbackSettings | None = None, shadow: ShadowSettings | None = None,
                 attach_shadow: AttachFn | None = None, report_health: HealthFn | None = None) -> None:
        """attach_shadow(shadow) puts a candidate beside the live pipeline's model (None takes it away); without
        it there are no live frames to compare on and the shadow phase is skipped. report_health receives the
        `modelHealth` block whenever it changes."""
        self.store = store
        self._swap = swap
        self._attach_shadow = attach_shadow
        self._runtime = runtime or RuntimeSettings()
        self._inference = inference or InferenceSettings()
        self._rollback = rollback or RollbackSettings()
        self._shadow_settings = shadow or ShadowSettings()
        key = version_key(initial.name, initial.version)
        self._in_use = _InUse(initial, key, store.block(key), self._runtime)
        self._fallback: _InUse | None = None
        self._watch: Watch | None = None
        self._latency = LatencyWindow()
        self._lock = threading.Lock()
        self._serving = threading.Lock()
        """Held while the serving model is chosen and swapped: a runtime reload and an update never interleave."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.part = Part("model-manager")
        """A bug in the worker loop restarts it (logged, /healthz 503 meanwhile) instead of ending updates silently."""
        self._pending: _Job | None = None
        self._job: _Job | None = None
        self._rollbacks = RollbackDesk()
        self._state = UpdateState.IDLE
        self._progress: float | None = None
        self._pacer = ProgressPacer()
        self._acks = Acknowledger(DeliveryLedger(store.read_updates, store.write_updates), report,
                                  last_error="; ".join(store.load_errors))
        self._health = HealthBook(store.root / HEALTH_FILE, _pair(key), report_health)

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Report the restored modelHealth and start the worker thread."""
        self._health.publish()
        self._thread = self.part.thread(self._run, self._stop)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel a download and stop; a model still on probation is not committed, so a restart comes up on the
        previous one and applies the block again when the twin re-delivers it."""
        self._stop.set()
        with self._lock:
            for job in (self._job, self._pending):
                if job is not None:
                    job.cancel.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._rollbacks.answer({"status": 503, "payload": {"error": "the model manager is stopping"}})

    # ---- calls from other threads --------------------------------------------------------------------------

    def request(self, block: ModelRef | Mapping[str, Any], desired_version: int) -> bool:
        """Queue a desired `model` block (raw twin dict or ModelRef); False for a re-delivery that needs no work.

        An invalid raw block is acknowledged 400 in order with every other acknowledgement, and still supersedes.
        """
        ref, invalid = _as_ref(block)
        text = canonical(ref) if ref is not None else json.dumps(block, sort_keys=True, default=str)
        with self._lock:
            fresh = self._acks.ledger.delivered(desired_version, text)
            pending, job = self._pending, self._job
            if pending is not None and pending.text == text:
                pending.av = desired_version
                return False
            if pending is None and job is not None and job.text == text and not job.cancel.is_set():
                job.av = desired_version
                return False
            if not fresh:
                return False
            if job is not None and not job.cancel.is_set():
                log.info("desired version %d supersedes %d", desired_version, job.av)
                job.cancel.set()
            self._pending = _Job(ref, desired_version, text, invalid)
        self._wake.set()
        return True

    def rollback_now(self, timeout: float = 120.0) -> dict[str, Any]:
        """Go back to the previous version now (direct method rollbackModel): {"status": int, "payload": {...}}."""
        if self._thread is None or not self._thread.is_alive():
            return {"status": 503, "payload": {"error": "the model manager is not running"}}
        with self._lock:
            request = self._rollbacks.ask()
            for job in (self._job, self._pending):
                if job is not None:
                    job.cancel.set()
            self._pending = None
            watch = self._watch
        if watch is not None:
            watch.abort(MANUAL_ROLLBACK)
        self._wake.set()
        if not request.done.wait(timeout):
            return {"status": 504, "payload": {"error": f"the rollback did not finish within {timeout:g} s"}}
        return request.result

    def observe(self, model_key: str, inference_ms: float, ok: bool = True, reason: str = "") -> None:
        """One analysed frame (any thread, O(1)): feeds the watch of a new model or the latency baseline."""
        watch = self._watch
        if watch is not None and model_key == watch.key:
            watch.add(inference_ms, ok, reason)
        elif ok and model_key == self._baseline_key():
            self._latency.add(inference_ms)

    def observe_record(self, record: Mapping[str, Any]) -> None:
        """Pipeline(on_record=...) hook: a result record names its model and inference time."""
        model = record.get("model") or {}
        key = version_key(str(model.get("name")), str(model.get("version")))
        reason = _non_finite(record)
        self.observe(key, float(record.get("inference_ms", 0.0)), ok=not reason, reason=reason)

    def observe_error(self, model: Model, err: Exception) -> None:
        """Pipeline(on_inference_error=...) hook: a frame the model failed on."""
        self.observe(version_key(model.name, model.version), 0.0, ok=False, reason=first_line(err, REASON_CHARS))

    def reload(self, runtime: RuntimeSettings) -> Model:
        """Serve the model in use again, loaded with new runtime settings (control thread); later updates and
        rollbacks load with them too. Raises when it cannot be loaded, and the model serving then stays."""
        with self._serving:
            held = self._in_use
            model = self.store.load(held.key, runtime)
            with self._lock:
                model.set_overrides(self._inference)
                self._runtime = runtime
                self._in_use = _InUse(model, held.key, held.block, runtime)
            self._swap(model)
        log.info("model %s reloaded with the new runtime settings", held.key)
        return model

    def update_settings(self, inference: InferenceSettings | None = None, rollback: RollbackSettings | None = None,
                        shadow: ShadowSettings | None = None) -> None:
        """New twin settings for the next update; threshold overrides also apply to the models held now."""
        with self._lock:
            self._rollback = rollback or self._rollback
            self._shadow_settings = shadow or self._shadow_settings
            if inference is not None:
                self._inference = inference
                for held in (self._in_use, self._fallback):
                    if held is not None:
                        held.model.set_overrides(inference)

    def status(self) -> dict[str, Any]:
        """Active and previous versions, state, progress and the last error, for reported properties."""
        with self._lock:
            previous = self._fallback.key if self._fallback is not None else self.store.previous()
            return {
                "state": self._state.value,
                "active": split_key(self._in_use.key),
                "previous": split_key(previous) if previous else None,
                "trial": self._in_use.key if self._watch is not None else None,
                "progress": None if self._progress is None else round(self._progress * 100),
                "desired_version": self._acks.ledger.latest[0] if self._acks.ledger.latest else None,
                "last_error": self._acks.last_error,
                "ack": self._acks.last(),
            }

    def health(self) -> ModelHealth:
        """The modelHealth value now (any thread)."""
        return self._health.get()

    @property
    def model(self) -> Model:
        """The model serving now: the one holder, which the pipeline reads at each dispatch."""
        return self._in_use.model

    # ---- the worker ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        """Worker loop: operator rollbacks first, then the newest desired block."""
        while not self._stop.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            self._serve_rollbacks()
            with self._lock:
                job, self._pending = self._pending, None
                self._job = job
            if job is None:
                continue
            try:
                self._apply(job)
            finally:
                with self._lock:
                    self._job = None
                    self._state, self._progress = UpdateState.IDLE, None

    def _apply(self, job: _Job) -> None:
        """One desired block to its terminal acknowledgement; every failure becomes a one-line reason."""
        try:
            refused = self._acks.ledger.refusal(job.text)
            if refused is not None:
                self._health.change(desired_version=job.av, rollout=_rollout(job))
                self._acks.finish(job, refused[0], refused[1], self._in_use.block)
                return
            if job.ref is None:
                raise UpdateRejected(job.invalid)
            resolved = self.store.resolve(job.ref)
            if resolved.key == self._in_use.key and self.store.has(resolved):
                self._already_active(job, resolved)
                return
            self._consider(job, resolved)
            for crashed, phase in ((self.store.interrupted_trial, "on probation"),
                                   (self._health.interrupted, "in its shadow phase")):
                if resolved.key == crashed:
                    self._reject(job, 500, f"{resolved.key} was {phase} when the module stopped unexpectedly, "
                                           "so it is not tried again; publish it under a new version to retry")
                    return
            self.store.check_conflict(resolved)
            with self._lock:
                runtime = self._runtime
            model = self._obtain(job, resolved, runtime)
            shadowed = FIRST_BOOT if not self._acks.ledger.served else self._shadow(job, resolved, model)
            if shadowed is not None:
                self._activate(job, _InUse(model, resolved.key, resolved.block, runtime), shadowed)
        except UpdateCancelled:
            log.info("update to desired version %d cancelled", job.av)
            with self._lock:
                by_rollback = self._rollbacks.waiting() and self._pending is None
            if by_rollback:  # no newer version will answer this one: its 202 must not stand
                self._acks.finish(job, 409, f"update to desired version {job.av} cancelled by rollbackModel; publish a "
                             "new version to try again", self._in_use.block)
        except UpdateRejected as err:
            log.warning("model update rejected: %s", err)
            self._reject(job, 400, str(err))
        except UpdateFailed as err:
            log.error("model update failed: %s", err)
            self._health.change(phase="idle", verdict="rejected", reason=str(err))
            self._acks.finish(job, 500, str(err), self._in_use.block)
        except Exception as err:  # the manager must outlive any bug in one update and say why it failed
            log.exception("model update to desired version %d failed unexpectedly", job.av)
            text = f"internal error while applying the model: {type(err).__name__}: {err}"
            self._health.change(phase="idle", verdict="rejected", reason=text)
            self._acks.finish(job, 500, text, self._in_use.block)

    def _already_active(self, job: _Job, resolved: Resolved) -> None:
        """The block names the model serving now: for a fleet rollout that device has arrived (promoted)."""
        text = f"{resolved.key} is already active"
        health = self._health.get()
        if health.candidate == health.active and health.verdict == "promoted":
            self._health.change(rollout=job.ref.rollout if job.ref else None, desired_version=job.av)
        else:
            self._health.change(candidate=health.active, rollout=job.ref.rollout if job.ref else None, phase="idle",
                             verdict="promoted", frames=0, agreement=None, latency_ratio=None, reason=text,
                             desired_version=job.av)
        self._acks.finish(job, 200, text, resolved.block)

    def _consider(self, job: _Job, resolved: Resolved) -> None:
        """A new candidate: modelHealth names it, pending, with empty figures."""
        self._health.update(lambda health: health.considering(_pair(resolved.key), _rollout(job), "validating", job.av))

    def _reject(self, job: _Job, code: int, text: str) -> None:
        """Refuse the block for good (this process) and say so in modelHealth too."""
        self._health.change(phase="idle", verdict="rejected", reason=text)
        self._acks.refuse(job, code, text, self._in_use.block)

    def _obtain(self, job: _Job, resolved: Resolved, runtime: RuntimeSettings) -> Model:
        """The installed copy when this content is on disk already, else a fresh download into staging."""
        if self.store.has(resolved):
            self._progress_ack(job, resolved, "validating", None)
            try:
                return self.store.load(resolved.key, runtime)
            except VisionEdgeError as err:
                log.warning("installed copy of %s is unusable (%s); downloading it again", resolved.key, err)
        staged = self.store.stage(resolved, runtime, cancel=job.cancel,
                                  progress=lambda phase, fraction: self._progress_ack(job, resolved, phase, fraction))
        if job.cancel.is_set():
            self.store.discard(staged)
            raise UpdateCancelled("cancelled after validation")
        self._set_state(UpdateState.INSTALLING, None)
        self.store.install(staged)
        return staged.model

    def _shadow(self, job: _Job, resolved: Resolved, model: Model) -> str | None:
        """Run the candidate beside the active model on sampled live frames until the gates can decide. Returns the
        one-line outcome to carry into the final acknowledgement, or None when the candidate was refused (500)."""
        with self._lock:
            settings = self._shadow_settings.with_gates(job.ref.shadow if job.ref else None)
            active = self._in_use.model
            model.set_overrides(self._inference)
        if not settings.enabled:
            return "shadow skipped (shadow: false)"
        if self._attach_shadow is None:
            return ""
        shadow = Shadow(active, model, settings)
        self._set_state(UpdateState.SHADOW, None)
        log.info("%s", shadow.describe())
        verdict = run_shadow(shadow, self._attach_shadow, self._health, resolved.key, lambda: (
            "stopping" if self._stop.is_set() else "superseded or cancelled" if job.cancel.is_set() else None), POLL_S,
            lambda: self._acks.emit(job.av, 202, shadow.describe(), resolved.block))
        log.info("shadow of %s over %d frames (every %d-th frame on average): %s", resolved.key,
                 verdict.figures.frames, effective_every(shadow), verdict.reason)
        # published here when passed; a refusal changes the verdict next and publishes then
        self._health.update(lambda health: health.with_figures(verdict.figures, verdict.reason),
                            publish=verdict.passed)
        if verdict.passed:
            return verdict.reason
        log.error("model update refused: %s", verdict.reason)
        self.store.prune()
        self._reject(job, 500, verdict.reason)
        return None

    def _activate(self, job: _Job, new: _InUse, shadowed: str) -> None:
        """Swap between two frames, then watch; commit the pointer only once the watch passes."""
        with self._lock:
            if job.cancel.is_set():
                raise UpdateCancelled("cancelled before the swap")
            settings = self._rollback
        with self._serving:
            like = not undefined_reason(Subject.of(self._in_use.model), Subject.of(new.model))
        # a latency baseline of another kind of model, or of a default nobody asked for, says nothing about this one
        baseline = self._latency.median() if like and shadowed != FIRST_BOOT else None
        watch = Watch(new.key, settings, baseline)
        watching = settings.watch_frames > 0 or settings.watch_s > 0
        if watching:
            self.store.begin_trial(new.key)
            self._health.change(phase="probation")
        with self._serving:
            old = self._in_use
            new = self._current(new)
            with self._lock:
                self._in_use, self._fallback = new, old
                self._watch = watch if watching else None
                self._state, self._progress = UpdateState.WATCHING, None
            self._swap(new.model)
        log.info("model swapped: %s -> %s", old.key, new.key)
        verdict = None
        if watching:
            self._acks.emit(job.av, 202, watch.describe(), new.block)
            verdict = self._await(watch, old.key)
        if verdict is None:
            self.store.commit(new.key)
            with self._lock:
                self._fallback, self._watch = None, None
                self._latency = LatencyWindow(watch.latencies)
            log.info("model %s passed its watch (%d frames) and is active", new.key, watch.frames)
            text = f"{new.key} is active" + (f" ({shadowed})" if shadowed else "")
            self._health.change(active=_pair(new.key), phase="idle", verdict="promoted", reason=shadowed or text)
            self._acks.finish(job, 200, text, new.block)
            return
        self._set_state(UpdateState.ROLLING_BACK, None)
        with self._serving:
            old = self._current(old)
            with self._lock:
                self._in_use, self._fallback, self._watch = old, None, None
            self._swap(old.model)
        self.store.abort_trial()
        self.store.prune()
        self._health.change(phase="idle", verdict="rolledBack", reason=f"probation: {verdict}")
        if verdict == MANUAL_ROLLBACK:
            text = f"rolled back {new.key} to {old.key} on request (rollbackModel)"
            self._acks.overrule(text, job, old.block)
            self._rollbacks.answer(self._rollback_result(text))
            return
        text = f"rolled back {new.key} to {old.key}: {verdict}"
        log.error("%s", text)
        self._acks.refuse(job, 500, text, old.block)

    def _current(self, held: _InUse) -> _InUse:
        """`held`, loaded again when the runtime settings changed since it was loaded (caller holds _serving); on a
        failure to load it keeps serving as it was, which beats serving nothing."""
        with self._lock:
            runtime, inference = self._runtime, self._inference
        if held.runtime == runtime:
            held.model.set_overrides(inference)
            return held
        try:
            model = self.store.load(held.key, runtime)
        except VisionEdgeError as err:
            log.error("cannot load %s with the current runtime settings (%s); it runs on the previous ones",
                      held.key, err)
            return held
        model.set_overrides(inference)
        return _InUse(model, held.key, held.block, runtime)

    def _await(self, watch: Watch, fallback_key: str) -> str | None:
        """The watch's verdict. Stopping first clears the trial, so a restart retries the model on its next
        delivery; a crash (no stop) leaves the trial in the pointer, and the restart distrusts that model."""
        while True:
            remaining = watch.remaining()
            if watch.wait(POLL_S if remaining is None else max(min(POLL_S, remaining), 0.0)):
                return watch.verdict()
            if remaining is not None and remaining <= 0:
                return watch.verdict()
            if self._stop.is_set():
                self.store.abort_trial()
                log.info("stopping while %s is on probation; a restart comes up on %s", watch.key, fallback_key)
                raise UpdateCancelled("stopping during the watch")

    def _serve_rollbacks(self) -> None:
        """Answer rollbackModel calls that arrived while no watch was running."""
        if not self._rollbacks.waiting():
            return
        self._set_state(UpdateState.ROLLING_BACK, None)
        try:
            result = self._manual_rollback()
        finally:
            self._set_state(UpdateState.IDLE, None)
        self._rollbacks.answer(result)

    def _manual_rollback(self) -> dict[str, Any]:
        """Swap to the previous committed version (verified from disk) and move the pointer back."""
        current = self._in_use.key
        previous = self.store.previous()
        if previous is None:
            return {"status": 409, "payload": {"error": "no previous model version to roll back to",
                                               "active": split_key(current)}}
        with self._serving:
            with self._lock:
                runtime = self._runtime
            try:
                model = self.store.load(previous, runtime)
            except VisionEdgeError as err:
                log.error("cannot roll back to %s: %s", previous, err)
                return {"status": 500, "payload": {"error": f"cannot roll back to {previous}: {err}",
                                                   "active": split_key(current)}}
            with self._lock:
                model.set_overrides(self._inference)
            self.store.rollback()
            with self._lock:
                self._in_use = _InUse(model, previous, self.store.block(previous), runtime)
                self._latency = LatencyWindow()
            self._swap(model)
        text = f"rolled back {current} to {previous} on request (rollbackModel)"
        self._health.change(active=_pair(previous), candidate=_pair(current), phase="idle", verdict="rolledBack",
                         reason=text)
        self._acks.overrule(text, None, self._in_use.block)
        return self._rollback_result(text)

    def _rollback_result(self, text: str) -> dict[str, Any]:
        """The rollbackModel response after a successful rollback."""
        previous = self.store.previous()
        return {"status": 200, "payload": {"message": text, "active": split_key(self._in_use.key),
                                           "previous": split_key(previous) if previous else None}}

    # ---- acknowledgements ----------------------------------------------------------------------------------

    def _progress_ack(self, job: _Job, resolved: Resolved, phase: str, fraction: float | None) -> None:
        """Stage progress as 202s: one per PROGRESS_STEP percent, so the twin is not flooded."""
        if phase == "downloading":
            with self._lock:
                first = self._state != UpdateState.DOWNLOADING
                self._state, self._progress = UpdateState.DOWNLOADING, fraction
            if first:
                self._health.change(phase="downloading")
            said = self._pacer.note(fraction, first)
            if said is not None:
                self._acks.emit(job.av, 202, f"downloading {resolved.key}{said}", resolved.block)
        else:
            self._set_state(UpdateState.VALIDATING, None)
            self._health.change(phase="validating")
            self._acks.emit(job.av, 202, f"validating {resolved.key}", resolved.block)

    def _set_state(self, state: UpdateState, progress: float | None) -> None:
        """What status() shows."""
        with self._lock:
            self._state, self._progress = state, progress

    def _baseline_key(self) -> str:
        """The committed model, whose inference times are the yardstick for the next one."""
        held = self._fallback or self._in_use
        return held.key


def _pair(key: str) -> tuple[str, str]:
    """(name, version) of a version key."""
    parts = split_key(key)
    return parts["name"], parts["version"]


def _rollout(job: _Job) -> str | None:
    """The fleet rollout id the block carries, echoed in modelHealth."""
    return job.ref.rollout if job.ref is not None else None


def _as_ref(block: ModelRef | Mapping[str, Any]) -> tuple[ModelRef | None, str]:
    """The block as a ModelRef, or None and the one-line reason it is not a valid `model` setting."""
    if isinstance(block, ModelRef):
        return block, ""
    try:
        return ModelRef.model_validate(block), ""
    except ValidationError as err:
        return None, f"invalid model setting: {describe_validation_error(err, 'model')}"


def _non_finite(record: Mapping[str, Any]) -> str:
    """A reason when a record carries NaN or infinity (a decoder overflow or a model gone numerically bad)."""
    for item in (*record.get("classifications", ()), *record.get("detections", ())):
        values = [item.get("confidence", 0.0), *item.get("box", ())]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return f"non-finite value in a result ({item.get('label', '?')})"
    return ""
