"""Download progress acknowledgements: one per 10 % step, and a sign of life every 10 s while a download crawls."""

from __future__ import annotations

from visionedge.modelstore.progress import ProgressPacer


def test_progress_is_said_once_per_step_and_every_ten_seconds_while_it_crawls() -> None:
    """The first report always speaks; then only a new 10 % step, or 10 s without one (with the time so far)."""
    now = [100.0]
    pacer = ProgressPacer(clock=lambda: now[0])
    assert pacer.note(0.01, first=True) == " 0%"
    assert pacer.note(0.05, first=False) is None
    assert pacer.note(0.12, first=False) == " 10%"
    now[0] += 9.9
    assert pacer.note(0.13, first=False) is None
    now[0] += 0.2
    assert pacer.note(0.14, first=False) == " 10% (10 s so far)"
    assert pacer.note(0.15, first=False) is None
    assert pacer.note(None, first=False) is None
    now[0] += 10
    assert pacer.note(None, first=False) == " (20 s so far)"
    assert pacer.note(0.5, first=True) == " 50%"


def test_an_unknown_size_is_said_at_the_start_and_then_every_ten_seconds() -> None:
    """Without a Content-Length there are no steps: only the start and the time so far."""
    now = [0.0]
    pacer = ProgressPacer(clock=lambda: now[0])
    assert pacer.note(None, first=True) == ""
    now[0] += 5
    assert pacer.note(None, first=False) is None
    now[0] += 5
    assert pacer.note(None, first=False) == " (10 s so far)"
