"""Plane geometry on normalized points: which side of a line, where two segments cross, what a polygon holds."""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = tuple[float, float]


def side(a: Point, b: Point, p: Point) -> float:
    """Cross product (b - a) x (p - a): > 0 on one side of the line a->b, < 0 on the other, 0 on it."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def distance_to_line(a: Point, b: Point, p: Point) -> float:
    """Signed distance of p from the infinite line through a and b (sign as `side`)."""
    length = math.hypot(b[0] - a[0], b[1] - a[1])
    return side(a, b, p) / length


def crossing_param(a: Point, b: Point, p0: Point, p1: Point) -> float | None:
    """Where the move p0->p1 meets the line a->b, as a fraction of a->b (0 at a, 1 at b); None when parallel."""
    d0, d1 = side(a, b, p0), side(a, b, p1)
    if d0 == d1:
        return None
    t = d0 / (d0 - d1)
    x, y = p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])
    dx, dy = b[0] - a[0], b[1] - a[1]
    return ((x - a[0]) * dx + (y - a[1]) * dy) / (dx * dx + dy * dy)


def _segments_cross(p1: Point, p2: Point, p3: Point, p4: Point) -> bool:
    """True when the open segments p1p2 and p3p4 properly intersect or touch away from shared endpoints."""
    d1, d2 = side(p3, p4, p1), side(p3, p4, p2)
    d3, d4 = side(p1, p2, p3), side(p1, p2, p4)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True

    def on(a: Point, b: Point, p: Point, d: float) -> bool:
        return d == 0 and min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])

    return on(p3, p4, p1, d1) or on(p3, p4, p2, d2) or on(p1, p2, p3, d3) or on(p1, p2, p4, d4)


def self_intersection(points: Sequence[Point]) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges of the closed polygon that cross, or None for a simple polygon."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            if _segments_cross(*edges[i], *edges[j]):
                return i, j
    return None


def polygon_area(points: Sequence[Point]) -> float:
    """Unsigned shoelace area."""
    n = len(points)
    return abs(sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1]
                   for i in range(n))) / 2


def contains(points: Sequence[Point], p: Point) -> bool:
    """Even-odd ray casting: True when p lies inside the polygon."""
    x, y = p
    inside = False
    j = len(points) - 1
    for i in range(len(points)):
        xi, yi = points[i]
        xj, yj = points[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def distance_to_boundary(points: Sequence[Point], p: Point) -> float:
    """Shortest distance from p to the polygon's edges."""
    best = float("inf")
    n = len(points)
    for i in range(n):
        a, b = points[i], points[(i + 1) % n]
        dx, dy = b[0] - a[0], b[1] - a[1]
        t = max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / (dx * dx + dy * dy)))
        best = min(best, math.hypot(a[0] + t * dx - p[0], a[1] + t * dy - p[1]))
    return best
