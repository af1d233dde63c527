"""Direct methods: getStatus, captureSnapshot, rollbackModel and resetCounters; every answer is JSON with a status
code."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionedge.edge.client import HubClient, MethodCall
from visionedge.errors import VisionEdgeError
from visionedge.frame import Frame, Inference
from visionedge.modelstore import ModelManager
from visionedge.result import iso_utc
from visionedge.snapshot import save_snapshot
from visionedge.urls import redact_values

log = logging.getLogger(__name__)

Answer = tuple[int, Any]
METHOD_WAIT_S = 5.0
"""A direct method answers within this (callers often wait 30 s at most), or says its work is queued."""


class DirectMethods:
    """Answers the hub's method calls through narrow doors into the module: its status, its newest analysed frame,
    its model manager."""

    def __init__(self, client: HubClient, *, status: Callable[[], dict[str, Any]],
                 latest: Callable[[str | None], tuple[Frame, Inference] | None],
                 manager: Callable[[], ModelManager | None], snapshot_dir: Path,
                 reset_counters: Callable[[str, str], dict[str, Any] | None] | None = None) -> None:
        self.client = client
        self._status = status
        self._latest = latest
        self._manager = manager
        self.snapshot_dir = snapshot_dir
        self._reset = reset_counters
        self.handlers: dict[str, Callable[[Any], Answer]] = {
            "getStatus": self.get_status, "captureSnapshot": self.capture_snapshot,
            "rollbackModel": self.rollback_model, "resetCounters": self.reset_counters,
        }

    def handle(self, call: MethodCall) -> None:
        """Dispatch one call and answer it; unknown names get 404, a failure 500 with its one-line reason."""
        handler = self.handlers.get(call.name)
        if handler is None:
            status, payload = 404, {"error": f"unknown method {call.name!r}; available: {', '.join(self.handlers)}"}
        else:
            try:
                status, payload = handler(call.payload)
            except VisionEdgeError as err:
                status, payload = 500, {"error": str(err)}
            except Exception as err:
                log.exception("method %s failed", call.name)
                status, payload = 500, {"error": f"internal error in {call.name}: {type(err).__name__}: {err}"}
        try:
            self.client.respond(call, status, redact_values(payload))
        except VisionEdgeError as err:
            log.warning("could not answer method %s: %s", call.name, err)

    def reset_counters(self, payload: Any) -> Answer:
        """Zero one line's or zone's running totals: `{"source": id, "name": line or zone}`; the answer says what they
        were, once the reset is stored (the counts windows are not touched: they say what happened in them)."""
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str) or \
                not isinstance(payload.get("source"), str):
            return 400, {"error": 'resetCounters takes {"source": "<source id>", "name": "<line or zone>"}'}
        done = self._reset(payload["source"], payload["name"]) if self._reset is not None else None
        if done is None:
            return 404, {"error": f"source {payload['source']!r} has no line or zone {payload['name']!r}"}
        return 200, {"reset": True, **done}

    def get_status(self, _payload: Any) -> Answer:
        """200 and the status block."""
        return 200, self._status()

    def rollback_model(self, _payload: Any) -> Answer:
        """200 and the model now active, 409 when there is nothing to go back to, 202 when it is queued."""
        manager = self._manager()
        if manager is None:
            return 409, {"error": "no model manager: no model has been loaded"}
        answer = manager.rollback_now(timeout=METHOD_WAIT_S)
        if int(answer["status"]) == 504:  # queued behind a transfer being cancelled: never hold the control loop
            return 202, {"status": "accepted",
                         "detail": f"the rollback is queued (not done within {METHOD_WAIT_S:g} s); "
                         "its outcome appears in the reported 'model' property"}
        return int(answer["status"]), answer["payload"]

    def capture_snapshot(self, payload: Any) -> Answer:
        """An annotated JPEG of the newest analysed frame of {"source": id} or of any source, saved on the device;
        only its path leaves it."""
        wanted = payload.get("source") if isinstance(payload, dict) else None
        try:
            latest = self._latest(None if wanted is None else str(wanted))
        except LookupError as err:
            return 404, {"error": str(err)}
        if latest is None:
            return 409, {"error": "no analysed frame yet: the source is not streaming"}
        frame, inference = latest
        try:
            path = save_snapshot(self.snapshot_dir, frame, inference)
        except OSError as err:
            return 500, {"error": f"cannot save snapshot: {err}"}
        return 200, {"path": str(path), "frame_index": frame.index, "timestamp": iso_utc(frame.timestamp),
                     "model": {"name": inference.model_name, "version": inference.model_version},
                     "labels": inference.labels()}
