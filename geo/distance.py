"""Great-circle distances and a simple travel-time model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["EARTH_RADIUS_M", "TravelModel", "destination", "haversine_m", "haversine_m_array"]

# IUGG mean earth radius; the same sphere is used for distances, circles and areas.
EARTH_RADIUS_M = 6_371_008.8

_RAD = math.pi / 180.0


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two points given in degrees."""
    p1 = lat1 * _RAD
    p2 = lat2 * _RAD
    s_lat = math.sin((p2 - p1) * 0.5)
    s_lng = math.sin((lng2 - lng1) * _RAD * 0.5)
    h = s_lat * s_lat + math.cos(p1) * math.cos(p2) * s_lng * s_lng
    # min() guards asin against h creeping above 1 by rounding for antipodal points.
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


def haversine_m_array(
    lat: float, lng: float, lats: NDArray[np.float64], lngs: NDArray[np.float64]
) -> NDArray[np.float64]:
    """`haversine_m` from one point to many, vectorised."""
    p1, p2 = lat * _RAD, lats * _RAD
    s_lat = np.sin((p2 - p1) * 0.5)
    s_lng = np.sin((lngs - lng) * _RAD * 0.5)
    h = s_lat * s_lat + math.cos(p1) * np.cos(p2) * s_lng * s_lng
    result: NDArray[np.float64] = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(1.0, h)))
    return result


def destination(lat: float, lng: float, bearing_deg: float, distance_m: float) -> tuple[float, float]:
    """The (lat, lng) reached from (lat, lng) after `distance_m` along `bearing_deg` (0 = north).

    Longitude is not wrapped: callers that care about the antimeridian check the range.
    """
    p1 = lat * _RAD
    delta = distance_m / EARTH_RADIUS_M
    theta = bearing_deg * _RAD
    sin_p2 = math.sin(p1) * math.cos(delta) + math.cos(p1) * math.sin(delta) * math.cos(theta)
    p2 = math.asin(max(-1.0, min(1.0, sin_p2)))
    y = math.sin(theta) * math.sin(delta) * math.cos(p1)
    x = math.cos(delta) - math.sin(p1) * sin_p2
    return p2 / _RAD, lng + math.atan2(y, x) / _RAD


@dataclass(frozen=True, slots=True)
class TravelModel:
    """Travel minutes = haversine distance x detour factor / speed, plus fixed service minutes.

    A replay can set ``detour_factor=1`` and the speed given by its instance. With
    ``round_up`` the result is rounded up to whole minutes (as a float).
    """

    speed_m_per_min: float = 250.0
    detour_factor: float = 1.3
    service_minutes: float = 0.0
    round_up: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed_m_per_min) and self.speed_m_per_min > 0):
            raise ValueError(f"speed_m_per_min must be positive, got {self.speed_m_per_min!r}")
        if not (math.isfinite(self.detour_factor) and self.detour_factor > 0):
            raise ValueError(f"detour_factor must be positive, got {self.detour_factor!r}")
        if not (math.isfinite(self.service_minutes) and self.service_minutes >= 0):
            raise ValueError(f"service_minutes must be >= 0, got {self.service_minutes!r}")

    def minutes_for_distance(self, distance_m: float) -> float:
        """Travel minutes for a straight-line distance in metres."""
        minutes = distance_m * self.detour_factor / self.speed_m_per_min + self.service_minutes
        return float(math.ceil(minutes)) if self.round_up else minutes

    def minutes(self, lat1: float, lng1: float, lat2: float, lng2: float) -> float:
        """Travel minutes from (lat1, lng1) to (lat2, lng2)."""
        return self.minutes_for_distance(haversine_m(lat1, lng1, lat2, lng2))

    def minutes_array(
        self, lat: float, lng: float, lats: NDArray[np.float64], lngs: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """`minutes` from one point to many, vectorised."""
        minutes = haversine_m_array(lat, lng, lats, lngs) * self.detour_factor / self.speed_m_per_min
        minutes += self.service_minutes
        result: NDArray[np.float64] = np.ceil(minutes) if self.round_up else minutes
        return result
