"""The scene analytics' part of a result record, read tolerantly: a missing or odd part is left out, never fatal.

What is read (all optional; `analyze --analytics` writes it, the module's JSONL sink too):
- `detections[].track_id` (int) with `box` [x1, y1, x2, y2] in 0..1: the track's anchor (bottom centre) for trails;
- `analytics.crossings[]`: {line, direction, label, track_id};
- `analytics.occupancy`: {zone: {class: n}} for this frame;
- `analytics.zone_events[]`: {zone, kind (enter/exit/dwell/forbidden), label, track_id, dwell_s};
- `analytics.geometry`: {lines: [{name, points: [[x, y], [x, y]], directions: [a, b]}],
  zones: [{name, polygon: [[x, y], ...]}]} in normalized coordinates, to draw (the newest one seen wins).
A record's analytics part is refused whole (and counted) only when it is not an object or is absurdly large.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

MAX_ENTRIES: Final = 1000
"""More crossings, zone events, zones or points than any frame has: such a part is not trusted."""

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Shape:
    """A line (two points, with its direction names) or a zone (a polygon), in 0..1 coordinates."""

    name: str
    points: tuple[Point, ...]
    directions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SceneRow:
    """What the report draws from one record's scene part."""

    anchors: tuple[Point, ...] = ()
    crossings: tuple[tuple[str, str], ...] = ()
    """(line, direction) of each crossing in the frame."""
    occupancy: tuple[tuple[str, int], ...] = ()
    """(zone, tracks inside, all classes)."""
    dwells: tuple[tuple[str, float], ...] = ()
    """(zone, seconds) of each track that left a zone in the frame."""
    lines: tuple[Shape, ...] | None = None
    zones: tuple[Shape, ...] | None = None


def _list(value: Any) -> list[Any]:
    """A list of at most MAX_ENTRIES, else empty."""
    return value if isinstance(value, list) and len(value) <= MAX_ENTRIES else []


def _point(value: Any) -> Point | None:
    """[x, y] with finite numbers in 0..1, else None."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) and 0 <= x <= 1 and 0 <= y <= 1 else None


def _shapes(value: Any, key: str) -> tuple[Shape, ...] | None:
    """The named shapes of a geometry list, dropping any that are malformed; None when there is no list."""
    if not isinstance(value, list):
        return None
    shapes = []
    for entry in _list(value):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        points = tuple(p for p in (_point(v) for v in _list(entry.get(key))) if p is not None)
        directions = tuple(str(d) for d in _list(entry.get("directions")))[:2]
        if len(points) >= 2:
            shapes.append(Shape(entry["name"], points, directions))
    return tuple(shapes)


def _anchor(entry: Any) -> Point | None:
    """The bottom centre of a tracked detection's box (JSON objects are dicts: no ABC check on the hot path)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("track_id"), int):
        return None
    box = entry.get("box")
    if not isinstance(box, list) or len(box) != 4:
        return None
    return _point([(box[0] + box[2]) / 2, box[3]]) if all(isinstance(v, int | float) for v in box) else None


def scene_row(record: Mapping[str, Any]) -> SceneRow | None:
    """The record's scene part, or None when it has neither tracks nor an analytics block."""
    tracked = [d for d in _list(record.get("detections")) if type(d) is dict and "track_id" in d]  # most have none
    anchors = tuple(p for p in map(_anchor, tracked) if p is not None)
    block = record.get("analytics")
    if not isinstance(block, Mapping):
        return SceneRow(anchors) if anchors else None
    crossings = tuple((str(c["line"]), str(c["direction"])) for c in _list(block.get("crossings"))
                      if isinstance(c, Mapping) and "line" in c and "direction" in c)
    occupancy_map = block.get("occupancy")
    occupancy = tuple(
        (str(zone), sum(n for n in classes.values() if isinstance(n, int) and not isinstance(n, bool)))
        for zone, classes in (occupancy_map.items() if isinstance(occupancy_map, Mapping) else ())
        if isinstance(classes, Mapping))[:MAX_ENTRIES]
    dwells = tuple((str(e["zone"]), float(e["dwell_s"])) for e in _list(block.get("zone_events"))
                   if isinstance(e, Mapping) and e.get("kind") == "exit" and isinstance(e.get("dwell_s"), int | float)
                   and math.isfinite(e["dwell_s"]) and e["dwell_s"] >= 0)
    found = block.get("geometry")
    geometry: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return SceneRow(anchors, crossings, occupancy, dwells, _shapes(geometry.get("lines"), "points"),
                    _shapes(geometry.get("zones"), "polygon"))
