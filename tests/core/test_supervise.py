"""Supervised parts: a thread that raises is logged once, restarted with backoff, and shown down while it crashes."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from visionedge.sources import SourceState
from visionedge.state import ModuleSnapshot, SourceSnapshot, health_view, status_view
from visionedge.supervise import Part, PartState


def test_a_crashing_thread_is_restarted_and_its_reason_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Two crashes with the same reason: two restarts, one log line, and the part ends when its target returns."""
    calls: list[float] = []
    part = Part("publish", initial_s=0.05, max_s=0.1, stable_s=0.3)

    def target() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise OSError(28, "No space left on device")

    with caplog.at_level(logging.ERROR):
        thread = part.thread(target, threading.Event())
        thread.start()
        thread.join(5)
    assert not thread.is_alive()
    assert len(calls) == 3
    assert part.restarts == 2
    assert calls[1] - calls[0] >= 0.04  # 0.05 s +-20 % before the first restart
    assert calls[2] - calls[1] >= 0.08  # doubled (capped at 0.1 s) before the second
    errors = [r.getMessage() for r in caplog.records if r.name == "visionedge.supervise"]
    assert len(errors) == 1
    assert errors[0].startswith("publish stopped unexpectedly: OSError: [Errno 28] No space left on device; "
                                "restarting in ")


def test_a_part_is_down_until_it_has_run_cleanly_for_a_while() -> None:
    """Down right after a crash, up again once it has run stable_s since."""
    part = Part("telemetry-sender", initial_s=0.05, max_s=0.05, stable_s=0.2)
    delay = part.crashed(RuntimeError("database or disk is full"), ran_s=0.0)
    assert part.state() == PartState("telemetry-sender", True, "RuntimeError: database or disk is full", 0)
    time.sleep(delay + 0.25)
    assert part.state().down is False


def test_stop_during_the_backoff_ends_the_part_without_a_restart() -> None:
    """A stop requested while a part waits to restart is honoured at once."""
    stop = threading.Event()
    part = Part("capture", initial_s=30.0, max_s=30.0)
    thread = part.thread(lambda: (_ for _ in ()).throw(ValueError("bad frame")), stop)
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    stop.set()
    thread.join(5)
    assert time.monotonic() - started < 1.0
    assert part.restarts == 0


def test_health_is_503_and_status_names_the_part_while_it_is_down() -> None:
    """A down part makes /healthz not ready and appears, with its reason, in the status block."""
    snapshot = ModuleSnapshot(
        module_version="0", instance="i", started_at=0.0, desired_version=1, last_error="", hub_connected=True,
        sources=(SourceSnapshot(id="cam", uri="sample", state=SourceState.STREAMING),), model=None,
        model_update=None, telemetry=None,
        parts=(PartState("telemetry-sender", True, "OperationalError: database or disk is full", 3),
               PartState("capture", False, "", 1)))
    ready, detail = health_view(snapshot)
    assert ready is False
    assert detail["down"] == {"telemetry-sender": "OperationalError: database or disk is full"}
    status = status_view(snapshot)
    assert status["down"] == {"telemetry-sender": "OperationalError: database or disk is full"}
    assert status["restarts"] == {"telemetry-sender": 3, "capture": 1}
