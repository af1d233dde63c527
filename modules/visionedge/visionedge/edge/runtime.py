"""The IoT Edge module: offline-first start, twin-driven settings, direct methods, status, clean SIGTERM."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from visionedge import __version__
from visionedge.acks import ack
from visionedge.app import stop_after
from visionedge.assembly import MODEL_LOAD_TIMEOUT_S, SOURCE_OPEN_TIMEOUT_S, Assembly
from visionedge.config import DesiredProperties, ModuleConfig
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
from visionedge.errors import VisionEdgeError, describe_error, first_line
from visionedge.retry import backoff_delay
from visionedge.state import Control, ModuleSnapshot, status_view
from visionedge.supervise import Part

__all__ = ["APPLIERS", "BOOT_STEPS", "DEFERRED", "MODEL_LOAD_TIMEOUT_S", "PIPELINE_SECTIONS", "SECTION_TABLE",
           "SOURCE_OPEN_TIMEOUT_S", "EdgeModule", "Section", "boot_sections", "run_edge_module"]

log = logging.getLogger(__name__)

EXIT_CREDENTIALS = 3
CONNECT_RETRY_MAX_S = 10.0
"""Longest spacing of connect attempts while offline, so a module is back within ~10 s of the hub, however long
the outage was."""


class EdgeModule:
    """The control plane around the assembled parts: offline boot, the hub connection, the control loop that alone
    changes settings, direct methods and status."""

    def __init__(self, config: ModuleConfig, client: HubClient) -> None:
        self.config = config
        self.client = client
        self.state = DesiredState(config.desired, cache=config.local.data_dir / "twin-desired.json",
                                  deferred=DEFERRED)
        self.reporter = Reporter(client)
        self.control_part = Part("control")
        self.connect_part = Part("hub-connect")
        self.fatal: VisionEdgeError | None = None
        control = Control(settings=lambda: self.state.settings, version=lambda: self.state.version,
                          hub_connected=self.client.connected.is_set,
                          parts=lambda: [self.control_part, self.connect_part, self.reporter.part],
                          settings_moved_aside=lambda: self.state.moved_aside)
        self.assembly = Assembly(config, control, report=self.reporter.report)
        self.methods = DirectMethods(client, status=self.status, manager=lambda: self.assembly.manager,
                                     latest=self.assembly.latest, reset_counters=self.assembly.reset_counters,
                                     snapshot_dir=config.local.data_dir / "snapshots")

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Start offline on the last good settings, connect in the background, serve the control loop."""
        self.assembly.stop = stop
        self.assembly.metrics.start(self.config.local.metrics_port, self.config.local.metrics_host)
        # The hub first: whatever the saved settings do, the cloud can always reach the module to fix them.
        self.reporter.start()
        self.connect_part.thread(lambda: self._connect_loop(stop), stop).start()
        try:
            self._boot(self.state.restore())
            self.control_part.run(lambda: self._control_loop(stop), stop)
        finally:
            self.shutdown()
        if isinstance(self.fatal, HubCredentialsRejected):
            log.error("%s", self.fatal)
            return EXIT_CREDENTIALS
        return 0

    def _boot(self, settings: DesiredProperties) -> None:
        """Start on the last accepted settings; a part that still fails starts on its defaults instead."""
        starts: dict[str, Callable[[DesiredProperties], None]] = {
            "telemetry": self._start_telemetry, "model": self.assembly.start_model,
            "analytics": self.assembly.apply_analytics, "source": self.assembly.start_pipeline}
        for what in BOOT_STEPS:
            start, keys = starts[what], boot_sections(what)
            try:
                start(self.state.settings)
            except VisionEdgeError as err:
                self.assembly.last_error = f"{what}: {err}"
                log.error("%s cannot start: %s; waiting for valid desired settings", what, err)
            except Exception as err:  # noqa: BLE001 - saved settings must never stop the module from starting
                log.error("%s cannot start on the saved settings (%s: %s); starting it on the defaults", what,
                          type(err).__name__, err)
                for key in keys:
                    self.state.revert(key, self.config.desired)
                try:
                    start(self.state.settings)
                except Exception as again:  # noqa: BLE001 - the hub connection and control loop still run
                    self.assembly.last_error = f"{what}: {type(again).__name__}: {again}"
                    log.error("%s cannot start: %s", what, self.assembly.last_error)

    def _start_telemetry(self, settings: DesiredProperties) -> None:
        """Telemetry to the hub; the sender retries at once when the hub link comes back."""
        self.assembly.start_telemetry(settings, HubTransport(self.client))
        if self.assembly.telemetry is not None:
            self.client.on_connected.append(self.assembly.telemetry.link_up)

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
                self.assembly.recover()
                self.reporter.report({"status": self.status()})
                next_status = time.monotonic() + self.config.local.status_interval_s

    def shutdown(self) -> None:
        """Stop capture, flush telemetry and reported properties, disconnect; bounded to a few seconds."""
        self.assembly.close()
        self.reporter.report({"status": self.status(state="stopped")})
        self.reporter.stop(flush_timeout=1.5)
        self.client.shutdown(timeout=1.5)
        self.assembly.metrics.close()

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
                self.assembly.last_error = str(err)
                stop.set()
                return
            except HubUnavailable as err:
                self.assembly.last_error = f"hub unreachable: {err}"
                delay = backoff_delay(attempt, 1.0, CONNECT_RETRY_MAX_S)
                log.warning("%s; retrying in %.0f s (results keep flowing to the outbox)", self.assembly.last_error,
                            delay)
            attempt += 1
            if stop.wait(delay):
                return

    # ---- settings --------------------------------------------------------------------------------------------

    def apply_desired(self, patch: dict[str, Any], full: bool) -> None:
        """Validate and apply; each section that fails keeps its last good value and says why."""
        version = int(patch.get("$version", self.state.version))
        before = self.state.settings
        try:
            outcome = self.state.apply(patch, version, full=full)
        except Exception as err:  # noqa: BLE001 - every desired version gets an answer, even one nothing expected
            self._refuse_patch(patch, version, err)
            return
        reported = dict(outcome.reported)
        for key in sorted(outcome.changed - DEFERRED):
            live = (self.assembly.model, self.assembly.pipeline)
            try:
                APPLIERS[key](self.assembly, self.state.settings)
            except Exception as err:  # noqa: BLE001 - any failure of a real apply is a refusal, never a crash
                touched = live != (self.assembly.model, self.assembly.pipeline)
                self._refuse(key, before, err, version, reported, touched=touched)
            else:
                note = self.assembly.applied_notes.pop(key, "")
                if note and key in reported:
                    reported[key] = {**reported[key], "ad": f"applied; {note}"}
        self.state.commit()  # persisted before anything is acknowledged, the model manager's 202s included
        manager = self.assembly.manager
        if "model" in patch and manager is not None:
            manager.request(self.state.document.get("model", {}), version)
        reported["status"] = self.status()
        self.reporter.report(reported)

    def _refuse_patch(self, patch: dict[str, Any], version: int, err: Exception) -> None:
        """A patch the twin code could not even read: 400 for each of its sections, the settings in effect kept."""
        reason = f"rejected: {type(err).__name__}: {first_line(err)}; keeping the previous value"
        log.error("desired $version %s: %s", version, reason, exc_info=err)
        current = self.state.settings.model_dump(mode="json")
        self.assembly.last_error = reason
        self.reporter.report({key: ack(current.get(key), 400, version, reason)
                              for key in patch if not key.startswith("$")})

    def _refuse(self, key: str, before: DesiredProperties, err: Exception, version: int,
                reported: dict[str, Any], touched: bool) -> None:
        """A section that failed when applied for real: 400 with the reason, and the previous value back in effect
        (applied again, unless the failure came before the model or pipeline in use was touched)."""
        why = describe_error(err)
        self.state.revert(key, before)
        if touched or key not in PIPELINE_SECTIONS:
            try:
                APPLIERS[key](self.assembly, self.state.settings)
            except Exception as again:  # noqa: BLE001 - logged; the section keeps whatever state it could reach
                log.error("%s: the previous value could not be re-applied either: %s", key, again)
        reason = f"rejected: {why}; keeping the previous value"
        reported[key] = ack(before.model_dump(mode="json")[key], 400, version, reason)
        self.assembly.last_error = f"{key}: {why}"
        log.warning("desired $version %s: %s: %s", version, key, reason)

    # ---- status ----------------------------------------------------------------------------------------------

    def snapshot(self) -> ModuleSnapshot:
        """The module's state now; every view is a function of it."""
        return self.assembly.snapshot()

    def status(self, state: str = "running") -> dict[str, Any]:
        """The reported `status` block, also returned by getStatus."""
        return status_view(self.snapshot(), state)


SectionApplier = Callable[[Assembly, DesiredProperties], None]


@dataclass(frozen=True, slots=True)
class Section:
    """How one desired section reaches the running module."""

    apply: SectionApplier
    """What changes in the running parts when the section changes."""
    boot: str
    """The start-up step that reads it: when that step fails on the saved settings, the section goes back to its
    default before the step is tried again."""
    rebuilds: bool = False
    """Applying it replaces the model or the pipeline: refused before that happened, nothing needs undoing."""


DEFERRED = frozenset({"model"})
"""Desired sections applied and acknowledged by their owner (the model manager: 202, then 200/400/500)."""

BOOT_STEPS = ("telemetry", "model", "analytics", "source")
"""The start-up steps, in order: the hub path first, then the model, the scene analytics, then capture."""

SECTION_TABLE: dict[str, Section] = {
    "source": Section(Assembly.start_pipeline, "source", rebuilds=True),
    "sources": Section(Assembly.start_pipeline, "source", rebuilds=True),
    "inference": Section(Assembly.apply_inference, "model"),
    "runtime": Section(Assembly.apply_runtime, "model", rebuilds=True),
    "rollback": Section(Assembly.apply_updates, "model"),
    "shadow": Section(Assembly.apply_updates, "model"),
    "telemetry": Section(Assembly.apply_telemetry, "telemetry"),
    "outbox": Section(Assembly.apply_telemetry, "telemetry"),
    "local_mqtt": Section(Assembly.apply_local_mqtt, "telemetry"),
    "analytics": Section(Assembly.apply_analytics, "analytics"),
}
"""Every desired section but the deferred ones; tests keep it covering every section and naming real boot steps."""

APPLIERS: dict[str, SectionApplier] = {key: section.apply for key, section in SECTION_TABLE.items()}
"""What changes in the running module when a desired section changes."""

PIPELINE_SECTIONS = frozenset(key for key, section in SECTION_TABLE.items() if section.rebuilds)
"""Sections whose apply replaces the model or the pipeline."""


def boot_sections(step: str) -> tuple[str, ...]:
    """The sections a start-up step reads, reverted to their defaults when it fails on the saved settings."""
    return tuple(key for key, section in SECTION_TABLE.items() if section.boot == step)


def run_edge_module(config: ModuleConfig, stop: threading.Event, duration: float | None = None) -> int:
    """Entry point used by `visionedge run` when the IoT Edge environment is present."""
    log.info("visionedge %s starting under IoT Edge (module %s on %s)", __version__,
             os.environ.get("IOTEDGE_MODULEID"), os.environ.get("IOTEDGE_DEVICEID"))
    client = HubClient.from_edge_environment()
    stop_after(duration, stop)
    return EdgeModule(config, client).run(stop)
