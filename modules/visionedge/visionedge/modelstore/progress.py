"""When a download's progress is worth a 202: every PROGRESS_STEP percent, so the twin is not flooded, and every
PROGRESS_EVERY_S while it crawls, so a slow server still shows life."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

PROGRESS_STEP: Final = 10
PROGRESS_EVERY_S: Final = 10.0
"""A download that crawls (no new 10 % step) still acknowledges 202 this often."""


class ProgressPacer:
    """Paces one download's progress acknowledgements at a time (the model manager's thread)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = self._said = 0.0
        self._step: int | None = None

    def note(self, fraction: float | None, first: bool) -> str | None:
        """The text after "downloading K" when this report is worth a 202 (" 40%", " (35 s so far)"), else None;
        `first` starts a new download."""
        step = None if fraction is None else int(fraction * 100) // PROGRESS_STEP * PROGRESS_STEP
        last, self._step = (None if first else self._step), step
        now = self._clock()
        if first:
            self._started = self._said = now
        stepped = first or (step is not None and step != last)
        if not stepped and now - self._said < PROGRESS_EVERY_S:
            return None
        self._said = now
        shown = f" {step}%" if step is not None else ""
        return shown + ("" if stepped else f" ({now - self._started:.0f} s so far)")
