"""Map an instance's plane (metres) onto latitude/longitude and back.

We use the spherical azimuthal equidistant projection centred on the origin: a point at plane
offset (dx east, dy north) from ``(origin_x, origin_y)`` is placed at great-circle distance
``hypot(dx, dy)`` from ``(origin_lat, origin_lng)`` along bearing ``atan2(dx, dy)``, on the
sphere of mean earth radius that ``haversine_m`` uses.

Error bound. Radial scale is exactly 1 and tangential scale is ``c / sin(c)`` at angular
distance ``c`` from the origin, so for any two points within plane distance ``rho`` of the
origin (the disc and its spherical image are convex, so the paths between them stay inside)::

    haversine <= euclidean <= haversine * (c / sin c),   c = rho / R

i.e. a relative error of at most ``c**2 / 6``: 3.7e-6 at 30 km, 4.1e-5 at 100 km, far below the
0.1% the replay needs (see ``relative_error_bound``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean earth radius


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two (lat, lng) points in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def relative_error_bound(radius_m: float) -> float:
    """Largest relative difference between haversine and euclidean distances for points within
    ``radius_m`` of the origin on the plane."""
    c = radius_m / EARTH_RADIUS_M
    return c / math.sin(c) - 1 if c > 0 else 0.0


def _unit(lat: float, lng: float) -> tuple[float, float, float]:
    p, lam = math.radians(lat), math.radians(lng)
    return (math.cos(p) * math.cos(lam), math.cos(p) * math.sin(lam), math.sin(p))


@dataclass(frozen=True)
class PlaneMapping:
    origin_lat: float
    origin_lng: float
    origin_x: float = 0.0
    origin_y: float = 0.0

    def __post_init__(self) -> None:
        # East and north are undefined at the poles; a city is never that close to one.
        if not -85.0 <= self.origin_lat <= 85.0:
            raise ValueError(f"origin latitude must be within ±85°, got {self.origin_lat}")
        if not -180.0 <= self.origin_lng <= 180.0:
            raise ValueError(f"origin longitude must be within ±180°, got {self.origin_lng}")

    def _frame(self) -> tuple[tuple[float, float, float], ...]:
        # Unit vectors up (the origin), east and north at the origin, in earth-centred axes.
        p, lam = math.radians(self.origin_lat), math.radians(self.origin_lng)
        up = _unit(self.origin_lat, self.origin_lng)
        east = (-math.sin(lam), math.cos(lam), 0.0)
        north = (-math.sin(p) * math.cos(lam), -math.sin(p) * math.sin(lam), math.cos(p))
        return up, east, north

    def to_latlng(self, x: float, y: float) -> tuple[float, float]:
        dx, dy = x - self.origin_x, y - self.origin_y
        rho = math.hypot(dx, dy)
        c = rho / EARTH_RADIUS_M
        # sin(c)/rho -> 1/R as rho -> 0; written so the origin itself needs no special case.
        k = math.sin(c) / rho if rho > 0 else 1 / EARTH_RADIUS_M
        up, east, north = self._frame()
        v = [math.cos(c) * u + k * (dx * e + dy * n) for u, e, n in zip(up, east, north, strict=True)]
        lat = math.degrees(math.atan2(v[2], math.hypot(v[0], v[1])))
        lng = math.degrees(math.atan2(v[1], v[0]))
        return lat, lng

    def to_xy(self, lat: float, lng: float) -> tuple[float, float]:
        v = _unit(lat, lng)
        up, east, north = self._frame()
        e = sum(a * b for a, b in zip(v, east, strict=True))
        n = sum(a * b for a, b in zip(v, north, strict=True))
        u = sum(a * b for a, b in zip(v, up, strict=True))
        s = math.hypot(e, n)
        # The angle from atan2 stays accurate for small angles, where acos(u) would not.
        c = math.atan2(s, u)
        k = EARTH_RADIUS_M * c / s if s > 0 else EARTH_RADIUS_M
        return self.origin_x + k * e, self.origin_y + k * n
