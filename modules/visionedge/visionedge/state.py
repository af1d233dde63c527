"""One typed snapshot of the module; status, health, heartbeat, getStatus and the metrics are pure views of it.

`read_snapshot` is the only code that reads the live objects for a view. To show a new piece of state everywhere, add
a field here, fill it in that one function, and read it in the views below that should show it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from visionedge import __version__
from visionedge.config import DesiredProperties, SourceSettings
from visionedge.gate import GateStats
from visionedge.models.choice import VariantChoice
from visionedge.modelstore.health import ModelHealth
from visionedge.result import iso_utc
from visionedge.sources import Source, SourceState
from visionedge.supervise import Part, PartState, states
from visionedge.telemetry.scene import SceneTotals
from visionedge.telemetry.sceneviews import status_block
from visionedge.telemetry.sink import TelemetryStats, heartbeat_telemetry
from visionedge.urls import redact_url

if TYPE_CHECKING:
    from visionedge.feed import Feed
    from visionedge.models.model import Model
    from visionedge.modelstore import ModelManager
    from visionedge.pipeline import Pipeline
    from visionedge.telemetry.sink import TelemetrySink


@dataclass(frozen=True, slots=True)
class Control:
    """What a snapshot shows of the control plane around the running parts: the desired settings in force and
    their version, the hub link and the control threads (a local run: its config, version 0, no hub, no threads)."""

    settings: Callable[[], DesiredProperties]
    version: Callable[[], int] = lambda: 0
    hub_connected: Callable[[], bool] = lambda: False
    parts: Callable[[], list[Part]] = list
    settings_moved_aside: Callable[[], int] = lambda: 0


class Live(Protocol):
    """The running parts a snapshot is read from (`visionedge.assembly.Assembly`)."""

    instance_id: str
    started_at: float
    last_error: str
    control: Control
    manager: ModelManager | None
    sources: dict[str, Source]
    pipeline: Pipeline | None
    telemetry: TelemetrySink | None

    @property
    def model(self) -> Model | None:
        """The model serving now (read from its one holder)."""

    def parts(self) -> list[Part]:
        """Every supervised thread."""


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    """One source as configured (uri already redacted), its state, and the pipeline's counters for it."""

    id: str
    uri: str
    state: SourceState | None
    """None while no source object exists (it could not be opened, or was never asked for)."""
    reason: str = ""
    fps: float = 0.0
    captured: int = 0
    analyzed: int = 0
    dropped: int = 0
    errors: int = 0
    frame_age_s: float = 0.0
    reopened: int = 0
    last_error: str = ""
    gate: GateStats | None = None
    """None when the scene-change gate is off for this source."""


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    """The model serving now and the execution providers in effect."""

    name: str
    version: str
    providers: tuple[str, ...]
    variant: VariantChoice | None = None
    """Which variant file runs (fp32/fp16/int8), why, and the timings it was chosen on."""


@dataclass(frozen=True, slots=True)
class ModelUpdateSnapshot:
    """Where the model manager is (idle, downloading, validating, watching, ...) and its reported details."""

    phase: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ModuleSnapshot:
    """Everything any view of the module shows, read at one moment."""

    module_version: str
    instance: str
    started_at: float
    desired_version: int
    last_error: str
    hub_connected: bool
    sources: tuple[SourceSnapshot, ...]
    model: ModelSnapshot | None
    model_update: ModelUpdateSnapshot | None
    telemetry: TelemetryStats | None
    """Outbox, link (sender), budget and local MQTT; None before telemetry started."""
    parts: tuple[PartState, ...] = ()
    """Every supervised thread (capture, inference, publish, sender, tick, control, ...): down while it crash-loops."""
    model_health: ModelHealth | None = None
    """The last model update's verdict and shadow figures (reported as `modelHealth`); None without a manager."""
    settings_moved_aside: int = 0
    """Saved settings files found unusable at start and moved aside (the module started on its defaults)."""
    scene: Mapping[str, SceneTotals] | None = None
    """Per source, the scene analytics' running counts and occupancy; None or empty without analytics."""

    @property
    def down(self) -> dict[str, str]:
        """Parts that crashed and have not run cleanly since, with the reason: what health and status name."""
        return {p.name: p.reason for p in self.parts if p.down}

    @property
    def source(self) -> SourceSnapshot:
        """The first source (the only one unless `sources` lists several)."""
        return self.sources[0]

    @property
    def fps(self) -> float:
        """Frames analysed per second over every source."""
        return sum(s.fps for s in self.sources)

    @property
    def telemetry_dropped(self) -> int:
        """Events the outbox compacted or dropped, plus those it could not store: what an operator alerts on."""
        t = self.telemetry
        return 0 if t is None else t.outbox.dropped + t.outbox.compacted + t.lost


def _model(s: ModuleSnapshot) -> dict[str, str] | None:
    return {"name": s.model.name, "version": s.model.version} if s.model else None


def _variant(s: ModuleSnapshot) -> dict[str, Any] | None:
    """Which variant file runs and why, with the on-device calibration's state (modelHealth.variant)."""
    if s.model is None or s.model.variant is None:
        return None
    calibration = s.model_health.variant.reported() if s.model_health is not None else None
    return s.model.variant.as_dict() | {"calibration": calibration}


def status_view(s: ModuleSnapshot, state: str = "running") -> dict[str, Any]:
    """The reported `status` block, also the answer to getStatus."""
    source = s.source
    return {
        "state": state,
        "module_version": s.module_version,
        "instance": s.instance,
        "started_at": iso_utc(s.started_at),
        "model": _model(s),
        "providers": list(s.model.providers) if s.model else [],
        "variant": _variant(s),
        "source": {
            "id": source.id,
            "uri": source.uri,
            "state": source.state.value if source.state else "none",
            "reason": source.reason,
            "reopened_by_watchdog": source.reopened,
        },
        "fps": round(s.fps, 2),
        "frames": sum(x.analyzed for x in s.sources),
        "skipped": sum(x.dropped for x in s.sources),
        "gate": _gate(source.gate),
        "sources": [_source_status(x) for x in s.sources],
        "last_error": next((x.last_error for x in s.sources if x.last_error), "") or s.last_error,
        "desired_version": s.desired_version,
        "saved_settings_moved_aside": s.settings_moved_aside,
        "model_update": dict(s.model_update.detail) if s.model_update else None,
        "telemetry": _telemetry_status(s.telemetry),
        "down": s.down,
        "restarts": {p.name: p.restarts for p in s.parts if p.restarts},
        **({"scene": status_block(s.scene)} if s.scene else {}),
    }


def _gate(g: GateStats | None) -> dict[str, Any]:
    if g is None:
        return {"on": False}
    return {"on": True, "frames_gated": g.gated, "frames_inferred": g.inferred, "cpu_s": round(g.cpu_s, 3)}


def _source_status(x: SourceSnapshot) -> dict[str, Any]:
    """One source's line in the status: what it is doing and what the pipeline made of it."""
    return {"id": x.id, "uri": x.uri, "state": x.state.value if x.state else "none", "reason": x.reason,
            "fps": round(x.fps, 2), "frames": x.analyzed, "skipped": x.dropped, "errors": x.errors,
            "frame_age_s": round(x.frame_age_s, 3), "reopened_by_watchdog": x.reopened, "gate": _gate(x.gate),
            "last_error": x.last_error}


def _telemetry_status(t: TelemetryStats | None) -> dict[str, Any] | None:
    if t is None:
        return None
    outbox, sender = t.outbox, t.sender
    return {
        "outbox": {"depth": outbox.depth, "oldest_age_s": round(outbox.oldest_age_s, 1),
                   "dropped": outbox.dropped, "compacted": outbox.compacted},
        "messages_sent": sender.sent_messages if sender else 0,
        "events_sent": sender.sent_events if sender else 0,
        "link": sender.link if sender else "none",
        "budget": {"limit": sender.budget.limit, "messages_today": sender.budget.messages_sent_today,
                   "units_today": sender.budget.units_used_today,
                   "remaining": sender.budget.budget_remaining} if sender else None,
        "lost": t.lost,
    }


def health_view(s: ModuleSnapshot) -> tuple[bool, dict[str, Any]]:
    """Ready when a model is loaded, every source streams (or retries as its policy allows) and no part is down."""
    states = {x.id: x.state or SourceState.FAILED for x in s.sources}
    down = s.down
    ready = s.model is not None and all(st in (SourceState.STREAMING, SourceState.RETRYING) for st in states.values())
    return ready and not down, {"model": s.model is not None, "source_state": states[s.source.id].value,
                                "sources": {i: st.value for i, st in states.items()},
                                "hub_connected": s.hub_connected, "down": down}


def heartbeat_view(s: ModuleSnapshot) -> dict[str, Any]:
    """The heartbeat's fields: rate, source state, model, and the telemetry path's outbox, link and budget."""
    fields: dict[str, Any] = {"fps": round(s.fps, 2),
                              "source_state": s.source.state.value if s.source.state else "none",
                              "model": _model(s), "gate": _gate(s.source.gate)}
    if s.telemetry is not None:
        fields.update(heartbeat_telemetry(s.telemetry))
    return fields


def source_snapshot(settings: SourceSettings, source: Source | None, feed: Feed | None) -> SourceSnapshot:
    """The configured source, its state and the pipeline's counters for it."""
    uri = redact_url(settings.uri) if "://" in settings.uri else settings.uri
    stats = feed.stats if feed is not None else None
    return SourceSnapshot(
        id=settings.id, uri=uri,
        state=source.state if source else None,
        reason=source.reason if source else "",
        fps=stats.fps if stats else 0.0,
        captured=stats.captured if stats else 0,
        analyzed=stats.inferred if stats else 0,
        dropped=feed.skipped() if feed else 0,
        errors=stats.errors if stats else 0,
        frame_age_s=stats.frame_age_s if stats else 0.0,
        reopened=feed.reopened if feed else 0,
        last_error=feed.last_error if feed else "",
        gate=feed.gate.stats() if feed is not None and feed.gate is not None else None,
    )


def read_snapshot(live: Live) -> ModuleSnapshot:
    """The one place the module's state is read from the live objects; every view is a function of what it returns."""
    model, manager, telemetry, pipeline = live.model, live.manager, live.telemetry, live.pipeline
    update = manager.status() if manager is not None else None
    return ModuleSnapshot(
        module_version=__version__,
        instance=live.instance_id,
        started_at=live.started_at,
        desired_version=live.control.version(),
        last_error=live.last_error,
        hub_connected=live.control.hub_connected(),
        sources=tuple(source_snapshot(s, live.sources.get(s.id), pipeline.feed(s.id) if pipeline else None)
                      for s in live.control.settings().source_list()),
        model=ModelSnapshot(model.name, model.version, tuple(model.providers), model.variant) if model else None,
        model_update=ModelUpdateSnapshot(str(update["state"]), update) if update is not None else None,
        telemetry=telemetry.stats() if telemetry is not None else None,
        parts=states(live.parts()),
        model_health=manager.health() if manager is not None else None,
        settings_moved_aside=live.control.settings_moved_aside(),
        scene=telemetry.scene_totals() if telemetry is not None else None,
    )
