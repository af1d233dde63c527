"""What the twin delivered and what became of it, so a re-sent desired document is a no-op, also after a restart; and
the acknowledgements that say so, reported in order with the outcome remembered."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeGuard

from visionedge.acks import ack

log = logging.getLogger(__name__)

REMEMBERED = 16
"""Refused blocks remembered (newest first out last); older refusals are simply tried again."""

Delivery = tuple[int, str]
"""(desired $version, canonical text of the block)."""
Ack = dict[str, Any]
ReportFn = Callable[[Ack], None]


class Delivered(Protocol):
    """A delivery being applied; `av` follows re-deliveries of the same block (read when the answer goes out)."""

    av: int
    text: str


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
        served = data.get("served")
        self.served = served if isinstance(served, bool) else self.handled is not None
        """A desired block has made its model serve on this device (false: first boot, the built-in default runs,
        which nobody asked for); a memory from before this flag counts as served."""

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

    def handle(self, delivery: Delivery | None, served: bool = False) -> None:
        """Mark a delivery handled (served: its model serves now) and persist it; a failure to write only costs a
        repeated no-op update later."""
        with self._lock:
            if delivery is not None:
                self.handled = delivery
            self.served = self.served or served
            data = {"handled": list(self.handled) if self.handled else None,
                    "latest": list(self.latest) if self.latest else None, "served": self.served}
        try:
            self._write(data)
        except OSError as err:
            log.warning("cannot persist the model update memory: %s", err)


class Acknowledger:
    """Reports model acknowledgements ({value, ac, av, ad}) and records terminal outcomes in the ledger, so a
    re-delivery of the same block repeats its answer; keeps the last acknowledgement and error for status."""

    def __init__(self, ledger: DeliveryLedger, report: ReportFn, last_error: str = "") -> None:
        self.ledger = ledger
        self._report = report
        self._lock = threading.Lock()
        self.last_error = last_error
        self._last: Ack | None = None

    def last(self) -> Ack | None:
        """A copy of the last acknowledgement reported, for status."""
        with self._lock:
            return dict(self._last) if self._last else None

    def emit(self, av: int, code: int, text: str, value: dict[str, Any]) -> None:
        """Report one acknowledgement (from one thread only, so they arrive in order)."""
        reported = ack(value, code, av, text)
        with self._lock:
            self._last = reported
        try:
            self._report(dict(reported))
        except Exception:  # reporting is best effort; the next acknowledgement or status refresh repeats it
            log.warning("reporting the model acknowledgement failed", exc_info=True)

    def finish(self, job: Delivered, code: int, text: str, value: dict[str, Any]) -> None:
        """Terminal acknowledgement: remembered (and persisted) so a re-delivery of this version is a no-op."""
        if code >= 400:
            self.last_error = text
        self.ledger.handle((job.av, job.text), served=code == 200)
        self.emit(job.av, code, text, value)

    def refuse(self, job: Delivered, code: int, text: str, value: dict[str, Any]) -> None:
        """Terminal outcome that later deliveries of the same block repeat instead of retrying (this process)."""
        self.ledger.refuse(job.text, code, text)
        self.finish(job, code, text, value)

    def overrule(self, text: str, job: Delivered | None, value: dict[str, Any]) -> None:
        """An operator's rollback sticks: the desired block it undid (the job's, and the newest delivered) is answered
        200 with `text` and not re-applied until the block changes."""
        log.warning("%s", text)
        latest = self.ledger.latest
        for undone in {t for t in (job.text if job else None, latest[1] if latest else None) if t is not None}:
            self.ledger.refuse(undone, 200, text)
        self.ledger.handle(latest)
        av = latest[0] if latest is not None else job.av if job is not None else None
        if av is not None:
            self.emit(av, 200, text, value)


def _is_delivery(value: object) -> TypeGuard[list[Any]]:
    """[desired version, block text] as stored in updates.json."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
