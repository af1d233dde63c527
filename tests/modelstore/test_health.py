"""modelHealth, the reported property the fleet gates on: bounded size, finite numbers, restored after a restart."""

from __future__ import annotations

import json
import math

from visionedge.modelstore.health import ModelHealth

TWIN_PROPERTY_LIMIT = 4096
"""IoT Hub's limit for one reported property value, in bytes."""


def test_the_largest_model_health_stays_well_under_the_twin_property_limit() -> None:
    """Longest names, versions and rollout id the config accepts, a reason of 400 non-ASCII characters (clipped),
    and the widest numbers: still under half of the 4 KB a reported property may hold."""
    longest = ("n" * 128, "v" * 64)
    health = ModelHealth(longest, longest, "r" * 128, "probation", "rolledBack", 10**9, 0.123456789, 12.3456789,
                         "\u00e9" * 400, 2**31)
    size = len(json.dumps({"modelHealth": health.reported()}).encode("utf-8"))
    assert size < TWIN_PROPERTY_LIMIT / 2


def test_non_finite_figures_are_reported_as_null() -> None:
    """JSON has no NaN or infinity; the twin would refuse the whole patch."""
    health = ModelHealth(("a", "1"), agreement=math.nan, latency_ratio=math.inf)
    reported = health.reported()
    assert (reported["agreement"], reported["latencyRatio"]) == (None, None)
    json.dumps(reported, allow_nan=False)


def test_a_saved_verdict_is_restored_about_the_model_active_now() -> None:
    """After a restart the last verdict stays visible; garbage in the saved file gives the empty value."""
    saved = ModelHealth(("a", "1"), ("b", "2"), "wave-1", "idle", "rejected", 40, 0.5, 1.1, "shadow: agreement 0.50")
    restored = ModelHealth.restored(saved.reported(), ("a", "1"))
    assert restored == saved
    probation = ModelHealth(("a", "1"), ("b", "2"), None, "probation", "pending")
    assert ModelHealth.restored(probation.reported(), ("a", "1")).phase == "idle"
    assert ModelHealth.restored({"active": 7, "frames": "x"}, ("a", "1")) == ModelHealth(("a", "1"))
