"""The telemetry sink the pipeline publishes to: record -> policy -> outbox (and local MQTT) -> sender -> IoT Hub.

The scene analytics hand their SceneFrames to `scene_frame`: alarms and closed count windows go the same way
(`scene.py`), the open windows and totals are persisted in the same commit as those events (and at least every
SCENE_SAVE_S while occupancy changes), and the retained scene topics on local MQTT follow every frame.

Threads: the pipeline's publish thread calls `publish`; "telemetry-tick" calls `tick` every `tick_s` (closed
windows, heartbeats, dropped-telemetry notices); "telemetry-sender" drains the outbox; paho's "local-mqtt" thread
talks to the local broker. The control plane calls `update` (twin), `emit` (model swap, rollback, source state)
and `close` (shutdown). One lock orders policy and outbox, so seqs are stored in the order they were given.
"""

from __future__ import annotations

import copy
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from visionedge.analytics.events import SceneFrame
from visionedge.config import LocalMqttSettings, LocalSettings, ModuleConfig, OutboxSettings, TelemetrySettings
from visionedge.supervise import Part
from visionedge.telemetry.budget import (
    UNIT_BYTES,
    BudgetStats,
    DailyBudget,
    alarm_reserve,
    fold_factor,
    heartbeat_reserve,
)
from visionedge.telemetry.events import Event, Sequencer
from visionedge.telemetry.localmqtt import LocalMqttPublisher
from visionedge.telemetry.outbox import Outbox, OutboxStats
from visionedge.telemetry.policy import TelemetryPolicy
from visionedge.telemetry.scene import MAX_FOLD, SceneLayout, SceneOutput, SceneTotals
from visionedge.telemetry.scenemqtt import RetainedScene
from visionedge.telemetry.sender import Sender, SenderOptions, SenderStats, Transport

log = logging.getLogger(__name__)

LOSS_LOG_INTERVAL_S: Final = 60.0
"""While the outbox cannot store (a full disk), the loss is logged at most this often; every event is counted."""
NOTICE_INTERVAL_S: Final = 60.0
"""At most one dropped-telemetry notice per minute, however fast the outbox compacts or drops."""
SCENE_SAVE_S: Final = 1.0
"""Occupancy figures of the open count windows are persisted at least this often (counts with every change)."""


@dataclass(frozen=True)
class TelemetryStats:
    """Everything the telemetry path counts, for metrics, heartbeats and the reported twin."""

    outbox: OutboxStats
    sender: SenderStats | None
    local_connected: bool | None
    local_published: int
    local_dropped: int
    lost: int
    """Events that could not be stored (disk full, I/O error): the only loss the counters in the outbox miss."""
    budget: BudgetStats


class TelemetrySink:
    """Implements the pipeline's Sink protocol; construct, `start`, feed records, `close`."""

    name = "telemetry"

    def __init__(
        self,
        settings: TelemetrySettings,
        outbox_settings: OutboxSettings,
        *,
        data_dir: Path,
        source_id: str,
        transport: Transport | None = None,
        local: LocalMqttPublisher | None = None,
        heartbeat_fields: Callable[[], Mapping[str, Any]] | None = None,
        heartbeat: Callable[[], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
        steady: Callable[[], float] = time.monotonic,
        tick_s: float = 1.0,
        sender_options: SenderOptions | None = None,
        billing_unit_bytes: int = UNIT_BYTES,
        local_client_id: str | None = None,
    ) -> None:
        """`heartbeat_fields` adds fields to the sink's own; `heartbeat` gives them all (the module's snapshot view,
        which carries the telemetry path's fields read once with everything else)."""
        self.clock = clock
        self.steady = steady
        self.local_client_id = local_client_id
        self.tick_s = tick_s
        self.local = local
        self._user_fields = heartbeat_fields
        self._heartbeat = heartbeat
        self._lock = threading.RLock()
        """Orders policy, scene and outbox; reentrant because the heartbeat's fields (asked for inside `tick`) read
        the module's snapshot, which reads `scene_totals`."""
        self._stop = threading.Event()
        self._tick_thread: threading.Thread | None = None
        self.tick_part = Part("telemetry-tick")
        self._closed = False
        self._lost = 0
        self._lost_logged = -math.inf
        """When a storage failure was last logged: a full disk fails every frame, the log says so once a minute."""
        self._failing = False
        self._final: TelemetryStats | None = None
        self.outbox = Outbox(data_dir, outbox_settings, compact_window_s=settings.aggregate_window_s, clock=clock,
                             steady=steady)
        self.policy = TelemetryPolicy(settings, source_id=source_id,
                                      sequencer=Sequencer(self.outbox.epoch, self.outbox.last_seqs()),
                                      heartbeat_fields=self._heartbeat_fields, clock=clock, steady=steady)
        self.budget = DailyBudget(settings.daily_message_budget, self.outbox,
                                  reserve=heartbeat_reserve(settings.daily_message_budget, settings.heartbeat_s),
                                  unit_bytes=billing_unit_bytes, clock=clock)
        self.scene = SceneOutput(settings.aggregate_window_s, sequencer=self.policy.sequencer, clock=clock,
                                 steady=steady)
        self.scene.restore(self.outbox.meta_like("scene."))
        self._scene_saved = -math.inf
        self._scene_dirty = False
        self.retained = RetainedScene(local_client_id or "visionedge")
        self.sender = None if transport is None else Sender(
            self.outbox, transport, self.budget, live_first=settings.live_first, batch=settings.batch,
            options=sender_options)
        start = self.outbox.stats()
        self._noticed = (start.dropped, start.compacted)
        self._last_notice = -math.inf

    @classmethod
    def from_config(cls, config: ModuleConfig, transport: Transport | None, *,
                    heartbeat: Callable[[], Mapping[str, Any]] | None = None,
                    client_id: str | None = None) -> TelemetrySink:
        """The module's wiring: outbox under data_dir, the configured source id, local MQTT when enabled."""
        desired = config.desired
        return cls(desired.telemetry, desired.outbox, data_dir=config.local.data_dir,
                   source_id=desired.source_list()[0].id,
                   transport=transport, local=local_publisher(desired.local_mqtt, config.local, client_id),
                   heartbeat=heartbeat, local_client_id=client_id,
                   billing_unit_bytes=int(desired.telemetry.billing_unit_kb * 1024))

    def start(self) -> None:
        """Start local MQTT, the sender and the tick thread."""
        if self.local is not None:
            self.local.start()
        if self.sender is not None:
            self.sender.start()
        if self._tick_thread is None:
            self._tick_thread = self.tick_part.thread(self._tick_loop, self._stop)
            self._tick_thread.start()

    def publish(self, record: dict[str, Any]) -> None:
        """Called by the pipeline for every record; costs one fsync when the policy lets an event through."""
        with self._lock:
            if not self._closed:
                self._store(self.policy.offer(record))

    def scene_frame(self, frame: SceneFrame) -> None:
        """Called by the scene analytics for every analysed frame: alarms at once, closed count windows, retained
        local MQTT state; the open window is persisted with every count (kill -9 loses none)."""
        with self._lock:
            if self._closed:
                return
            events = self.scene.offer(frame)
            self._scene_dirty = True
            if self.sender is not None and any(e.kind == "alarm" for e in events):
                self.sender.urgent()  # before storing: the sender wakes on the store
            if events or frame.events or self.steady() - self._scene_saved >= SCENE_SAVE_S:
                self._store(events, self._scene_state())
            self.retained.publish(self.local, self.scene)

    def set_layouts(self, layouts: Sequence[SceneLayout]) -> None:
        """The scene geometry now (at start and after every accepted analytics change): names, directions and
        classes for the retained topics and discovery, the alarm reserve of the budget, per-source windows."""
        with self._lock:
            self.scene.set_layouts(layouts)
            self.budget.alarms = alarm_reserve(self.budget.limit) if any(x.alarms for x in layouts) else 0
            self.retained.configured = True
            self.retained.publish(self.local, self.scene, rediscover=True)

    def reset_counters(self, source_id: str, name: str) -> dict[str, Any] | None:
        """Zero a line's or zone's running totals (not the count windows, which say what happened in them); the
        reset is persisted and announced on the events output; None when the source has no such line or zone."""
        with self._lock:
            if self._closed:
                return None
            before = self.scene.reset(source_id, name)
            if before is None:
                return None
            fields = {"source": source_id, "name": name, **before}
            self._store([self.policy.event("counters-reset", fields, source_id=source_id)], self._scene_state())
            self.retained.publish(self.local, self.scene)
            return fields

    def scene_totals(self) -> dict[str, SceneTotals]:
        """A copy of the running figures per source (status, metrics)."""
        with self._lock:
            return copy.deepcopy(self.scene.totals())

    def parts(self) -> list[Part]:
        """The supervised threads: tick, and the sender when there is a hub transport."""
        return [self.tick_part] + ([self.sender.part] if self.sender is not None else [])

    def tick(self, now: float | None = None) -> None:
        """Closed windows, a due heartbeat and, when the outbox lost events, a notice on the events output; an
        explicit `now` (tests) stands for both wall and steady time."""
        with self._lock:
            if self._closed:
                return
            events = self.policy.tick(now)
            notice = self._drop_notice(now)
            scene = self.scene.tick(now)
            if self.budget.limit:
                self.scene.fold = fold_factor(self.budget.stats(), self.budget.seconds_to_reset(), MAX_FOLD)
            meta = self._scene_state() if scene or self._scene_dirty else None
            self._store(events + scene + ([notice] if notice is not None else []), meta)

    def emit(self, name: str, fields: Mapping[str, Any]) -> None:
        """A state-change event (model swapped or rolled back, source lost) on the events output."""
        with self._lock:
            if not self._closed:
                self._store([self.policy.event(name, fields)])

    def update(self, settings: TelemetrySettings | None = None, outbox_settings: OutboxSettings | None = None) -> None:
        """Apply twin changes: policy, budget and sender at once; open windows close early if the window changed."""
        with self._lock:
            if settings is not None:
                events = self.policy.update(settings)
                if settings.aggregate_window_s != self.scene.window_s:
                    events += self.scene.flush()
                    self.scene.window_s = settings.aggregate_window_s
                self._store(events, self._scene_state())
                limit = settings.daily_message_budget
                alarms = any(x.alarms for x in self.scene.layouts.values())
                self.budget.update(limit, heartbeat_reserve(limit, settings.heartbeat_s),
                                   alarm_reserve(limit) if alarms else 0)
                if self.sender is not None:
                    self.sender.update(live_first=settings.live_first, batch=settings.batch)
            if settings is not None or outbox_settings is not None:
                self.outbox.update(outbox_settings or self.outbox.settings,
                                   compact_window_s=self.policy.settings.aggregate_window_s)

    def link_up(self) -> None:
        """The hub link is back: the sender retries at once instead of finishing its backoff."""
        if self.sender is not None:
            self.sender.link_up()

    def replace_local(self, settings: LocalMqttSettings, local: LocalSettings) -> None:
        """Apply a twin change of local_mqtt: reconnect with the new settings (or stop) unless nothing changed.

        The old client says "offline" and disconnects before the new one (same client id) connects, so the
        broker never takes a session over and the retained status ends as the new client's "online".
        """
        current = self.local
        if current is not None and settings.enabled and current.settings == settings and \
                current.uses(local.local_mqtt_username, local.local_mqtt_password):
            return
        if current is None and not settings.enabled:
            return
        new = local_publisher(settings, local, self.local_client_id)
        with self._lock:
            if self._closed:
                return
            current, self.local = self.local, new
        if current is not None:
            current.close()
        if new is not None:
            new.start()
            with self._lock:
                self.retained.publish(self.local, self.scene, rediscover=True)

    def stats(self) -> TelemetryStats:
        """A snapshot of every counter (after close, the last one taken)."""
        if self._final is not None:
            return self._final
        local = self.local
        return TelemetryStats(
            outbox=self.outbox.stats(),
            sender=None if self.sender is None else self.sender.stats(),
            local_connected=None if local is None else local.connected,
            local_published=0 if local is None else local.published,
            local_dropped=0 if local is None else local.dropped,
            lost=self._lost,
            budget=self.budget.stats(),
        )

    def close(self, drain_s: float = 1.0) -> None:
        """Emit the open windows' aggregates, give the sender up to `drain_s` to empty the outbox, stop everything."""
        with self._lock:
            if self._closed:
                return
            self._store(self.policy.flush() + self.scene.flush(), self._scene_state())
            self._closed = True
        self._stop.set()
        if self._tick_thread is not None:
            self._tick_thread.join(2 * self.tick_s)
        if self.sender is not None:
            deadline = time.monotonic() + drain_s
            while self.sender.alive and self.outbox.stats().depth and time.monotonic() < deadline:
                time.sleep(0.05)
            self.sender.stop()
        if self.local is not None:
            self.local.close()
        self._final = self.stats()
        self.outbox.close()

    def _tick_loop(self) -> None:
        """The "telemetry-tick" thread: one tick per tick_s until close."""
        while not self._stop.wait(self.tick_s):
            self.tick()

    def _scene_state(self) -> dict[str, str]:
        """The scene output's state to persist with the events being stored (marks it saved)."""
        self._scene_saved, self._scene_dirty = self.steady(), False
        return self.scene.state()

    def _store(self, events: Sequence[Event], meta: Mapping[str, str] | None = None) -> None:
        """Outbox first (durable, with `meta` in the same commit), then local MQTT; a storage failure is logged and
        counted, never raised."""
        if not events and not meta:
            return
        try:
            self.outbox.put(events, meta)
        except sqlite3.Error as err:
            self._lost += len(events)
            now = self.steady()
            if not self._failing or now - self._lost_logged >= LOSS_LOG_INTERVAL_S:
                log.error("telemetry: could not store %d event(s) in the outbox: %s (%d lost so far)", len(events),
                          err, self._lost)
                self._lost_logged = now
            self._failing = True
        else:
            if self._failing:
                log.warning("telemetry: the outbox stores events again (%d lost so far)", self._lost)
            self._failing = False
        if self.local is not None:
            for event in events:
                self.local.publish(event)

    def _drop_notice(self, now: float | None) -> Event | None:
        """An "telemetry-dropped" event when the outbox dropped or compacted since the last notice."""
        steady = self.steady() if now is None else now
        if steady - self._last_notice < NOTICE_INTERVAL_S:
            return None
        stats = self.outbox.stats()
        dropped, compacted = stats.dropped - self._noticed[0], stats.compacted - self._noticed[1]
        if not dropped and not compacted:
            return None
        self._noticed, self._last_notice = (stats.dropped, stats.compacted), steady
        return self.policy.event("telemetry-dropped", {
            "dropped": dropped, "compacted": compacted, "dropped_total": stats.dropped,
            "compacted_total": stats.compacted, "outbox_depth": stats.depth}, now)

    def _heartbeat_fields(self) -> dict[str, Any]:
        """The caller's whole heartbeat when given; else the telemetry path's own fields, then the caller's extra."""
        if self._heartbeat is not None:
            return dict(self._heartbeat())
        fields = heartbeat_telemetry(self.stats())
        if self._user_fields is not None:
            fields.update(self._user_fields())
        return fields


def heartbeat_telemetry(stats: TelemetryStats) -> dict[str, Any]:
    """Outbox depth and losses, link, budget and local MQTT, as every heartbeat carries them."""
    outbox = stats.outbox
    fields: dict[str, Any] = {
        "outbox": {"depth": outbox.depth, "oldest_age_s": round(outbox.oldest_age_s, 1), "bytes": outbox.bytes,
                   "dropped": outbox.dropped, "compacted": outbox.compacted},
        "link": "none" if stats.sender is None else stats.sender.link,
        "budget": {k: v for k, v in asdict(stats.budget).items() if k != "day"},
    }
    if stats.local_connected is not None:
        fields["local_mqtt"] = "online" if stats.local_connected else "offline"
    return fields


def local_publisher(settings: LocalMqttSettings, local: LocalSettings,
                    client_id: str | None = None) -> LocalMqttPublisher | None:
    """The local MQTT publisher when enabled, with credentials and CA from the device-local settings."""
    if not settings.enabled:
        return None
    ca = str(local.local_mqtt_ca) if local.local_mqtt_ca is not None else None
    return LocalMqttPublisher(settings, username=local.local_mqtt_username, password=local.local_mqtt_password,
                              client_id=client_id, ca_certs=ca)
