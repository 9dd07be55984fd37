"""Shape helpers shared by the geo tests."""

from __future__ import annotations

import math
import random
from typing import Any

import h3.api.basic_int as h3
import shapely


def star_ring(
    lng: float, lat: float, radius_deg: float, n: int, rnd: random.Random, inner: float = 0.5
) -> list[list[float]]:
    """A closed star-shaped ring: n vertices at jittered angles, inner..1 x radius_deg."""
    ring = []
    for i in range(n):
        angle = 2 * math.pi * (i + rnd.uniform(-0.3, 0.3)) / n
        r = radius_deg * rnd.uniform(inner, 1.0)
        ring.append([lng + r * math.cos(angle), lat + r * math.sin(angle)])
    ring.append(list(ring[0]))
    return ring


def polygon(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def unprepared(geometry: Any) -> Any:
    """An independent copy (same coordinates) for brute-force checks."""
    return shapely.from_wkb(shapely.to_wkb(geometry))


def random_points_in_cell(cell: int, n: int, rnd: random.Random) -> list[tuple[float, float]]:
    """(lat, lng) points that H3 maps to `cell`, including its vertices' close surroundings."""
    boundary = h3.cell_to_boundary(cell)
    lats = [p[0] for p in boundary]
    lngs = [p[1] for p in boundary]
    points: list[tuple[float, float]] = []
    while len(points) < n:
        lat = rnd.uniform(min(lats), max(lats))
        lng = rnd.uniform(min(lngs), max(lngs))
        if h3.latlng_to_cell(lat, lng, h3.get_resolution(cell)) == cell:
            points.append((lat, lng))
    return points
