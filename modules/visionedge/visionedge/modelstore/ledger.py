"""What the twin delivered and what became of it, so a re-sent desired document is a no-op, also after a restart."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeGuard

log = logging.getLogger(__name__)

REMEMBERED = 16
"""Refused blocks remembered (newest first out last); older refusals are simply tried again."""

Delivery = tuple[int, str]
"""(desired $version, canonical text of the block)."""


class DeliveryLedger:
    """The newest delivery, the last one handled (persisted), and terminal refusals (this process only).

    Refusals are not persisted: after a restart local settings (allowed hosts, limits, accelerators) may have
    changed, so they are tried again. Safe to call from any thread.
    """

    def __init__(self, read: Callable[[], dict[str, Any]], write: Callable[[dict[str, Any]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._refused: dict[str, tuple[int, str]] = {}
        data = read()
        handled, latest = data.get("handled"), data.get("latest")
        self.handled: Delivery | None = (int(handled[0]), str(handled[1])) if _is_delivery(handled) else None
        self.latest: Delivery | None = (int(latest[0]), str(latest[1])) if _is_delivery(latest) else None

    def delivered(self, version: int, text: str) -> bool:
        """Note the newest delivery; True unless this exact delivery was already handled."""
        with self._lock:
            self.latest = (version, text)
            return self.handled != (version, text)

    def refusal(self, text: str) -> tuple[int, str] | None:
        """(code, reason) when this block ended in a terminal refusal earlier in this process."""
        with self._lock:
            return self._refused.get(text)

    def refuse(self, text: str, code: int, reason: str) -> None:
        """Remember a terminal outcome that later deliveries of the same block repeat instead of retrying."""
        with self._lock:
            self._refused.pop(text, None)
            self._refused[text] = (code, reason)
            while len(self._refused) > REMEMBERED:
                self._refused.pop(next(iter(self._refused)))

    def handle(self, delivery: Delivery | None) -> None:
        """Mark a delivery handled and persist it; a failure to write only costs a repeated no-op update later."""
        with self._lock:
            if delivery is not None:
                self.handled = delivery
            data = {"handled": list(self.handled) if self.handled else None,
                    "latest": list(self.latest) if self.latest else None}
        try:
            self._write(data)
        except OSError as err:
            log.warning("cannot persist the model update memory: %s", err)


def _is_delivery(value: object) -> TypeGuard[list[Any]]:
    """[desired version, block text] as stored in updates.json."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
