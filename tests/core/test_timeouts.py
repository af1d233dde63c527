"""A call that blocks in the kernel (opening a FIFO nobody writes) is given up on time, or at once on stop."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from visionedge.timeouts import TimedOut, call_with_timeout


def test_a_blocking_open_is_abandoned_after_its_timeout(tmp_path: Path) -> None:
    """open() of a FIFO without a writer blocks forever; the caller gets TimedOut after 0.5 s and runs on."""
    fifo = tmp_path / "hung.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(TimedOut, match=r"opening hung\.fifo did not finish within 0\.5 s"):
        call_with_timeout(lambda: fifo.open("rb"), 0.5, "opening hung.fifo")
    assert time.monotonic() - started < 1.5


def test_stop_abandons_the_wait_at_once(tmp_path: Path) -> None:
    """SIGTERM (the stop event) ends the wait long before the timeout."""
    fifo = tmp_path / "hung.fifo"
    os.mkfifo(fifo)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(TimedOut, match="abandoned, the module is stopping"):
        call_with_timeout(lambda: fifo.open("rb"), 60, "opening hung.fifo", stop)
    assert time.monotonic() - started < 1.5


def test_results_and_errors_come_back_to_the_caller() -> None:
    """A call that finishes in time returns its value or raises its own exception on the caller's thread."""
    assert call_with_timeout(lambda: 42, 5, "answer") == 42
    with pytest.raises(ZeroDivisionError):
        call_with_timeout(lambda: 1 // 0, 5, "division")
