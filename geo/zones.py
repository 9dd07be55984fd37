"""Delivery zones: parse and validate GeoJSON Polygon / MultiPolygon or a circle.

Coordinates are GeoJSON order, [lng, lat]; the shapely geometry uses x = lng, y = lat.
Validation runs from cheap to expensive: structure and vertex count first (so a 100,000-vertex
zone is refused before any geometry is built), then each position, then each ring on its own,
then each polygon, then the MultiPolygon as a whole, then the area.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import shapely

from geo.distance import EARTH_RADIUS_M, destination
from geo.errors import ZoneError

__all__ = ["MAX_LAT", "Circle", "Zone", "ZoneLimits", "parse_zone", "zone_area_km2"]

# Beyond this latitude H3 cells get large and lng/lat geometry degenerates; nobody delivers there.
MAX_LAT = 85.0
_ORDER = "coordinates are GeoJSON order [lng, lat]"

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ZoneLimits:
    max_area_km2: float = 50.0
    max_vertices: int = 2000
    circle_segments: int = 64
    max_circle_radius_m: float = 10_000.0

    def __post_init__(self) -> None:
        if not (self.max_area_km2 > 0 and self.max_circle_radius_m > 0):
            raise ValueError("zone limits must be positive")
        if self.max_vertices < 3 or self.circle_segments < 8:
            raise ValueError("max_vertices must be >= 3 and circle_segments >= 8")


DEFAULT_LIMITS = ZoneLimits()


class Circle(NamedTuple):
    """The circle a zone was made from (its polygon approximation is the zone)."""

    lng: float
    lat: float
    radius_m: float


@dataclass(frozen=True)
class Zone:
    """A validated delivery zone.

    `geometry` is a shapely Polygon or MultiPolygon (x = lng, y = lat). `geojson` is the
    normalized GeoJSON (2D float positions, exterior rings counter-clockwise, holes clockwise;
    a circle becomes its Polygon approximation); parsing it again gives the same zone. Treat it
    as read-only. `vertex_count` excludes each ring's closing position.
    """

    geometry: Any
    geojson: dict[str, Any]
    vertex_count: int
    area_km2: float
    circle: Circle | None = None


def parse_zone(obj: object, limits: ZoneLimits = DEFAULT_LIMITS) -> Zone:
    """Validate a GeoJSON Polygon / MultiPolygon or ``{"type": "Circle", "center": [lng, lat],
    "radius_m": r}`` and return a `Zone`; raise `ZoneError` (code, message, path) otherwise."""
    if not isinstance(obj, dict):
        raise ZoneError("invalid_geojson", "a zone must be a JSON object", [])
    kind = obj.get("type")
    if kind == "Circle":
        return _parse_circle(obj, limits)
    if kind not in ("Polygon", "MultiPolygon"):
        raise ZoneError("invalid_geojson", 'type must be "Polygon", "MultiPolygon" or "Circle"', ["type"])
    if "coordinates" not in obj:
        raise ZoneError("invalid_geojson", f"a {kind} needs coordinates", ["coordinates"])
    raw = _structure(kind, obj["coordinates"], limits)
    polygons = [[_ring(ring, path) for path, ring in rings] for rings in raw]
    try:
        geometry = _validated_geometry(kind, polygons, raw)
    except shapely.errors.ShapelyError as exc:  # defensive: GEOS refused the input outright
        raise ZoneError("invalid_ring", f"invalid geometry: {exc}", ["coordinates"]) from exc
    return _zone(geometry, limits, ["coordinates"])


def zone_area_km2(geometry: Any) -> float:
    """Area in km² of a lng/lat geometry, via Lambert's cylindrical equal-area projection.

    The projection preserves area exactly; the only error is that an edge straight in lng/lat
    is slightly curved in the projection, which is negligible at city scale.
    """
    rad = math.pi / 180.0
    projected = shapely.transform(
        geometry,
        lambda xy: np.column_stack(
            (xy[:, 0] * rad * EARTH_RADIUS_M, np.sin(xy[:, 1] * rad) * EARTH_RADIUS_M)
        ),
    )
    return float(shapely.area(projected)) / 1e6


# --- structure and positions (no shapely) ----------------------------------------------------


def _structure(kind: str, coords: object, limits: ZoneLimits) -> list[list[tuple[Path, Any]]]:
    """Check the nesting and count vertices; return each polygon's rings with their paths."""
    if kind == "Polygon":
        polys: list[tuple[Path, object]] = [(("coordinates",), coords)]
    else:
        if not isinstance(coords, list | tuple) or not coords:
            raise ZoneError(
                "invalid_geojson",
                "MultiPolygon coordinates must be a non-empty array of polygons",
                ["coordinates"],
            )
        polys = [(("coordinates", i), p) for i, p in enumerate(coords)]
    out: list[list[tuple[Path, Any]]] = []
    vertices = 0
    for path, poly in polys:
        if not isinstance(poly, list | tuple) or not poly:
            raise ZoneError("invalid_geojson", "a polygon must be a non-empty array of linear rings", path)
        rings: list[tuple[Path, Any]] = []
        for j, ring in enumerate(poly):
            if not isinstance(ring, list | tuple):
                raise ZoneError("invalid_geojson", "a linear ring must be an array", (*path, j))
            vertices += max(len(ring) - 1, 1)  # >= 1, so a flood of tiny rings is refused too
            if vertices > limits.max_vertices:
                raise ZoneError(
                    "too_many_vertices",
                    f"the zone has more than {limits.max_vertices} vertices",
                    ["coordinates"],
                )
            rings.append(((*path, j), ring))
        out.append(rings)
    return out


def _position(pos: object, path: Path) -> tuple[float, float]:
    """Check one position and return (lng, lat) as floats; an altitude is dropped."""
    if (
        not isinstance(pos, list | tuple)
        or len(pos) not in (2, 3)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pos)
        or not all(math.isfinite(v) for v in pos)
    ):
        raise ZoneError("invalid_position", f"a position must be 2 or 3 finite numbers; {_ORDER}", path)
    lng, lat = float(pos[0]), float(pos[1])
    if not -180.0 <= lng <= 180.0:
        raise ZoneError(
            "coordinate_out_of_range",
            f"longitude {lng} is outside [-180, 180]; {_ORDER}",
            path,
        )
    if not -MAX_LAT <= lat <= MAX_LAT:
        raise ZoneError(
            "coordinate_out_of_range",
            f"latitude {lat} is outside [-{MAX_LAT:g}, {MAX_LAT:g}]; {_ORDER}",
            path,
        )
    return lng, lat


def _ring(ring: Sequence[Any], path: Path) -> list[tuple[float, float]]:
    points = [_position(pos, (*path, k)) for k, pos in enumerate(ring)]
    if len(points) < 4:
        raise ZoneError(
            "too_few_positions",
            f"a linear ring needs at least 4 positions (the last repeating the first), got {len(points)}",
            path,
        )
    if points[0] != points[-1]:
        raise ZoneError(
            "ring_not_closed",
            f"the ring's last position {_fmt(points[-1])} must repeat its first {_fmt(points[0])}; {_ORDER}",
            path,
        )
    return points


# --- geometric validity (shapely) -------------------------------------------------------------

_POLYGON_REASONS = {
    "Hole lies outside shell": ("hole_outside_shell", "a hole lies outside its exterior ring"),
    "Holes are nested": ("invalid_ring", "a hole lies inside another hole"),
    "Self-intersection": ("self_intersection", "two rings of a polygon cross or overlap"),
    "Interior is disconnected": ("invalid_ring", "holes split the polygon's interior in parts"),
}
_MULTI_REASONS = {
    "Self-intersection": ("self_intersection", "two polygons of the MultiPolygon overlap"),
    "Nested shells": ("nested_shells", "a polygon lies inside another polygon"),
}


def _validated_geometry(
    kind: str, polygons: list[list[list[tuple[float, float]]]], raw: list[list[tuple[Path, Any]]]
) -> Any:
    rings = [[shapely.LinearRing(r) for r in poly] for poly in polygons]
    # Each ring on its own first: the error then names exactly that ring.
    for poly_rings, poly_raw in zip(rings, raw, strict=True):
        for ring, (path, _) in zip(poly_rings, poly_raw, strict=True):
            reason = shapely.is_valid_reason(ring)
            if reason == "Valid Geometry":
                continue
            at = _location(reason)
            if reason.startswith("Too few points"):
                raise ZoneError(
                    "too_few_positions", "a linear ring needs at least 3 distinct positions", path
                )
            if reason.startswith("Ring Self-intersection"):
                raise ZoneError(
                    "self_intersection", f"the ring crosses or touches itself{at}; {_ORDER}", path
                )
            raise ZoneError("invalid_ring", f"invalid ring: {reason}; {_ORDER}", path)
    shapes = [shapely.Polygon(r[0], r[1:]) for r in rings]
    for shape, poly_rings, poly_raw in zip(shapes, rings, raw, strict=True):
        reason = shapely.is_valid_reason(shape)
        if reason != "Valid Geometry":
            path = poly_raw[_nearest(poly_rings, reason)][0]
            raise _reason_error(reason, _POLYGON_REASONS, path)
    if kind == "Polygon":
        return shapely.orient_polygons(shapes[0])
    multi = shapely.MultiPolygon(shapes)
    reason = shapely.is_valid_reason(multi)
    if reason != "Valid Geometry":
        p = _nearest([s.exterior for s in shapes], reason)
        j = _nearest(rings[p], reason)
        raise _reason_error(reason, _MULTI_REASONS, raw[p][j][0])
    return shapely.orient_polygons(multi)


def _reason_error(reason: str, table: dict[str, tuple[str, str]], path: Path) -> ZoneError:
    for prefix, (code, text) in table.items():
        if reason.startswith(prefix):
            return ZoneError(code, f"{text}{_location(reason)}; {_ORDER}", path)
    return ZoneError("invalid_ring", f"invalid geometry: {reason}; {_ORDER}", path)


def _location(reason: str) -> str:
    point = _reason_point(reason)
    return f" near {_fmt(point)}" if point else ""


def _reason_point(reason: str) -> tuple[float, float] | None:
    match = re.search(r"\[(\S+) (\S+)\]", reason)
    return (float(match[1]), float(match[2])) if match else None


def _nearest(rings: Sequence[Any], reason: str) -> int:
    """Index of the ring nearest the point GEOS reported; on a tie the later ring (a hole, or
    the later polygon) is blamed, as the one added to an otherwise valid shape."""
    point = _reason_point(reason)
    if point is None:
        return len(rings) - 1
    dist = shapely.distance(np.asarray(rings, dtype=object), shapely.Point(point))
    return min(range(len(rings)), key=lambda i: (float(dist[i]), -i))


# --- circles ---------------------------------------------------------------------------------


def _parse_circle(obj: dict[str, Any], limits: ZoneLimits) -> Zone:
    if "center" not in obj:
        raise ZoneError("invalid_circle", f"a Circle needs a center; {_ORDER}", ["center"])
    lng, lat = _position(obj["center"], ("center",))
    radius = obj.get("radius_m")
    if (
        not isinstance(radius, int | float)
        or isinstance(radius, bool)
        or not math.isfinite(radius)
        or not 0 < radius <= limits.max_circle_radius_m
    ):
        raise ZoneError(
            "invalid_circle",
            f"radius_m must be a number in (0, {limits.max_circle_radius_m:g}] metres",
            ["radius_m"],
        )
    n = limits.circle_segments
    # Vertices at exactly radius_m (geodesic) from the centre; decreasing bearings go
    # counter-clockwise, as RFC 7946 wants for exterior rings.
    ring = []
    for i in range(n):
        plat, plng = destination(lat, lng, -360.0 * i / n, float(radius))
        if not (-MAX_LAT <= plat <= MAX_LAT and -180.0 <= plng <= 180.0):
            raise ZoneError(
                "invalid_circle",
                f"the circle crosses latitude ±{MAX_LAT:g} or the antimeridian; {_ORDER}",
                ["radius_m"],
            )
        ring.append((plng, plat))
    ring.append(ring[0])
    return _zone(shapely.Polygon(ring), limits, ["radius_m"], Circle(lng, lat, float(radius)))


def _zone(
    geometry: Any, limits: ZoneLimits, area_path: list[str | int], circle: Circle | None = None
) -> Zone:
    area = zone_area_km2(geometry)
    if area > limits.max_area_km2:
        raise ZoneError(
            "zone_too_large",
            f"the zone covers {area:.2f} km², more than the limit of {limits.max_area_km2:g} km²",
            area_path,
        )
    polygons = list(geometry.geoms) if geometry.geom_type == "MultiPolygon" else [geometry]
    coords = [[[[x, y] for x, y in ring.coords] for ring in (p.exterior, *p.interiors)] for p in polygons]
    if geometry.geom_type == "MultiPolygon":
        geojson: dict[str, Any] = {"type": "MultiPolygon", "coordinates": coords}
    else:
        geojson = {"type": "Polygon", "coordinates": coords[0]}
    vertices = sum(len(ring) - 1 for poly in coords for ring in poly)
    return Zone(geometry, geojson, vertices, area, circle)


def _fmt(point: tuple[float, float]) -> str:
    return f"[{point[0]:.7g}, {point[1]:.7g}]"
