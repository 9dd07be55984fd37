"""The geo package's exceptions: one hierarchy, rooted at `GeoError`.

Shapely and h3 exceptions are translated at geo's public functions, so callers (the HTTP layer
in particular) only ever catch these. Invalid *configuration* (a negative speed, an unsupported
H3 resolution) is a programming error and raises plain `ValueError` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ZONE_ERROR_CODES", "CoordinateError", "GeoError", "ZoneError"]

# Machine-readable codes a ZoneError may carry; the HTTP layer passes them through verbatim.
ZONE_ERROR_CODES = frozenset(
    {
        "invalid_geojson",  # not an object, unknown type, wrong nesting, missing members
        "invalid_position",  # a position that is not 2 or 3 finite numbers
        "coordinate_out_of_range",  # lng outside [-180, 180] or lat outside [-85, 85]
        "ring_not_closed",  # first and last positions of a ring differ
        "too_few_positions",  # a ring with fewer than 4 positions
        "self_intersection",  # a ring crosses itself, another ring, or another polygon
        "hole_outside_shell",  # a hole not inside its polygon's exterior ring
        "nested_shells",  # one polygon of a MultiPolygon lies inside another
        "invalid_ring",  # any other invalidity shapely reports, located at a ring
        "invalid_circle",  # bad centre or radius in a {"type": "Circle"} zone
        "too_many_vertices",  # more vertices than ZoneLimits.max_vertices
        "zone_too_large",  # area above ZoneLimits.max_area_km2
        "zone_too_complex",  # its H3 cover would need more cells than allowed (see cover_zone)
    }
)


class GeoError(Exception):
    """Base class of every exception raised by the geo package."""


class ZoneError(GeoError):
    """A submitted delivery zone was rejected.

    `code` is one of `ZONE_ERROR_CODES`; `message` is for humans; `path` locates the offending
    element inside the submitted object, e.g. ``["coordinates", 0, 5]`` (Polygon ring 0,
    position 5), ``["coordinates", 1, 0]`` (MultiPolygon polygon 1, ring 0) or ``["radius_m"]``.
    """

    def __init__(self, code: str, message: str, path: Sequence[str | int] = ()) -> None:
        assert code in ZONE_ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.path: list[str | int] = list(path)

    def __str__(self) -> str:
        where = "/".join(str(p) for p in self.path)
        return f"{self.code} at {where or '<root>'}: {self.message}"


class CoordinateError(GeoError, ValueError):
    """A query point with a latitude or longitude that is not finite or out of range."""
