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


def comb(
    teeth: int, length_deg: float, width_deg: float = 0.000003, gap_deg: float = 0.02, lng: float = 4.83
) -> dict[str, Any]:
    """A comb: a thin bar along latitude 45.76 with `teeth` teeth `length_deg` long and `width_deg` wide
    pointing north. Small area and few vertices, but a boundary of 2 x teeth x length: a hostile zone."""
    lat, bar = 45.76, 0.001
    right = lng + teeth * (width_deg + gap_deg)
    ring = [[lng, lat], [right, lat], [right, lat + bar]]
    x = right
    for _ in range(teeth):
        x -= gap_deg
        ring += [[x, lat + bar], [x, lat + bar + length_deg]]
        x -= width_deg
        ring += [[x, lat + bar + length_deg], [x, lat + bar]]
    if ring[-1] != [lng, lat + bar]:
        ring.append([lng, lat + bar])
    ring.append([lng, lat])
    return polygon(ring)
