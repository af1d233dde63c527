"""Scene analytics inside the running module: one engine per source, fed once per analysed frame.

The engines keep only what tracking needs (live tracks, who is on which side, who is inside); every count they
produce leaves as an event to the listeners, and the telemetry side's SceneTotals is the one holder of the running
counts (persisted with those events, so a kill -9 loses none). What this module keeps on disk is the track ids
handed out, reserved a block at a time, so an id never names two objects across restarts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Final

from visionedge.analytics.engine import SceneEngine
from visionedge.analytics.events import SceneFrame
from visionedge.analytics.records import scene_json
from visionedge.analytics.settings import SourceAnalytics
from visionedge.durable import read_json, write_json_atomic
from visionedge.frame import Frame, Inference
from visionedge.tasks import detection_record

log = logging.getLogger(__name__)

ID_BLOCK: Final = 1000
"""Track ids are reserved on disk this many at a time (one small write per 500 to 1000 new tracks), so a restart,
even after kill -9, starts past every id already handed out."""


class SceneAnalytics:
    """Every source's engine; `observe` is the pipeline's one call per published record."""

    def __init__(self, state_dir: Path | None, into_records: bool = False) -> None:
        self.state_dir = state_dir
        """Where each source's reserved track ids are kept (`<source>.json`); None: nowhere (`analyze`)."""
        self.into_records = into_records
        """`analyze`: each record carries its frame's events and occupancy as `scene`."""
        self.engines: dict[str, SceneEngine] = {}
        self.listeners: list[Callable[[SceneFrame], None]] = []
        """Called on the publish thread with every SceneFrame (the output side subscribes here)."""
        self._lock = threading.Lock()
        self._last_ids: dict[str, list[int | None]] = {}
        self._models: dict[str, str] = {}
        self._reserved: dict[str, int] = {}
        """source -> the first track id not reserved on disk."""

    def configure(self, settings: Mapping[str, SourceAnalytics], task: str | None,
                  sources: Collection[str] | None = None) -> None:
        """Apply new settings; an engine whose settings changed restarts its tracks (its ids keep counting up).

        Refused (ValueError, nothing changed) for a classifier or for a source id that no source has."""
        if settings and task is not None and task != "detect":
            raise ValueError(f"analytics need a detector; the model in use is a {task} model (no boxes to track)")
        unknown = sorted(set(settings) - set(sources)) if sources is not None else []
        if unknown:
            raise ValueError(f"analytics for unknown source {', '.join(unknown)}; sources: {', '.join(sources or ())}")
        with self._lock:
            engines: dict[str, SceneEngine] = {}
            for source_id, one in settings.items():
                current = self.engines.get(source_id)
                if current is not None and current.settings == one:
                    engines[source_id] = current
                    continue
                next_id = current.tracker.next_id if current is not None else self._first_id(source_id)
                engines[source_id] = SceneEngine(source_id, one, next_id)
                if current is not None:
                    engines[source_id].reset("geometry changed")
                    log.info("analytics of %s changed (geometry %s): tracks restart, counts kept by name",
                             source_id, engines[source_id].geometry)
                self._reserve(source_id, next_id)
            self.engines = engines

    def observe(self, frame: Frame, inference: Inference, record: dict[str, Any], reused: bool) -> SceneFrame | None:
        """Track one published frame (a reused result adds nothing) and write each detection's `track_id`."""
        engine = self.engines.get(frame.source_id)
        if engine is None or inference.task != "detect":
            return None
        if reused:
            ids = self._last_ids.get(frame.source_id, [])
            _annotate(record, ids if len(ids) == len(inference.detections) else [])
            return None
        model = f"{inference.model_name}@{inference.model_version}"
        before = self._models.get(frame.source_id)
        with self._lock:
            if before is not None and before != model:
                engine.reset(f"model changed from {before} to {model}")
                log.info("%s: model changed to %s: every track ended", frame.source_id, model)
            self._models[frame.source_id] = model
            scene = engine.update(inference.detections, frame.timestamp, model, inference.hidden)
            if self._reserved.get(frame.source_id, 0) - engine.tracker.next_id < ID_BLOCK // 2:
                self._reserve(frame.source_id, engine.tracker.next_id)
        self._last_ids[frame.source_id] = list(scene.track_ids)
        _annotate(record, scene.track_ids)
        record.setdefault("detections", []).extend(
            detection_record(d) | {"track_id": track_id, "occluded": True} for d, track_id in scene.occluded)
        if self.into_records:
            record["scene"] = scene_json(scene)
        for listener in self.listeners:
            listener(scene)
        return scene

    def _first_id(self, source_id: str) -> int:
        """Past every id a previous run of this source may have handed out (1 when none ran)."""
        saved = read_json(self.state_dir / f"{source_id}.json") if self.state_dir is not None else None
        first = (saved or {}).get("track_ids_from", 1)
        return first if isinstance(first, int) and first >= 1 else 1

    def _reserve(self, source_id: str, next_id: int) -> None:
        """Reserve the next ID_BLOCK ids on disk before they are handed out (a failed write is logged: a restart
        may then reuse ids, nothing else is lost)."""
        self._reserved[source_id] = next_id + ID_BLOCK
        if self.state_dir is None:
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.state_dir / f"{source_id}.json", {"track_ids_from": next_id + ID_BLOCK})
        except OSError as err:
            log.warning("track ids of %s not reserved on disk: %s", source_id, err)


def _annotate(record: dict[str, Any], track_ids: tuple[int | None, ...] | list[int | None]) -> None:
    """Write each detection's track id into the record (confirmed tracks only)."""
    for detection, track_id in zip(record.get("detections", ()), track_ids, strict=False):
        if track_id is not None:
            detection["track_id"] = track_id
