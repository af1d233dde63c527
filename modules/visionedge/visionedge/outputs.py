"""Names of the module's IoT Edge outputs; routes in the deployment manifests must use only these."""

from __future__ import annotations

from typing import Final

RESULTS: Final = "results"
"""Per-event inference results (the telemetry policy decides which frames become events)."""
AGGREGATES: Final = "aggregates"
"""Per-window counts and maximum confidence per label."""
EVENTS: Final = "events"
"""State changes: source state, model swaps and rollbacks, dropped-telemetry notices."""
HEARTBEAT: Final = "heartbeat"
"""Periodic liveness with fps and outbox depth, even when nothing changes."""

ALL: Final = (RESULTS, AGGREGATES, EVENTS, HEARTBEAT)
