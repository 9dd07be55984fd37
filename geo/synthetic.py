"""A deterministic synthetic city for benchmarks and tests.

Shops cluster around high streets (70%) or spread evenly (30%) over a square city. Zones are
circles (40%), irregular star-shaped polygons (45%), star polygons with a hole (10%, a park or
a river bend nobody delivers to) and two-part MultiPolygons (5%), of 0.5 to 3 km radius, so
they overlap heavily. Every zone passes `parse_zone` with the default limits.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from geo.distance import EARTH_RADIUS_M, destination

__all__ = ["DEFAULT_ORIGIN", "SyntheticShop", "random_points", "synthetic_city"]

DEFAULT_ORIGIN = (48.8566, 2.3522)  # (lat, lng): centre of the city square
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0


@dataclass(frozen=True, slots=True)
class SyntheticShop:
    shop_id: str
    lat: float
    lng: float
    zone: dict[str, Any]  # GeoJSON Polygon / MultiPolygon or {"type": "Circle", ...}


def synthetic_city(
    n_shops: int,
    seed: int,
    size_km: float = 30.0,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
) -> list[SyntheticShop]:
    """`n_shops` shops in a `size_km` square centred on `origin` (lat, lng); same seed, same city."""
    rnd = random.Random(seed)
    half = size_km * 500.0  # metres from the centre to an edge
    hotspots = [
        (rnd.uniform(-half, half), rnd.uniform(-half, half))
        for _ in range(max(1, int(math.sqrt(n_shops) / 2)))
    ]
    shops = []
    for i in range(n_shops):
        if rnd.random() < 0.7:
            hx, hy = rnd.choice(hotspots)
            x = min(half, max(-half, rnd.gauss(hx, 1500.0)))
            y = min(half, max(-half, rnd.gauss(hy, 1500.0)))
        else:
            x, y = rnd.uniform(-half, half), rnd.uniform(-half, half)
        lat, lng = _offset(origin, x, y)
        shops.append(SyntheticShop(f"shop-{i:05d}", lat, lng, _zone(rnd, lat, lng)))
    return shops


def random_points(
    n: int,
    seed: int,
    size_km: float = 30.0,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
) -> list[tuple[float, float]]:
    """`n` uniformly random (lat, lng) points in the same square as `synthetic_city`."""
    rnd = random.Random(seed)
    half = size_km * 500.0
    return [_offset(origin, rnd.uniform(-half, half), rnd.uniform(-half, half)) for _ in range(n)]


def _offset(origin: tuple[float, float], east_m: float, north_m: float) -> tuple[float, float]:
    lat0, lng0 = origin
    lat = lat0 + north_m / _M_PER_DEG
    return lat, lng0 + east_m / (_M_PER_DEG * math.cos(math.radians(lat0)))


def _zone(rnd: random.Random, lat: float, lng: float) -> dict[str, Any]:
    radius = rnd.uniform(500.0, 3000.0)
    kind = rnd.random()
    if kind < 0.40:
        return {"type": "Circle", "center": [lng, lat], "radius_m": radius}
    shell = _star(rnd, lat, lng, radius, rnd.randint(8, 48))
    if kind < 0.85:
        return {"type": "Polygon", "coordinates": [shell]}
    if kind < 0.95:
        # The shell's edges stay beyond 0.51 R of the centre (radii >= 0.6 R, angular gaps
        # <= 1.4 x 360/8 degrees), and the hole stays within 0.2 R + 0.22 R of it.
        hlat, hlng = destination(lat, lng, rnd.uniform(0, 360), 0.2 * radius)
        hole = _star(rnd, hlat, hlng, rnd.uniform(0.1, 0.22) * radius, rnd.randint(6, 16))
        return {"type": "Polygon", "coordinates": [shell, hole[::-1]]}
    small = rnd.uniform(200.0, 600.0)
    slat, slng = destination(lat, lng, rnd.uniform(0, 360), radius + small + rnd.uniform(100, 900))
    satellite = _star(rnd, slat, slng, small, rnd.randint(6, 16))
    return {"type": "MultiPolygon", "coordinates": [[shell], [satellite]]}


def _star(rnd: random.Random, lat: float, lng: float, radius: float, n: int) -> list[list[float]]:
    """A closed counter-clockwise ring: n vertices at jittered angles, 0.6 to 1.0 x radius."""
    step = 360.0 / n
    ring = []
    for i in range(n):
        bearing = -(i + rnd.uniform(-0.2, 0.2)) * step  # decreasing bearing = counter-clockwise
        vlat, vlng = destination(lat, lng, bearing, radius * rnd.uniform(0.6, 1.0))
        ring.append([vlng, vlat])
    ring.append(list(ring[0]))
    return ring
