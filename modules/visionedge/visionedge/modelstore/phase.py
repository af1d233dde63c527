"""What the model manager is doing, written in one place: the state and progress status() shows and the phase that
modelHealth reports are one value, so they never disagree."""

from __future__ import annotations

import threading
from enum import Enum
from typing import Any

from visionedge.modelstore.health import HealthBook, Phase


class UpdateState(str, Enum):
    """What the manager is doing, as shown in status()."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    VALIDATING = "validating"
    INSTALLING = "installing"
    SHADOW = "shadow"
    WATCHING = "watching"
    ROLLING_BACK = "rolling back"


HEALTH_PHASE: dict[UpdateState, Phase] = {
    UpdateState.IDLE: "idle", UpdateState.DOWNLOADING: "downloading", UpdateState.VALIDATING: "validating",
    UpdateState.INSTALLING: "validating", UpdateState.SHADOW: "shadow", UpdateState.WATCHING: "probation",
    UpdateState.ROLLING_BACK: "idle",
}
"""modelHealth's coarser phases for a fleet query; a rollback in progress is already over for it."""


class PhaseBook:
    """The one phase object: enter() sets the state, the progress and (persisted, then reported) modelHealth's phase
    with any verdict fields, in that order."""

    def __init__(self, health: HealthBook) -> None:
        self._health = health
        self._lock = threading.Lock()
        self._state = UpdateState.IDLE
        self._progress: float | None = None

    def enter(self, state: UpdateState, progress: float | None = None, **verdict: Any) -> bool:
        """Move to `state`; True when it was not the state already. modelHealth is written when its phase changes
        or verdict fields (verdict, reason, active, ...) come with the move."""
        with self._lock:
            changed = state != self._state
            self._state, self._progress = state, progress
        phase = HEALTH_PHASE[state]
        if verdict or self._health.get().phase != phase:
            self._health.change(phase=phase, **verdict)
        return changed

    def now(self) -> tuple[UpdateState, float | None]:
        """(state, progress 0..1 or None)."""
        with self._lock:
            return self._state, self._progress
