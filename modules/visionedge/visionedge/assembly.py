"""Builds the running module from its parts (sources, model, pipeline, telemetry, sinks, the callbacks between them)
and rebuilds them when settings change; the IoT Edge module and the local `run` both assemble through it."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from visionedge.analytics.live import SceneAnalytics
from visionedge.app import make_fetcher, sample_video
from visionedge.config import DesiredProperties, ModuleConfig, SourceSettings
from visionedge.errors import VisionEdgeError
from visionedge.frame import Frame, Inference
from visionedge.metrics import Metrics
from visionedge.models.catalog import builtin_manifest, builtin_names
from visionedge.models.model import Model
from visionedge.models.runtime import bound, usable_cores
from visionedge.modelstore import ModelManager, ModelStore
from visionedge.modelstore.shadow import Shadow
from visionedge.pipeline import Pipeline
from visionedge.sinks import Sink
from visionedge.sources import Source, SourceState, open_source
from visionedge.state import Control, ModuleSnapshot, heartbeat_view, read_snapshot
from visionedge.supervise import Part
from visionedge.telemetry.scene import layouts_of
from visionedge.telemetry.sender import Transport
from visionedge.telemetry.sink import TelemetrySink
from visionedge.timeouts import TimedOut, call_with_timeout
from visionedge.urls import redact_url

log = logging.getLogger(__name__)

SOURCE_OPEN_TIMEOUT_S = 5.0
"""Opening a file source (a FIFO, a hung network mount) may block; the caller waits this long, no more."""
MODEL_LOAD_TIMEOUT_S = 30.0
"""Reloading the model for new runtime settings runs off the caller's thread; it waits this long, no more."""

Report = Callable[[dict[str, Any]], None]


class Assembly:
    """The live parts of one running module and the one place each is built; changed only by its owner's thread
    (the control loop under IoT Edge), except the model swaps the manager's thread makes."""

    def __init__(self, config: ModuleConfig, control: Control | None = None, *, sinks: Sequence[Sink] = (),
                 report: Report | None = None, stop: threading.Event | None = None) -> None:
        """`report` sends reported properties (the model manager's acknowledgements); `sinks` are where records go
        besides telemetry."""
        self.config = config
        self.control = control or Control(settings=lambda: config.desired)
        self.instance_id = str(uuid.uuid4())
        self.started_at = time.time()
        self.fetcher = make_fetcher(config)
        self.stop = stop or threading.Event()
        """Set when the module stops: a blocking open or load is abandoned."""
        self._report = report or (lambda _patch: None)
        self.store: ModelStore | None = None
        self.manager: ModelManager | None = None
        self.shadow: Shadow | None = None
        self._local_model: Model | None = None
        """The local run's one model; under IoT Edge the model manager holds the serving model instead."""
        self.applied_notes: dict[str, str] = {}
        """What an applier changed from the value asked for (runtime bounded by the cores), for its ack."""
        self.sources: dict[str, Source] = {}
        self.source_hung: list[SourceSettings] | None = None
        """Sources whose opening timed out: not retried until the settings change (each try holds the caller)."""
        self.pipeline: Pipeline | None = None
        self.telemetry: TelemetrySink | None = None
        self.sinks: list[Sink] = list(sinks)
        self.scene = SceneAnalytics(config.local.data_dir / "analytics")
        """Tracks, lines and zones per source; survives pipeline restarts (the counts are the telemetry sink's)."""
        self.last_error = ""
        self._pipeline_stop = threading.Event()
        self._pipeline_thread: threading.Thread | None = None
        identity = {
            "iothub": os.environ.get("IOTEDGE_IOTHUBHOSTNAME", ""),
            "edge_device": os.environ.get("IOTEDGE_DEVICEID", ""),
            "module": os.environ.get("IOTEDGE_MODULEID", ""),
            "instance_number": self.instance_id,
        }
        self.metrics = Metrics(identity, self.snapshot)

    # ---- the model -------------------------------------------------------------------------------------------

    @property
    def model(self) -> Model | None:
        """The model serving now, read from its one holder: the model manager, or the local run's model."""
        return self.manager.model if self.manager is not None else self._local_model

    def use_model(self, model: Model) -> None:
        """Serve one model, with no model store or manager behind it (the local run)."""
        self._local_model = model

    def start_model(self, settings: DesiredProperties) -> None:
        """The last good model from the store, offline; the manager then follows the twin."""
        store = self.store = self.store or ModelStore.for_config(self.config, self.fetcher)
        store.cleanup_staging()
        try:
            model = store.load_active(settings.runtime, default=settings.model)
        except VisionEdgeError as err:
            self.last_error = f"model: {err}"
            log.error("no usable model: %s", err)
            return
        model.set_overrides(settings.inference)
        self.manager = ModelManager(
            store, model, swap=self._swap_model, report=lambda a: self._report({"model": a}),
            runtime=settings.runtime, inference=settings.inference, rollback=settings.rollback,
            shadow=settings.shadow, attach_shadow=self._attach_shadow,
            report_health=lambda block: self._report({"modelHealth": block}),
            latest_frame=self._latest_frame,
        )
        self.manager.start()

    def apply_inference(self, settings: DesiredProperties) -> None:
        """Thresholds and the scene-change gate, from the next frame."""
        if self._local_model is not None:
            self._local_model.set_overrides(settings.inference)
        if self.pipeline is not None:
            self.pipeline.set_gate(settings.inference.gate)
        if self.manager is not None:
            self.manager.update_settings(inference=settings.inference)

    def apply_runtime(self, settings: DesiredProperties) -> None:
        """The serving model loaded again with the new execution settings, in its holder (a new pipeline when its
        workers change); values above the usable cores are lowered, said in the ack."""
        _, self.applied_notes["runtime"] = bound(settings.runtime, usable_cores())
        manager = self.manager
        if manager is None:
            return  # the model, once it loads, loads with these settings
        model = call_with_timeout(lambda: manager.reload(settings.runtime), MODEL_LOAD_TIMEOUT_S,
                                  f"loading model {manager.model.name} with the new runtime settings", self.stop)
        if self.pipeline is not None and self.pipeline.workers != model.layout.workers:
            self.start_pipeline(settings)  # the worker count is fixed while a pipeline runs

    def reset_counters(self, source_id: str, name: str) -> dict[str, Any] | None:
        """The resetCounters method's door: the telemetry sink holds the scene's running totals."""
        telemetry = self.telemetry
        return telemetry.reset_counters(source_id, name) if telemetry is not None else None

    def apply_analytics(self, settings: DesiredProperties) -> None:
        """New geometry takes effect at the next frame; the camera keeps running."""
        self.scene.configure(settings.analytics, self._desired_task(settings), [s.id for s in settings.source_list()])
        if self.telemetry is not None:
            self.telemetry.set_layouts(layouts_of(settings.analytics))

    def _desired_task(self, settings: DesiredProperties) -> str | None:
        """What the desired model does (its inline manifest or built-in name says; else the model in use), so
        analytics sent together with a detector are not judged against the classifier still running."""
        wanted = settings.model
        if wanted.manifest is not None and isinstance(wanted.manifest.get("task"), str):
            return str(wanted.manifest["task"])
        if wanted.url is None and wanted.name in builtin_names():
            return builtin_manifest(wanted.name).task
        return self.model.manifest.task if self.model is not None else None

    def apply_updates(self, settings: DesiredProperties) -> None:
        """Rollback and shadow settings: the model manager reads them at the next update."""
        if self.manager is not None:
            self.manager.update_settings(rollback=settings.rollback, shadow=settings.shadow)

    def _swap_model(self, model: Model) -> None:
        """Called by the model manager when the model serving changed (the pipeline reads it at the next frame)."""
        if self.telemetry is not None:
            self.telemetry.emit("model_active", {"model": {"name": model.name, "version": model.version},
                                                 "providers": model.providers})

    def _latest_frame(self) -> Frame | None:
        """The newest analysed frame of any source, which the on-device calibration samples."""
        latest = self.latest(None)
        return latest[0] if latest is not None else None

    def _attach_shadow(self, shadow: Shadow | None) -> None:
        """Called by the model manager: a candidate model runs beside the live pipeline's model (None: no more)."""
        self.shadow = shadow
        if self.pipeline is not None:
            self.pipeline.shadow = shadow

    # ---- telemetry -------------------------------------------------------------------------------------------

    def start_telemetry(self, settings: DesiredProperties, transport: Transport) -> None:
        """Outbox, policy, sender and local MQTT, whose heartbeat carries the module's snapshot."""
        config = self.config.model_copy(update={"desired": settings})
        device = os.environ.get("IOTEDGE_DEVICEID", "visionedge")
        self.telemetry = TelemetrySink.from_config(config, transport, client_id=f"{device}-local",
                                                   heartbeat=lambda: heartbeat_view(self.snapshot()))
        self.scene.listeners.append(self.telemetry.scene_frame)
        self.telemetry.start()
        self.sinks = [self.telemetry]

    def apply_telemetry(self, settings: DesiredProperties) -> None:
        """Policy, budget and outbox bounds."""
        if self.telemetry is not None:
            self.telemetry.update(settings.telemetry, settings.outbox)

    def apply_local_mqtt(self, settings: DesiredProperties) -> None:
        """Reconnect (or stop) the local MQTT publisher."""
        if self.telemetry is not None:
            self.telemetry.replace_local(settings.local_mqtt, self.config.local)

    # ---- sources and the pipeline ----------------------------------------------------------------------------

    def open_sources(self, settings: DesiredProperties) -> dict[str, Source]:
        """Every configured source, each opening bounded; errors propagate so a twin ack can carry them."""
        sources: dict[str, Source] = {}
        for one in settings.source_list():
            shown = redact_url(one.uri) if "://" in one.uri else one.uri[:200]
            try:
                sources[one.id] = call_with_timeout(partial(self._open_source, one), SOURCE_OPEN_TIMEOUT_S,
                                                    f"opening source {shown}", self.stop)
            except TimedOut:
                self.source_hung = settings.source_list()
                raise
        return sources

    def build_pipeline(self, settings: DesiredProperties, sources: dict[str, Source],
                       model: Model | Callable[[], Model]) -> Pipeline:
        """The pipeline over these sources and this model, with every callback wired (not started)."""
        self._adopt(sources)
        pipeline = Pipeline(list(sources.values()), model, self.sinks, on_record=self._on_record,
                            on_inference_error=self._on_inference_error, gate=settings.inference.gate)
        pipeline.shadow = self.shadow
        pipeline.scene = self.scene
        self.pipeline = pipeline
        return pipeline

    def start_pipeline(self, settings: DesiredProperties) -> None:
        """(Re)start capture on every source, in the background; opening errors propagate."""
        sources = self.open_sources(settings)
        self.stop_pipeline()
        self.pipeline = None  # until the new one runs: a failure below leaves it to recover(), on accepted settings
        if self.model is None:
            self._adopt(sources)
            log.error("no usable model: the pipeline waits for a valid desired 'model'")
            return
        manager = self.manager
        serving = (lambda: manager.model) if manager is not None else self.model
        pipeline = self.build_pipeline(settings, sources, serving)
        self._pipeline_stop = threading.Event()
        self._pipeline_thread = threading.Thread(target=pipeline.run, args=(self._pipeline_stop,),
                                                 name="pipeline", daemon=True)
        self._pipeline_thread.start()

    def _adopt(self, sources: dict[str, Source]) -> None:
        """These sources are the module's now: their state changes become events."""
        self.sources = sources
        for source in sources.values():
            source.listeners.append(self._on_source_state)

    def stop_pipeline(self) -> None:
        """Stop the background pipeline, waiting a bounded time."""
        self._pipeline_stop.set()
        if self._pipeline_thread is not None:
            self._pipeline_thread.join(timeout=2.0)
            self._pipeline_thread = None

    def recover(self) -> None:
        """A device that booted without a usable model or source (offline, empty cache) keeps trying both."""
        settings = self.control.settings()
        if self.manager is None:
            self.start_model(settings)
        if self.model is not None and self.pipeline is None and settings.source_list() != self.source_hung:
            try:
                self.start_pipeline(settings)
            except VisionEdgeError as err:
                self.last_error = f"source: {err}"
                return
            log.info("model and source are available now: the pipeline runs")

    def close(self) -> None:
        """Stop capture, stop the model manager, then close every sink (telemetry flushes, the scene totals with
        it)."""
        self.stop_pipeline()
        if self.manager is not None:
            self.manager.stop(timeout=1.0)
        for sink in self.sinks:
            sink.close()

    def _open_source(self, settings: SourceSettings) -> Source:
        return open_source(settings, resolve_sample=lambda: sample_video(self.fetcher))

    # ---- callbacks from the pipeline -------------------------------------------------------------------------

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

    # ---- views -----------------------------------------------------------------------------------------------

    def latest(self, source_id: str | None) -> tuple[Frame, Inference] | None:
        """The newest analysed frame of one source (or of any); LookupError for a source the pipeline lacks."""
        pipeline = self.pipeline
        if source_id is None:
            return pipeline.latest if pipeline is not None else None
        feed = pipeline.feed(source_id) if pipeline is not None else None
        if feed is None:
            raise LookupError(f"no source {source_id!r}; sources: {', '.join(self.sources)}")
        return feed.latest

    def parts(self) -> list[Part]:
        """Every supervised thread of the assembled parts (the control plane adds its own)."""
        parts = self.control.parts()
        if self.pipeline is not None:
            parts += self.pipeline.supervised()
        if self.telemetry is not None:
            parts += self.telemetry.parts()
        if self.manager is not None:
            parts.append(self.manager.part)
        return parts

    def snapshot(self) -> ModuleSnapshot:
        """The module's state now (read by `state.read_snapshot`, the one reader of the live parts)."""
        return read_snapshot(self)
