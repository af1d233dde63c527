"""One retry schedule for everything that reconnects: cameras, the telemetry sender, the hub connection."""

from __future__ import annotations

import random

JITTER = 0.25
"""+-25 %: enough that a fleet (or a room of cameras) that failed together does not retry in step."""


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random | None = None,
                  jitter: float = JITTER) -> float:
    """Seconds before retry `attempt` (0 = the first): doubling from initial_s, jittered, never more than max_s."""
    base = min(max_s, initial_s * 2 ** min(max(attempt, 0), 30))
    return float(min(max_s, base * (rng or random).uniform(1 - jitter, 1 + jitter)))
