"""The scene analytics' part of a result record, read tolerantly: a missing or odd part is left out, never fatal.

What is read (all optional; `analyze --analytics` writes it):
- `detections[].track_id` (int) with `box` [x1, y1, x2, y2] in 0..1: the track's anchor (bottom centre) for trails;
- `scene.events[]`: {kind: crossing, line, direction, ...} and {kind: exit, zone, dwell_s, ...} (other kinds are
  not charted);
- `scene.occupancy`: {zone: {class: n}} for this frame;
- `scene.geometry` or the builder's `set_geometry` (the analytics section as plain data):
  {lines: [{name, points: [[x, y], [x, y]], directions: [a, b]}], zones: [{name, points: [[x, y], ...]}]} in
  normalized coordinates, to draw (the newest one wins).
A record's scene part is refused whole only when it is not an object; a list longer than MAX_ENTRIES is ignored.
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
    """A list (or tuple: settings dumped by pydantic) of at most MAX_ENTRIES, else empty."""
    return list(value) if isinstance(value, list | tuple) and len(value) <= MAX_ENTRIES else []


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
    if not isinstance(value, list | tuple):
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


def geometry_of(section: Mapping[str, Any]) -> tuple[tuple[Shape, ...] | None, tuple[Shape, ...] | None]:
    """Lines and zones of one source's analytics section (or a record's `scene.geometry`), as plain data."""
    return _shapes(section.get("lines"), "points"), _shapes(section.get("zones"), "points")


def scene_row(record: Mapping[str, Any]) -> SceneRow | None:
    """The record's scene part, or None when it has neither tracks nor a scene block."""
    tracked = [d for d in _list(record.get("detections")) if type(d) is dict and "track_id" in d]  # most have none
    anchors = tuple(p for p in map(_anchor, tracked) if p is not None)
    block = record.get("scene")
    if not isinstance(block, dict):
        return SceneRow(anchors) if anchors else None
    events = [e for e in _list(block.get("events")) if isinstance(e, dict)]
    crossings = tuple((str(e["line"]), str(e["direction"])) for e in events
                      if e.get("kind") == "crossing" and "line" in e and "direction" in e)
    occupancy_map = block.get("occupancy")
    occupancy = tuple(
        (str(zone), sum(n for n in classes.values() if isinstance(n, int) and not isinstance(n, bool)))
        for zone, classes in (occupancy_map.items() if isinstance(occupancy_map, dict) else ())
        if isinstance(classes, dict))[:MAX_ENTRIES]
    dwells = tuple((str(e["zone"]), float(e["dwell_s"])) for e in events
                   if e.get("kind") == "exit" and "zone" in e and isinstance(e.get("dwell_s"), int | float)
                   and math.isfinite(e["dwell_s"]) and e["dwell_s"] >= 0)
    found = block.get("geometry")
    lines, zones = geometry_of(found) if isinstance(found, dict) else (None, None)
    return SceneRow(anchors, crossings, occupancy, dwells, lines, zones)
