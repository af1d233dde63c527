"""The scene's running figures as the reported status shows them: small enough for the twin whatever the geometry.

Per source: each line's crossings per direction (all classes) and each zone's occupancy now (per class), entries
and exits since the last reset. The block never exceeds STATUS_MAX_BYTES of compact JSON (the twin's reported
document is limited, and the status block carries much else): past it, zone classes fold into totals, then whole
lines and zones are left out, counted in `truncated`. The full figures are in the counts events, metrics and MQTT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from visionedge.telemetry.events import dumps
from visionedge.telemetry.scene import SceneTotals

STATUS_MAX_BYTES: Final = 2048
"""At most half of IoT Hub's 4 KB per reported property value, so the scene block never crowds out the rest."""


def _full(totals: SceneTotals, per_class: bool) -> dict[str, Any]:
    """One source's block; zone occupancy per class or as one total."""
    zones = sorted({*totals.occupancy, *totals.entries, *totals.exits})
    return {
        "lines": {line: {d: sum(c.values()) for d, c in sorted(dirs.items())}
                  for line, dirs in sorted(totals.lines.items())},
        "zones": {zone: {"now": dict(sorted(totals.occupancy.get(zone, {}).items())) if per_class
                         else sum(totals.occupancy.get(zone, {}).values()),
                         "in": sum(totals.entries.get(zone, {}).values()),
                         "out": sum(totals.exits.get(zone, {}).values())} for zone in zones},
    }


def status_block(totals: Mapping[str, SceneTotals]) -> dict[str, Any]:
    """source -> {lines, zones}, within STATUS_MAX_BYTES (see the module docstring)."""
    for per_class in (True, False):
        block = {sid: _full(t, per_class) for sid, t in sorted(totals.items())}
        if len(dumps(block)) <= STATUS_MAX_BYTES:
            return block
    kept: dict[str, Any] = {}
    left_out = 0
    for sid, source in block.items():
        entry: dict[str, Any] = {"lines": {}, "zones": {}}
        kept[sid] = entry
        for part in ("lines", "zones"):
            for name, value in source[part].items():
                entry[part][name] = value
                if len(dumps({**kept, "truncated": left_out + 1})) > STATUS_MAX_BYTES:
                    del entry[part][name]
                    left_out += 1
        if not entry["lines"] and not entry["zones"] and len(dumps({**kept, "truncated": left_out})) > \
                STATUS_MAX_BYTES:
            del kept[sid]
    return {**kept, "truncated": left_out}
