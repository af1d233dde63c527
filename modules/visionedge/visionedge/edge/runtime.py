"""The IoT Edge module: offline-first start, twin-driven settings, direct methods, status, clean SIGTERM."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from visionedge import __version__
from visionedge.acks import ack
from visionedge.analytics.live import SceneAnalytics
from visionedge.app import make_fetcher, sample_video, stop_after
from visionedge.config import DesiredProperties, ModuleConfig, SourceSettings
from visionedge.edge.client import (
    ControlItem,
    DesiredPatch,
    HubClient,
    HubCredentialsRejected,
    HubUnavailable,
    MethodCall,
)
from visionedge.edge.methods import DirectMethods
from visionedge.edge.reporter import Reporter
from visionedge.edge.transport import HubTransport
from visionedge.edge.twin import DesiredState
from visionedge.errors import VisionEdgeError
from visionedge.frame import Frame, Inference
from visionedge.metrics import Metrics
from visionedge.models.catalog import builtin_manifest, builtin_names
from visionedge.models.model import Model
from visionedge.models.runtime import bound, usable_cores
from visionedge.modelstore import ModelManager, ModelStore
from visionedge.modelstore.shadow import Shadow
from visionedge.pipeline import Pipeline
from visionedge.retry import backoff_delay
from visionedge.sinks import Sink
from visionedge.sources import Source, SourceState, open_source
from visionedge.state import (
    ModelSnapshot,
    ModelUpdateSnapshot,
    ModuleSnapshot,
    heartbeat_view,
    source_snapshot,
    status_view,
)
from visionedge.supervise import Part, states
from visionedge.telemetry.sink import TelemetrySink
from visionedge.timeouts import TimedOut, call_with_timeout
from visionedge.urls import redact_url

log = logging.getLogger(__name__)

EXIT_CREDENTIALS = 3
SOURCE_OPEN_TIMEOUT_S = 5.0
"""Opening a file source (a FIFO, a hung network mount) may block; the control loop waits this long, no more."""
MODEL_LOAD_TIMEOUT_S = 30.0
"""Reloading the model for new runtime settings runs off the control loop; it waits this long, no more."""
PIPELINE_SECTIONS = frozenset({"source", "sources", "runtime"})
"""Sections whose apply replaces the model or the pipeline: refused before that happened, nothing needs undoing."""
CONNECT_RETRY_MAX_S = 10.0
"""Longest spacing of connect attempts while offline, so a module is back within ~10 s of the hub, however long
the outage was."""


class EdgeModule:
    """Wires the pipeline to the hub; only the control loop thread changes settings."""

    def __init__(self, config: ModuleConfig, client: HubClient) -> None:
        self.config = config
        self.client = client
        self.instance_id = str(uuid.uuid4())
        self.fetcher = make_fetcher(config)
        data = config.local.data_dir
        self.state = DesiredState(config.desired, cache=data / "twin-desired.json", deferred=DEFERRED)
        self.reporter = Reporter(client)
        self._stop = threading.Event()
        self._source_hung: list[SourceSettings] | None = None
        self.control_part = Part("control")
        self.connect_part = Part("hub-connect")
        self.started_at = time.time()
        self.store = ModelStore.for_config(config, self.fetcher)
        self.manager: ModelManager | None = None
        self.shadow: Shadow | None = None
        self.sources: dict[str, Source] = {}
        self.pipeline: Pipeline | None = None
        self.telemetry: TelemetrySink | None = None
        self.sinks: list[Sink] = []
        self._pipeline_stop = threading.Event()
        self._pipeline_thread: threading.Thread | None = None
        self.last_error = ""
        self._applied_notes: dict[str, str] = {}
        """What an applier changed from the value asked for (e.g. runtime bounded by the cores), for its ack."""
        self.fatal: VisionEdgeError | None = None
        identity = {
            "iothub": os.environ.get("IOTEDGE_IOTHUBHOSTNAME", ""),
            "edge_device": os.environ.get("IOTEDGE_DEVICEID", ""),
            "module": os.environ.get("IOTEDGE_MODULEID", ""),
            "instance_number": self.instance_id,
        }
        self.scene = SceneAnalytics(data / "analytics")
        """Tracks, lines and zones per source; survives pipeline restarts, its counters survive module restarts."""
        self.methods = DirectMethods(client, status=self.status, manager=lambda: self.manager,
                                     latest=self._latest,
                                     snapshot_dir=data / "snapshots")
        self.metrics = Metrics(identity, self.snapshot)

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Start offline on the last good settings, connect in the background, serve the control loop."""
        self._stop = stop
        self.metrics.start(self.config.local.metrics_port, self.config.local.metrics_host)
        # The hub first: whatever the saved settings do, the cloud can always reach the module to fix them.
        self.reporter.start()
        self.connect_part.thread(lambda: self._connect_loop(stop), stop).start()
        self._boot(self.state.restore())
        try:
            self.control_part.run(lambda: self._control_loop(stop), stop)
        finally:
            self.shutdown()
        if isinstance(self.fatal, HubCredentialsRejected):
            log.error("%s", self.fatal)
            return EXIT_CREDENTIALS
        return 0

    def _boot(self, settings: DesiredProperties) -> None:
        """Start on the last accepted settings; a part that still fails starts on its defaults instead."""
        steps: tuple[tuple[str, Callable[[DesiredProperties], None], tuple[str, ...]], ...] = (
            ("telemetry", self._start_telemetry, ("telemetry", "outbox", "local_mqtt")),
            ("model", self._start_model, ("runtime", "inference", "rollback")),
            ("analytics", self._apply_analytics, ("analytics",)),
            ("source", self._start_pipeline, ("source",)),
        )
        for what, start, keys in steps:
            try:
                start(self.state.settings)
            except VisionEdgeError as err:
                self.last_error = f"{what}: {err}"
                log.error("%s cannot start: %s; waiting for valid desired settings", what, err)
            except Exception as err:  # noqa: BLE001 - saved settings must never stop the module from starting
                log.error("%s cannot start on the saved settings (%s: %s); starting it on the defaults", what,
                          type(err).__name__, err)
                for key in keys:
                    self.state.revert(key, self.config.desired)
                try:
                    start(self.state.settings)
                except Exception as again:  # noqa: BLE001 - the hub connection and control loop still run
                    self.last_error = f"{what}: {type(again).__name__}: {again}"
                    log.error("%s cannot start: %s", what, self.last_error)

    def _control_loop(self, stop: threading.Event) -> None:
        """The control thread: desired patches and methods one at a time, and the periodic status refresh."""
        next_status = 0.0
        while not stop.is_set():
            try:
                item: ControlItem | None = self.client.control.get(timeout=0.5)
            except queue.Empty:
                item = None
            if isinstance(item, DesiredPatch):
                self.apply_desired(item.patch, full=item.full)
            elif isinstance(item, MethodCall):
                self.methods.handle(item)
            if time.monotonic() >= next_status:
                self._recover()
                self.reporter.report({"status": self.status()})
                next_status = time.monotonic() + self.config.local.status_interval_s

    def shutdown(self) -> None:
        """Stop capture, flush telemetry and reported properties, disconnect; bounded to a few seconds."""
        self._stop_pipeline()
        self.scene.save()
        if self.manager is not None:
            self.manager.stop(timeout=1.0)
        for sink in self.sinks:
            sink.close()
        self.reporter.report({"status": self.status(state="stopped")})
        self.reporter.stop(flush_timeout=1.5)
        self.client.shutdown(timeout=1.5)
        self.metrics.close()

    def _connect_loop(self, stop: threading.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                self.client.connect()
                twin = self.client.get_twin()
                reported = twin.get("reported")
                self.reporter.seed(reported if isinstance(reported, dict) else {})
                desired = twin.get("desired", {})
                self.client.control.put(DesiredPatch(desired, full=True))
                return
            except HubCredentialsRejected as err:
                self.fatal = err
                self.last_error = str(err)
                stop.set()
                return
            except HubUnavailable as err:
                self.last_error = f"hub unreachable: {err}"
                delay = backoff_delay(attempt, 1.0, CONNECT_RETRY_MAX_S)
                log.warning("%s; retrying in %.0f s (results keep flowing to the outbox)", self.last_error, delay)
            attempt += 1
            if stop.wait(delay):
                return

    # ---- settings --------------------------------------------------------------------------------------------

    def apply_desired(self, patch: dict[str, Any], full: bool) -> None:
        """Validate and apply; each section that fails keeps its last good value and says why."""
        version = int(patch.get("$version", self.state.version))
        before = self.state.settings
        outcome = self.state.apply(patch, version, full=full)
        reported = dict(outcome.reported)
        for key in sorted(outcome.changed - DEFERRED):
            live = (self.model, self.pipeline)
            try:
                APPLIERS[key](self, self.state.settings)
            except Exception as err:  # noqa: BLE001 - any failure of a real apply is a refusal, never a crash
                self._refuse(key, before, err, version, reported, touched=live != (self.model, self.pipeline))
            else:
                note = self._applied_notes.pop(key, "")
                if note and key in reported:
                    reported[key] = {**reported[key], "ad": f"applied; {note}"}
        self.state.commit()  # persisted before anything is acknowledged, the model manager's 202s included
        if "model" in patch and self.manager is not None:
            self.manager.request(self.state.document.get("model", {}), version)
        reported["status"] = self.status()
        self.reporter.report(reported)

    def _refuse(self, key: str, before: DesiredProperties, err: Exception, version: int,
                reported: dict[str, Any], touched: bool) -> None:
        """A section that failed when applied for real: 400 with the reason, and the previous value back in effect
        (applied again, unless the failure came before the model or pipeline in use was touched)."""
        why = str(err) if isinstance(err, VisionEdgeError) else f"{type(err).__name__}: {err}"
        why = " ".join(why.split())
        why = why if len(why) <= 300 else f"{why[:150]}…{why[-149:]}"  # the end holds the system's reason
        self.state.revert(key, before)
        if touched or key not in PIPELINE_SECTIONS:
            try:
                APPLIERS[key](self, self.state.settings)
            except Exception as again:  # noqa: BLE001 - logged; the section keeps whatever state it could reach
                log.error("%s: the previous value could not be re-applied either: %s", key, again)
        reason = f"rejected: {why}; keeping the previous value"
        reported[key] = ack(before.model_dump(mode="json")[key], 400, version, reason)
        self.last_error = f"{key}: {why}"
        log.warning("desired $version %s: %s: %s", version, key, reason)

    @property
    def model(self) -> Model | None:
        """The model serving now, as its one holder (the model manager) has it."""
        return self.manager.model if self.manager is not None else None

    def _apply_inference(self, settings: DesiredProperties) -> None:
        if self.pipeline is not None:
            self.pipeline.set_gate(settings.inference.gate)
        if self.manager is not None:
            self.manager.update_settings(inference=settings.inference)

    def _apply_runtime(self, settings: DesiredProperties) -> None:
        _, self._applied_notes["runtime"] = bound(settings.runtime, usable_cores())
        manager = self.manager
        if manager is None:
            return  # the model, once it loads, loads with these settings
        model = call_with_timeout(lambda: manager.reload(settings.runtime), MODEL_LOAD_TIMEOUT_S,
                                  f"loading model {manager.model.name} with the new runtime settings", self._stop)
        if self.pipeline is not None and self.pipeline.workers != model.layout.workers:
            self._start_pipeline(settings)  # the worker count is fixed while a pipeline runs

    def _apply_analytics(self, settings: DesiredProperties) -> None:
        """New geometry takes effect at the next frame; the camera keeps running."""
        self.scene.configure(settings.analytics, self._desired_task(settings), [s.id for s in settings.source_list()])

    def _desired_task(self, settings: DesiredProperties) -> str | None:
        """What the desired model does (its inline manifest or built-in name says; else the model in use), so
        analytics sent together with a detector are not judged against the classifier still running."""
        wanted = settings.model
        if wanted.manifest is not None and isinstance(wanted.manifest.get("task"), str):
            return str(wanted.manifest["task"])
        if wanted.url is None and wanted.name in builtin_names():
            return builtin_manifest(wanted.name).task
        return self.model.manifest.task if self.model is not None else None

    def _apply_rollback(self, settings: DesiredProperties) -> None:
        if self.manager is not None:
            self.manager.update_settings(rollback=settings.rollback)

    def _apply_shadow(self, settings: DesiredProperties) -> None:
        if self.manager is not None:
            self.manager.update_settings(shadow=settings.shadow)

    def _apply_telemetry(self, settings: DesiredProperties) -> None:
        if self.telemetry is not None:
            self.telemetry.update(settings.telemetry, settings.outbox)

    def _apply_local_mqtt(self, settings: DesiredProperties) -> None:
        if self.telemetry is not None:
            self.telemetry.replace_local(settings.local_mqtt, self.config.local)

    def _model_swapped(self, model: Model) -> None:
        """Called by the model manager when the model serving changed (the pipeline reads it at the next frame)."""
        if self.telemetry is not None:
            self.telemetry.emit("model_active", {"model": {"name": model.name, "version": model.version},
                                                 "providers": model.providers})

    def _attach_shadow(self, shadow: Shadow | None) -> None:
        """Called by the model manager: a candidate model runs beside the live pipeline's model (None: no more)."""
        self.shadow = shadow
        if self.pipeline is not None:
            self.pipeline.shadow = shadow

    def _start_model(self, settings: DesiredProperties) -> None:
        """The last good model from the store, offline; the manager then follows the twin."""
        self.store.cleanup_staging()
        try:
            model = self.store.load_active(settings.runtime, default=settings.model)
        except VisionEdgeError as err:
            self.last_error = f"model: {err}"
            log.error("no usable model: %s", err)
            return
        model.set_overrides(settings.inference)
        self.manager = ModelManager(
            self.store, model, swap=self._model_swapped, report=lambda a: self.reporter.report({"model": a}),
            runtime=settings.runtime, inference=settings.inference, rollback=settings.rollback,
            shadow=settings.shadow, attach_shadow=self._attach_shadow,
            report_health=lambda block: self.reporter.report({"modelHealth": block}),
        )
        self.manager.start()

    def _recover(self) -> None:
        """A device that booted without a usable model or source (offline, empty cache) keeps trying both."""
        settings = self.state.settings
        if self.manager is None:
            self._start_model(settings)
        if self.model is not None and self.pipeline is None and settings.source_list() != self._source_hung:
            try:
                self._start_pipeline(settings)
            except VisionEdgeError as err:
                self.last_error = f"source: {err}"
                return
            log.info("model and source are available now: the pipeline runs")

    def _start_telemetry(self, settings: DesiredProperties) -> None:
        config = self.config.model_copy(update={"desired": settings})
        device = os.environ.get("IOTEDGE_DEVICEID", "visionedge")
        self.telemetry = TelemetrySink.from_config(config, HubTransport(self.client), client_id=f"{device}-local",
                                                   heartbeat_fields=lambda: heartbeat_view(self.snapshot()))
        self.client.on_connected.append(self.telemetry.link_up)
        self.telemetry.start()
        self.sinks = [self.telemetry]

    def _on_source_state(self, source_id: str, state: SourceState, reason: str) -> None:
        """Source state changes become events on the `events` output (and the next status refresh)."""
        if self.telemetry is not None:
            self.telemetry.emit("source_state", {"source": source_id, "state": state.value, "reason": reason})

    def _on_record(self, record: dict[str, Any]) -> None:
        if record.get("reused"):
            return  # no inference ran: nothing to time, and nothing a model under watch did
        self.metrics.observe(record)
        if self.manager is not None:
            self.manager.observe_record(record)

    def _on_inference_error(self, model: Model, err: Exception) -> None:
        if self.manager is not None:
            self.manager.observe_error(model, err)

    # ---- pipeline --------------------------------------------------------------------------------------------

    def _start_pipeline(self, settings: DesiredProperties) -> None:
        """(Re)start capture on every source; opening errors propagate so the twin ack can carry them."""
        sources: dict[str, Source] = {}
        for one in settings.source_list():
            shown = redact_url(one.uri) if "://" in one.uri else one.uri[:200]
            try:
                sources[one.id] = call_with_timeout(partial(self._open_source, one), SOURCE_OPEN_TIMEOUT_S,
                                                    f"opening source {shown}", self._stop)
            except TimedOut:
                self._source_hung = settings.source_list()  # not retried by _recover: each try holds the loop
                raise
        self._stop_pipeline()
        self.pipeline = None  # until the new one runs: a failure below leaves it to _recover, on accepted settings
        self.sources = sources
        for source in sources.values():
            source.listeners.append(self._on_source_state)
        manager = self.manager
        if manager is None:
            log.error("no usable model: the pipeline waits for a valid desired 'model'")
            return
        self._pipeline_stop = threading.Event()
        self.pipeline = Pipeline(list(sources.values()), lambda: manager.model, self.sinks, on_record=self._on_record,
                                 on_inference_error=self._on_inference_error, gate=settings.inference.gate)
        self.pipeline.shadow = self.shadow
        self.pipeline.scene = self.scene
        self._pipeline_thread = threading.Thread(target=self.pipeline.run, args=(self._pipeline_stop,),
                                                 name="pipeline", daemon=True)
        self._pipeline_thread.start()

    def _open_source(self, settings: SourceSettings) -> Source:
        return open_source(settings, resolve_sample=lambda: sample_video(self.fetcher))

    def _stop_pipeline(self) -> None:
        self._pipeline_stop.set()
        if self._pipeline_thread is not None:
            self._pipeline_thread.join(timeout=2.0)
            self._pipeline_thread = None

    # ---- methods and status ----------------------------------------------------------------------------------

    def _latest(self, source_id: str | None) -> tuple[Frame, Inference] | None:
        """The newest analysed frame of one source (or of any); LookupError for a source the pipeline lacks."""
        pipeline = self.pipeline
        if source_id is None:
            return pipeline.latest if pipeline is not None else None
        feed = pipeline.feed(source_id) if pipeline is not None else None
        if feed is None:
            raise LookupError(f"no source {source_id!r}; sources: {', '.join(self.sources)}")
        return feed.latest

    def snapshot(self) -> ModuleSnapshot:
        """The one place the module's state is read from the live objects; every view is a function of it."""
        model, manager, telemetry, pipeline = self.model, self.manager, self.telemetry, self.pipeline
        update = manager.status() if manager is not None else None
        return ModuleSnapshot(
            module_version=__version__,
            instance=self.instance_id,
            started_at=self.started_at,
            desired_version=self.state.version,
            last_error=self.last_error,
            hub_connected=self.client.connected.is_set(),
            sources=tuple(source_snapshot(s, self.sources.get(s.id), pipeline.feed(s.id) if pipeline else None)
                          for s in self.state.settings.source_list()),
            model=ModelSnapshot(model.name, model.version, tuple(model.providers), model.variant) if model else None,
            model_update=ModelUpdateSnapshot(str(update["state"]), update) if update is not None else None,
            telemetry=telemetry.stats() if telemetry is not None else None,
            parts=states(self._parts()),
            model_health=manager.health() if manager is not None else None,
        )

    def _parts(self) -> list[Part]:
        """Every supervised thread of the module, for status and health."""
        parts = [self.control_part, self.connect_part, self.reporter.part]
        if self.pipeline is not None:
            parts += self.pipeline.supervised()
        if self.telemetry is not None:
            parts += self.telemetry.parts()
        if self.manager is not None:
            parts.append(self.manager.part)
        return parts

    def status(self, state: str = "running") -> dict[str, Any]:
        """The reported `status` block, also returned by getStatus."""
        return status_view(self.snapshot(), state)


SectionApplier = Callable[[EdgeModule, DesiredProperties], None]

DEFERRED = frozenset({"model"})
"""Desired sections applied and acknowledged by their owner (the model manager: 202, then 200/400/500)."""

APPLIERS: dict[str, SectionApplier] = {
    "source": EdgeModule._start_pipeline,
    "sources": EdgeModule._start_pipeline,
    "inference": EdgeModule._apply_inference,
    "runtime": EdgeModule._apply_runtime,
    "rollback": EdgeModule._apply_rollback,
    "shadow": EdgeModule._apply_shadow,
    "telemetry": EdgeModule._apply_telemetry,
    "outbox": EdgeModule._apply_telemetry,
    "local_mqtt": EdgeModule._apply_local_mqtt,
    "analytics": EdgeModule._apply_analytics,
}
"""What changes in the running module when a desired section changes; a test keeps it covering every section."""


def run_edge_module(config: ModuleConfig, stop: threading.Event, duration: float | None = None) -> int:
    """Entry point used by `visionedge run` when the IoT Edge environment is present."""
    log.info("visionedge %s starting under IoT Edge (module %s on %s)", __version__,
             os.environ.get("IOTEDGE_MODULEID"), os.environ.get("IOTEDGE_DEVICEID"))
    client = HubClient.from_edge_environment()
    stop_after(duration, stop)
    return EdgeModule(config, client).run(stop)
