"""modelHealth, the reported property the fleet gates on: bounded size, finite numbers, restored after a restart."""

from __future__ import annotations

import json
import math

from visionedge.modelstore.health import ModelHealth, VariantHealth

TWIN_PROPERTY_LIMIT = 4096
"""IoT Hub's limit for one reported property value, in bytes."""


def test_the_largest_model_health_stays_well_under_the_twin_property_limit() -> None:
    """Longest names, versions and rollout id the config accepts, reasons of 400 non-ASCII characters (clipped),
    the calibrated variant's block and the widest numbers: still under three quarters of the 4 KB a reported
    property may hold (each reason is 6 bytes a character in JSON here; real reasons are ASCII)."""
    longest = ("n" * 128, "v" * 64)
    variant = VariantHealth("refused", 10**9, 0.123456789, 12.3456789, 12345.6789, "\u00e9" * 400)
    health = ModelHealth(longest, longest, "r" * 128, "probation", "rolledBack", 10**9, 0.123456789, 12.3456789,
                         "\u00e9" * 400, 2**31, variant)
    size = len(json.dumps({"modelHealth": health.reported()}).encode("utf-8"))
    assert size < TWIN_PROPERTY_LIMIT * 3 / 4


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


def test_the_calibrated_variant_verdict_is_restored_and_garbage_is_off() -> None:
    """modelHealth.variant survives a restart as it was reported; an unknown state reads as off."""
    saved = ModelHealth(("a", "1"), variant=VariantHealth("int8", 150, 0.97, 0.74, 28.5, "shadow: agreement 0.97"))
    assert ModelHealth.restored(saved.reported(), ("a", "1")) == saved
    assert VariantHealth.restored({"state": "switched", "frames": 3}) == VariantHealth()
