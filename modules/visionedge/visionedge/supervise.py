"""Supervised parts: a long-lived thread that raises is logged once, restarted with backoff, and shown as down."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from visionedge.errors import one_line
from visionedge.retry import backoff_delay

log = logging.getLogger(__name__)

RESTART_JITTER = 0.2
"""+-20 %: the threads of one process need less spread than a fleet reconnecting together."""


@dataclass(frozen=True, slots=True)
class PartState:
    """What status and health show of one part: down while it crashes, why, and how often it was restarted."""

    name: str
    down: bool
    reason: str
    restarts: int


class Part:
    """One long-lived piece (capture, inference, publish, sender, tick, control) that must never die silently.

    A crash is logged once per distinct reason; the part is restarted after a doubling, jittered delay, and counts
    as down until it has run `stable_s` without crashing, so a crash loop keeps /healthz at 503.
    """

    def __init__(self, name: str, *, initial_s: float = 1.0, max_s: float = 30.0, stable_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.initial_s = initial_s
        self.max_s = max_s
        self.stable_s = stable_s
        self.clock = clock
        self.restarts = 0
        self.reason = ""
        self._attempt = 0
        self._down_until = 0.0
        self._logged: set[str] = set()

    def thread(self, target: Callable[[], None], stop: threading.Event, *, thread_name: str | None = None
               ) -> threading.Thread:
        """A daemon thread that runs `target` under supervision (not started)."""
        return threading.Thread(target=self.run, args=(target, stop), name=thread_name or self.name, daemon=True)

    def run(self, target: Callable[[], None], stop: threading.Event) -> None:
        """Call target until it returns; after an unexpected exception wait, then call it again, unless stop is set."""
        while True:
            started = self.clock()
            try:
                target()
                return
            except Exception as err:  # noqa: BLE001 - a supervised part must survive any bug; the reason is shown
                delay = self.crashed(err, self.clock() - started)
            if stop.wait(delay):
                return
            self.restarts += 1

    def crashed(self, err: BaseException, ran_s: float) -> float:
        """Record a crash (logged once per reason) and return how long to wait before restarting."""
        if ran_s >= self.stable_s:
            self._attempt = 0
        self._attempt += 1
        delay = backoff_delay(self._attempt - 1, self.initial_s, self.max_s, jitter=RESTART_JITTER)
        self.reason = one_line(f"{type(err).__name__}: {err}")
        self._down_until = self.clock() + delay + self.stable_s
        if self.reason not in self._logged:
            self._logged.add(self.reason)
            log.error("%s stopped unexpectedly: %s; restarting in %.1f s (repeats of this reason are not logged)",
                      self.name, self.reason, delay, exc_info=err)
        return delay

    def state(self) -> PartState:
        """Down from a crash until it has run stable_s again."""
        return PartState(self.name, self.clock() < self._down_until, self.reason, self.restarts)


def states(parts: Iterable[Part]) -> tuple[PartState, ...]:
    """The states of several parts, for a snapshot."""
    return tuple(p.state() for p in parts)
