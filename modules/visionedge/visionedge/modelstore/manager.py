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
from collections.abc import Mapping
from typing import Any

from visionedge.config import (
    InferenceSettings,
    ModelRef,
    RollbackSettings,
    RuntimeSettings,
    ShadowSettings,
)
from visionedge.errors import VisionEdgeError, first_line
from visionedge.models.model import Model
from visionedge.modelstore.calibrating import CalibrationPhase, LatestFn
from visionedge.modelstore.calibration import Limits
from visionedge.modelstore.health import HealthBook, HealthFn, ModelHealth
from visionedge.modelstore.jobs import Job, as_ref, pair
from visionedge.modelstore.ledger import Acknowledger, DeliveryLedger, ReportFn
from visionedge.modelstore.phase import PhaseBook, UpdateState
from visionedge.modelstore.progress import ProgressPacer
from visionedge.modelstore.refs import canonical, split_key, version_key
from visionedge.modelstore.rollbacks import RollbackDesk
from visionedge.modelstore.serving import InUse, Serving, SwapFn
from visionedge.modelstore.shadow import AttachFn
from visionedge.modelstore.store import ModelStore
from visionedge.modelstore.update import MANUAL_ROLLBACK, POLL_S, UpdateRun
from visionedge.modelstore.watch import LatencyWindow, Watch
from visionedge.supervise import Part

log = logging.getLogger(__name__)

__all__ = ["ModelManager", "SwapFn", "UpdateState"]

REASON_CHARS = 200
"""Inference errors can carry pages of runtime internals; a reported reason stays one short line."""
HEALTH_FILE = "health.json"
"""Beside updates.json in the store: the last modelHealth and the candidate in its shadow phase, if any."""


class ModelManager:
    """The only writer of the model store while the module runs, and the one holder of the serving model; every
    other thread talks to it through calls.

    Threading: request(), rollback_now(), reload(), status(), update_settings() and the observe*() hooks may be called
    from any thread and never block on downloads (rollback_now waits for its own result, reload for its load).
    Staging, swaps, the watch and report() calls all happen on the "model-manager" thread (a reload on its caller's),
    so acknowledgements are emitted in order.
    """

    def __init__(self, store: ModelStore, initial: Model, *, swap: SwapFn, report: ReportFn,
                 runtime: RuntimeSettings | None = None, inference: InferenceSettings | None = None,
                 rollback: RollbackSettings | None = None, shadow: ShadowSettings | None = None,
                 attach_shadow: AttachFn | None = None, report_health: HealthFn | None = None,
                 latest_frame: LatestFn | None = None, calibration: Limits | None = None) -> None:
        """swap(model) hears of each change of the serving model; attach_shadow(shadow) puts a candidate beside the
        live pipeline's model (None takes it away): without it there are no live frames to compare on and the shadow
        phase is skipped. report_health receives the `modelHealth` block whenever it changes. latest_frame() gives
        the newest analysed frame, which `runtime.calibrate: on-device` samples (none: no calibration) within the
        `calibration` limits."""
        self.store = store
        self.attach_shadow = attach_shadow
        self._rollback = rollback or RollbackSettings()
        self._shadow_settings = shadow or ShadowSettings()
        key = version_key(initial.name, initial.version)
        self.serving = Serving(store, InUse(initial, key, store.block(key), runtime or RuntimeSettings()),
                               inference or InferenceSettings(), swap)
        self.watch: Watch | None = None
        self.latency = LatencyWindow()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.part = Part("model-manager")
        """A bug in the worker loop restarts it (logged, /healthz 503 meanwhile) instead of ending updates silently."""
        self._pending: Job | None = None
        self._job: Job | None = None
        self.rollbacks = RollbackDesk()
        self.pacer = ProgressPacer()
        self.acks = Acknowledger(DeliveryLedger(store.read_updates, store.write_updates), report,
                                 last_error="; ".join(store.load_errors))
        self.healthbook = HealthBook(store.root / HEALTH_FILE, pair(key), report_health)
        self.phases = PhaseBook(self.healthbook)
        self.calibration = CalibrationPhase(self, latest_frame, calibration)

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Report the restored modelHealth and start the worker thread."""
        self.healthbook.publish()
        self._thread = self.part.thread(self._run, self.stopping)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel a download and stop; a model still on probation is not committed, so a restart comes up on the
        previous one and applies the block again when the twin re-delivers it."""
        self.stopping.set()
        with self._lock:
            for job in (self._job, self._pending):
                if job is not None:
                    job.cancel.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.calibration.stop()
        self.rollbacks.answer({"status": 503, "payload": {"error": "the model manager is stopping"}})

    # ---- calls from other threads --------------------------------------------------------------------------

    def request(self, block: ModelRef | Mapping[str, Any], desired_version: int) -> bool:
        """Queue a desired `model` block (raw twin dict or ModelRef); False for a re-delivery that needs no work.

        An invalid raw block is acknowledged 400 in order with every other acknowledgement, and still supersedes.
        """
        ref, invalid = as_ref(block)
        text = canonical(ref) if ref is not None else json.dumps(block, sort_keys=True, default=str)
        with self._lock:
            fresh = self.acks.ledger.delivered(desired_version, text)
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
            self._pending = Job(ref, desired_version, text, invalid)
        self._wake.set()
        return True

    def rollback_now(self, timeout: float = 120.0) -> dict[str, Any]:
        """Go back to the previous version now (direct method rollbackModel): {"status": int, "payload": {...}}."""
        if self._thread is None or not self._thread.is_alive():
            return {"status": 503, "payload": {"error": "the model manager is not running"}}
        with self._lock:
            request = self.rollbacks.ask()
            for job in (self._job, self._pending):
                if job is not None:
                    job.cancel.set()
            self._pending = None
            watch = self.watch
        if watch is not None:
            watch.abort(MANUAL_ROLLBACK)
        self._wake.set()
        if not request.done.wait(timeout):
            return {"status": 504, "payload": {"error": f"the rollback did not finish within {timeout:g} s"}}
        return request.result

    def reload(self, runtime: RuntimeSettings) -> Model:
        """New runtime settings: the serving model is loaded again with them (see Serving.reload)."""
        return self.serving.reload(runtime)

    def observe(self, model_key: str, inference_ms: float, ok: bool = True, reason: str = "") -> None:
        """One analysed frame (any thread, O(1)): feeds the watch of a new model or the latency baseline."""
        watch = self.watch
        if watch is not None and model_key == watch.key:
            watch.add(inference_ms, ok, reason)
        elif ok and model_key == self._baseline_key():
            self.latency.add(inference_ms)

    def observe_record(self, record: Mapping[str, Any]) -> None:
        """Pipeline(on_record=...) hook: a result record names its model and inference time."""
        model = record.get("model") or {}
        key = version_key(str(model.get("name")), str(model.get("version")))
        reason = _non_finite(record)
        self.observe(key, float(record.get("inference_ms", 0.0)), ok=not reason, reason=reason)

    def observe_error(self, model: Model, err: Exception) -> None:
        """Pipeline(on_inference_error=...) hook: a frame the model failed on."""
        self.observe(version_key(model.name, model.version), 0.0, ok=False, reason=first_line(err, REASON_CHARS))

    def update_settings(self, inference: InferenceSettings | None = None, rollback: RollbackSettings | None = None,
                        shadow: ShadowSettings | None = None) -> None:
        """New twin settings for the next update; threshold overrides also apply to the models held now."""
        with self._lock:
            self._rollback = rollback or self._rollback
            self._shadow_settings = shadow or self._shadow_settings
        if inference is not None:
            self.serving.set_inference(inference)

    def rollback_settings(self) -> RollbackSettings:
        """The twin's `rollback` section now."""
        with self._lock:
            return self._rollback

    def shadow_settings(self) -> ShadowSettings:
        """The twin's `shadow` section now."""
        with self._lock:
            return self._shadow_settings

    def cancelled_by_rollback(self) -> bool:
        """An update ended by rollbackModel with no newer block queued to answer its desired version."""
        with self._lock:
            return self.rollbacks.waiting() and self._pending is None

    def has_pending(self) -> bool:
        """A desired block waits to be applied (it interrupts a calibration's shadow phase)."""
        with self._lock:
            return self._pending is not None

    def status(self) -> dict[str, Any]:
        """Active and previous versions, state, progress and the last error, for reported properties."""
        state, progress = self.phases.now()
        held, fallback = self.serving.held, self.serving.fallback
        previous = fallback.key if fallback is not None else self.store.previous()
        latest = self.acks.ledger.latest
        return {
            "state": state.value,
            "active": split_key(held.key),
            "previous": split_key(previous) if previous else None,
            "trial": held.key if self.watch is not None else None,
            "progress": None if progress is None else round(progress * 100),
            "desired_version": latest[0] if latest else None,
            "last_error": self.acks.last_error,
            "ack": self.acks.last(),
        }

    def health(self) -> ModelHealth:
        """The modelHealth value now (any thread)."""
        return self.healthbook.get()

    @property
    def model(self) -> Model:
        """The model serving now: the one holder, which the pipeline reads at each dispatch."""
        return self.serving.model

    # ---- the worker ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        """Worker loop: operator rollbacks first, then the newest desired block."""
        while not self.stopping.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            self._serve_rollbacks()
            with self._lock:
                job, self._pending = self._pending, None
                self._job = job
            if job is None:
                self._calibrate()
                continue
            try:
                UpdateRun(self, job).apply()
            finally:
                with self._lock:
                    self._job = None
                self.phases.enter(UpdateState.IDLE)

    def _calibrate(self) -> None:
        """One step of the on-device calibration, between updates; a bug in it ends it with the reason, never the
        worker."""
        try:
            self.calibration.step()
        except Exception as err:  # the manager must outlive a calibration bug and say why it stopped
            log.exception("on-device calibration failed unexpectedly")
            self.calibration.fail(f"internal error while calibrating: {type(err).__name__}: {err}")

    def _serve_rollbacks(self) -> None:
        """Answer rollbackModel calls that arrived while no watch was running."""
        if not self.rollbacks.waiting():
            return
        self.phases.enter(UpdateState.ROLLING_BACK)
        try:
            result = self._manual_rollback()
        finally:
            self.phases.enter(UpdateState.IDLE)
        self.rollbacks.answer(result)

    def _manual_rollback(self) -> dict[str, Any]:
        """Move the pointer back to the previous committed version (verified from disk), then swap to it."""
        current = self.serving.held.key
        previous = self.store.previous()
        if previous is None:
            return {"status": 409, "payload": {"error": "no previous model version to roll back to",
                                               "active": split_key(current)}}
        try:
            back = self.serving.load(previous)
        except VisionEdgeError as err:
            log.error("cannot roll back to %s: %s", previous, err)
            return {"status": 500, "payload": {"error": f"cannot roll back to {previous}: {err}",
                                               "active": split_key(current)}}
        self.store.rollback()
        self.serving.swap_in(back, keep_fallback=False)
        self.latency = LatencyWindow()
        text = f"rolled back {current} to {previous} on request (rollbackModel)"
        self.phases.enter(UpdateState.ROLLING_BACK, active=pair(previous), candidate=pair(current),
                          verdict="rolledBack", reason=text)
        self.acks.overrule(text, None, back.block)
        return self.rollback_result(text)

    def rollback_result(self, text: str) -> dict[str, Any]:
        """The rollbackModel response after a successful rollback."""
        previous = self.store.previous()
        return {"status": 200, "payload": {"message": text, "active": split_key(self.serving.held.key),
                                           "previous": split_key(previous) if previous else None}}

    def _baseline_key(self) -> str:
        """The committed model, whose inference times are the yardstick for the next one."""
        held = self.serving.fallback or self.serving.held
        return held.key


def _non_finite(record: Mapping[str, Any]) -> str:
    """A reason when a record carries NaN or infinity (a decoder overflow or a model gone numerically bad)."""
    for item in (*record.get("classifications", ()), *record.get("detections", ())):
        values = [item.get("confidence", 0.0), *item.get("box", ())]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return f"non-finite value in a result ({item.get('label', '?')})"
    return ""
