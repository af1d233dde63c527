"""Scene analytics inside the running module: one engine per source, fed once per analysed frame, counters on disk."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from visionedge.analytics.engine import SceneEngine
from visionedge.analytics.events import SceneFrame
from visionedge.analytics.records import scene_json
from visionedge.analytics.settings import SourceAnalytics
from visionedge.durable import read_json, write_json_atomic
from visionedge.frame import Frame, Inference

log = logging.getLogger(__name__)

SAVE_EVERY_S = 10.0
"""Counters are written at most this often while counts change (and always on close): a crash loses at most this."""


class SceneAnalytics:
    """Every source's engine; `observe` is the pipeline's one call per published record."""

    def __init__(self, state_dir: Path | None, into_records: bool = False) -> None:
        self.state_dir = state_dir
        self.into_records = into_records
        """`analyze`: each record carries its frame's events and occupancy as `scene`."""
        self.engines: dict[str, SceneEngine] = {}
        self.listeners: list[Callable[[SceneFrame], None]] = []
        """Called on the publish thread with every SceneFrame (the output side subscribes here)."""
        self._lock = threading.Lock()
        self._last_ids: dict[str, list[int | None]] = {}
        self._models: dict[str, str] = {}
        self._saved_at = 0.0
        self._dirty = False

    def configure(self, settings: Mapping[str, SourceAnalytics], task: str | None,
                  sources: Collection[str] | None = None) -> None:
        """Apply new settings; an engine whose settings changed restarts its tracks but keeps its counts by name.

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
                counters = current.counters() if current is not None else self._load(source_id)
                engines[source_id] = SceneEngine(source_id, one, counters)
                if current is not None:
                    engines[source_id].reset("geometry changed")
                    log.info("analytics of %s changed (geometry %s): tracks restart, counts kept by name",
                             source_id, engines[source_id].geometry)
            self.engines = engines
            self._dirty = True
        self.save()

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
            scene = engine.update(inference.detections, frame.timestamp, model)
            if scene.events:
                self._dirty = True
        self._last_ids[frame.source_id] = list(scene.track_ids)
        _annotate(record, scene.track_ids)
        if self.into_records:
            record["scene"] = scene_json(scene)
        for listener in self.listeners:
            listener(scene)
        if self._dirty and time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self.save()
        return scene

    def counters(self) -> dict[str, dict[str, Any]]:
        """source -> its cumulative counts and occupancy now."""
        with self._lock:
            return {source_id: engine.counters() for source_id, engine in self.engines.items()}

    def save(self) -> None:
        """Write every source's counters (atomic per file), so they survive a restart or a kill."""
        if self.state_dir is None:
            return
        self._saved_at = time.monotonic()
        self._dirty = False
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            for source_id, counters in self.counters().items():
                write_json_atomic(self.state_dir / f"{source_id}.json", counters)
        except OSError as err:
            log.warning("analytics counters not saved: %s", err)

    def _load(self, source_id: str) -> dict[str, Any] | None:
        return read_json(self.state_dir / f"{source_id}.json") if self.state_dir is not None else None


def _annotate(record: dict[str, Any], track_ids: tuple[int | None, ...] | list[int | None]) -> None:
    """Write each detection's track id into the record (confirmed tracks only)."""
    for detection, track_id in zip(record.get("detections", ()), track_ids, strict=False):
        if track_id is not None:
            detection["track_id"] = track_id
