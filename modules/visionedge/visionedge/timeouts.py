"""Calls that may block (opening a FIFO or a hung mount, loading a model) run off the caller's thread with a limit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from visionedge.errors import VisionEdgeError

T = TypeVar("T")
POLL_S = 0.1


class TimedOut(VisionEdgeError):
    """The call did not finish in time; it is abandoned (its daemon thread may finish or block on, unseen)."""


def call_with_timeout(fn: Callable[[], T], timeout_s: float, what: str,
                      stop: threading.Event | None = None) -> T:
    """fn() on a daemon thread; its result or exception, or TimedOut after timeout_s (or as soon as stop is set)."""
    outcome: list[tuple[bool, object]] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread as is
            outcome.append((False, err))
        finally:
            done.set()

    threading.Thread(target=run, name=f"timed: {what}"[:60], daemon=True).start()
    waited = 0.0
    while not done.wait(POLL_S):
        waited += POLL_S
        if stop is not None and stop.is_set():
            raise TimedOut(f"{what}: abandoned, the module is stopping")
        if waited >= timeout_s:
            raise TimedOut(f"{what} did not finish within {timeout_s:g} s")
    ok, value = outcome[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]
