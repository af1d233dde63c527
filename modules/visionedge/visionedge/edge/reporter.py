"""Reported-property patches, coalesced and retried on our own thread so twin acks survive a dead link."""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any

from visionedge.edge.client import HubClient
from visionedge.errors import VisionEdgeError
from visionedge.supervise import Part
from visionedge.urls import redact_values

log = logging.getLogger(__name__)


class Reporter:
    """Merges every patch into one pending document and sends it whenever the hub is reachable."""

    def __init__(self, client: HubClient, retry_s: float = 2.0) -> None:
        self.client = client
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.part = Part("twin-reporter")
        self._thread = self.part.thread(self._run, self._stop)
        self.sent = 0

    def start(self) -> None:
        """Begin sending."""
        self._thread.start()

    def report(self, patch: dict[str, Any]) -> None:
        """Queue a patch (credentials in any URL redacted); a later value for a top-level key replaces the earlier."""
        if not patch:
            return
        with self._lock:
            self._pending.update(redact_values(patch))
        self._wake.set()

    def stop(self, flush_timeout: float = 2.0) -> None:
        """Try one last send of what is pending, then stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=flush_timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.retry_s)
            self._wake.clear()
            with self._lock:
                pending = copy.deepcopy(self._pending)
            if pending and self.client.connected.is_set():
                try:
                    self.client.patch_reported(pending)
                    self.sent += 1
                    with self._lock:
                        for key, value in pending.items():
                            if self._pending.get(key) == value:
                                del self._pending[key]
                except VisionEdgeError as err:
                    log.warning("reported properties not sent yet: %s", err)
            if self._stop.is_set():
                return
