"""Pure geometry for dispatch: delivery zones, their H3 covers and index, distances, travel.

No I/O, no asyncio, no clock reads. Coordinates in GeoJSON are [lng, lat]; function arguments
are (lat, lng) unless named otherwise.
"""

from geo.cover import DEFAULT_RESOLUTION, Cover, cover_zone, edge_margin_deg
from geo.distance import EARTH_RADIUS_M, TravelModel, destination, haversine_m
from geo.errors import ZONE_ERROR_CODES, CoordinateError, GeoError, ZoneError
from geo.index import ZoneIndex
from geo.synthetic import SyntheticShop, random_points, synthetic_city
from geo.zones import Circle, Zone, ZoneLimits, parse_zone, zone_area_km2

__all__ = [
    "DEFAULT_RESOLUTION",
    "EARTH_RADIUS_M",
    "ZONE_ERROR_CODES",
    "Circle",
    "CoordinateError",
    "Cover",
    "GeoError",
    "SyntheticShop",
    "TravelModel",
    "Zone",
    "ZoneError",
    "ZoneIndex",
    "ZoneLimits",
    "cover_zone",
    "destination",
    "edge_margin_deg",
    "haversine_m",
    "parse_zone",
    "random_points",
    "synthetic_city",
    "zone_area_km2",
]
