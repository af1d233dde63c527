"""rollbackModel calls waiting for the model manager's thread: any thread asks and waits, the worker answers them
all with one result."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RollbackRequest:
    """One rollbackModel call waiting for the worker's answer."""

    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] = field(default_factory=dict)


class RollbackDesk:
    """The waiting calls; several that arrive together share one rollback and its answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[RollbackRequest] = []

    def ask(self) -> RollbackRequest:
        """Queue a call; wait on its `done`."""
        request = RollbackRequest()
        with self._lock:
            self._waiting.append(request)
        return request

    def waiting(self) -> bool:
        """Whether a call waits for an answer."""
        with self._lock:
            return bool(self._waiting)

    def answer(self, result: dict[str, Any]) -> None:
        """Release every waiting call with the same result."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for request in waiting:
            request.result = result
            request.done.set()
