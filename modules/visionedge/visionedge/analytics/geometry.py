"""Plane geometry on normalized points: which side of a line, where two segments cross, what a polygon holds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]


def side(a: Point, b: Point, p: Point) -> float:
    """Cross product (b - a) x (p - a): > 0 on one side of the line a->b, < 0 on the other, 0 on it."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


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


class Polygon:
    """A polygon's edges as arrays, computed once, so testing many points per frame is a few vector operations."""

    def __init__(self, points: Sequence[Point]) -> None:
        self.corners = np.asarray(points, dtype=float)
        self.edges = np.roll(self.corners, -1, axis=0) - self.corners
        self.lengths2 = (self.edges * self.edges).sum(axis=1)
        self.previous = np.roll(self.corners, 1, axis=0)

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Even-odd ray casting for many points (rows of x, y): True where a point lies inside."""
        xi, yi = self.corners[:, 0], self.corners[:, 1]
        xj, yj = self.previous[:, 0], self.previous[:, 1]
        x, y = xy[:, :1], xy[:, 1:2]
        straddles = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = (xj - xi) * (y - yi) / (yj - yi) + xi
        return np.asarray(np.count_nonzero(straddles & (x < at), axis=1) % 2 == 1)

    def distance_to_boundary(self, xy: np.ndarray) -> np.ndarray:
        """Shortest distance from each point (rows of x, y) to the polygon's edges."""
        rel = xy[:, None, :] - self.corners[None, :, :]
        t = np.clip((rel * self.edges[None]).sum(axis=2) / self.lengths2[None], 0.0, 1.0)
        gap = rel - t[:, :, None] * self.edges[None]
        return np.asarray(np.sqrt((gap * gap).sum(axis=2)).min(axis=1))
