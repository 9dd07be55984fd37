"""parse_zone: every rejection (code and path), circles, normalisation."""

from __future__ import annotations

import math
from typing import Any

import pytest
import shapely

from geo import GeoError, ZoneError, ZoneLimits, parse_zone, zone_area_km2
from geo.distance import haversine_m

SQUARE = [[0.0, 0.0], [0.01, 0.0], [0.01, 0.01], [0.0, 0.01], [0.0, 0.0]]
HOLE = [[0.004, 0.004], [0.006, 0.004], [0.006, 0.006], [0.004, 0.006], [0.004, 0.004]]


def polygon(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [list(r) for r in rings]}


def shifted(ring: list[list[float]], dx: float, dy: float = 0.0) -> list[list[float]]:
    return [[x + dx, y + dy] for x, y in ring]


def reject(obj: object, limits: ZoneLimits | None = None) -> ZoneError:
    with pytest.raises(ZoneError) as info:
        parse_zone(obj) if limits is None else parse_zone(obj, limits)
    assert isinstance(info.value, GeoError)
    return info.value


def test_polygon_with_hole_is_parsed_and_normalised() -> None:
    zone = parse_zone(polygon(SQUARE[::-1], HOLE))  # clockwise shell, counter-clockwise hole
    assert zone.geometry.geom_type == "Polygon"
    assert zone.vertex_count == 8
    assert zone.circle is None
    shell, hole = zone.geojson["coordinates"]
    assert shapely.LinearRing(shell).is_ccw  # RFC 7946: exterior counter-clockwise
    assert not shapely.LinearRing(hole).is_ccw
    assert all(isinstance(v, float) for ring in (shell, hole) for pos in ring for v in pos)
    # Normalised output parses to the same geometry.
    again = parse_zone(zone.geojson)
    assert again.geojson == zone.geojson
    assert again.geometry.equals_exact(zone.geometry, 0.0)


def test_multipolygon_and_altitude_and_integers() -> None:
    second = [[1, 1, 5], [2, 1, 5], [2, 2, 5], [1, 2, 5], [1, 1, 5]]  # ints with altitude
    zone = parse_zone(
        {"type": "MultiPolygon", "coordinates": [[SQUARE, HOLE], [second]]},
        ZoneLimits(max_area_km2=20_000),
    )
    assert zone.geometry.geom_type == "MultiPolygon"
    assert zone.vertex_count == 12
    assert zone.geojson["coordinates"][1][0][0] == [1.0, 1.0]
    as_tuples = {"type": "Polygon", "coordinates": (tuple(tuple(p) for p in SQUARE),)}
    assert parse_zone(as_tuples).geojson == parse_zone(polygon(SQUARE)).geojson


def test_area_matches_spherical_cell_area() -> None:
    # A 0.1 x 0.1 degree box at 45N; spherical area R² Δλ (sin φ2 - sin φ1).
    box = [[10.0, 45.0], [10.1, 45.0], [10.1, 45.1], [10.0, 45.1], [10.0, 45.0]]
    r = 6_371_008.8
    expected = r * r * math.radians(0.1) * (math.sin(math.radians(45.1)) - math.sin(math.radians(45.0)))
    zone = parse_zone(polygon(box), ZoneLimits(max_area_km2=100))
    assert zone.area_km2 == pytest.approx(expected / 1e6, rel=1e-6)


def test_circle_vertices_are_at_the_geodesic_radius() -> None:
    zone = parse_zone({"type": "Circle", "center": [2.35, 60.0], "radius_m": 1500})
    assert zone.circle == (2.35, 60.0, 1500.0)
    ring = zone.geojson["coordinates"][0]
    assert len(ring) == 65 and ring[0] == ring[-1]
    for lng, lat in ring:
        assert haversine_m(60.0, 2.35, lat, lng) == pytest.approx(1500.0, abs=1e-6)
    assert shapely.LinearRing(ring).is_ccw
    assert zone.area_km2 == pytest.approx(math.pi * 1.5**2, rel=0.005)
    assert zone.geometry.covers(shapely.Point(2.35, 60.0))


def test_circle_segments_are_configurable() -> None:
    zone = parse_zone({"type": "Circle", "center": [0, 0], "radius_m": 100}, ZoneLimits(circle_segments=16))
    assert zone.vertex_count == 16


@pytest.mark.parametrize(
    ("obj", "code", "path"),
    [
        ([1, 2], "invalid_geojson", []),
        ({"type": "Point", "coordinates": [0, 0]}, "invalid_geojson", ["type"]),
        ({"type": "Polygon"}, "invalid_geojson", ["coordinates"]),
        ({"type": "Polygon", "coordinates": []}, "invalid_geojson", ["coordinates"]),
        ({"type": "Polygon", "coordinates": "x"}, "invalid_geojson", ["coordinates"]),
        ({"type": "Polygon", "coordinates": [SQUARE, 7]}, "invalid_geojson", ["coordinates", 1]),
        ({"type": "MultiPolygon", "coordinates": []}, "invalid_geojson", ["coordinates"]),
        ({"type": "MultiPolygon", "coordinates": [[SQUARE], []]}, "invalid_geojson", ["coordinates", 1]),
    ],
)
def test_structure_errors(obj: object, code: str, path: list[str | int]) -> None:
    error = reject(obj)
    assert (error.code, error.path) == (code, path)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ([0.005], "invalid_position"),
        ([0.005, 0.0, 1.0, 2.0], "invalid_position"),
        ([True, 0.0], "invalid_position"),
        (["0.005", 0.0], "invalid_position"),
        ([float("nan"), 0.0], "invalid_position"),
        ([0.0, float("inf")], "invalid_position"),
        (None, "invalid_position"),
        ([180.5, 0.0], "coordinate_out_of_range"),
        ([-181, 0.0], "coordinate_out_of_range"),
        ([0.0, 85.01], "coordinate_out_of_range"),
        ([0.0, -86], "coordinate_out_of_range"),
    ],
)
def test_position_errors_point_at_the_position(bad: object, code: str) -> None:
    ring: list[Any] = [list(p) for p in SQUARE]
    ring[2] = bad
    error = reject({"type": "MultiPolygon", "coordinates": [[SQUARE], [SQUARE, HOLE, ring]]})
    assert (error.code, error.path) == (code, ["coordinates", 1, 2, 2])
    assert "[lng, lat]" in error.message


def test_swapped_lat_lng_is_reported_in_geojson_order() -> None:
    error = reject(polygon([[2.35, 48.8], [2.36, 48.8], [2.36, 90.0], [2.35, 48.8]]))
    assert error.code == "coordinate_out_of_range"
    assert error.path == ["coordinates", 0, 2]
    assert "latitude 90.0" in error.message and "[lng, lat]" in error.message


def test_unclosed_ring() -> None:
    error = reject(polygon(SQUARE, [*HOLE[:-1], [0.0045, 0.0045]]))
    assert (error.code, error.path) == ("ring_not_closed", ["coordinates", 1])
    assert "[lng, lat]" in error.message


def test_too_few_positions() -> None:
    error = reject(polygon([[0, 0], [1, 1], [0, 0]]))
    assert (error.code, error.path) == ("too_few_positions", ["coordinates", 0])
    # Four positions but only two distinct points.
    error = reject(polygon(SQUARE, [[0.004, 0.004], [0.005, 0.005], [0.004, 0.004], [0.004, 0.004]]))
    assert (error.code, error.path) == ("too_few_positions", ["coordinates", 1])


def test_self_intersecting_ring_is_located() -> None:
    bowtie = [[0.0, 0.0], [0.01, 0.01], [0.01, 0.0], [0.0, 0.01], [0.0, 0.0]]
    error = reject({"type": "MultiPolygon", "coordinates": [[SQUARE], [shifted(bowtie, 1.0)]]})
    assert (error.code, error.path) == ("self_intersection", ["coordinates", 1, 0])
    assert "[lng, lat]" in error.message and "1.005" in error.message
    collinear = [[0.0, 0.0], [0.01, 0.0], [0.02, 0.0], [0.0, 0.0]]
    assert reject(polygon(collinear)).code == "self_intersection"


def test_hole_outside_shell() -> None:
    error = reject(polygon(SQUARE, HOLE, shifted(HOLE, 1.0)))
    assert (error.code, error.path) == ("hole_outside_shell", ["coordinates", 2])


def test_hole_crossing_shell() -> None:
    error = reject(polygon(SQUARE, shifted(HOLE, 0.005)))
    assert (error.code, error.path) == ("self_intersection", ["coordinates", 1])


def test_overlapping_holes_blame_the_later_hole() -> None:
    error = reject(polygon(SQUARE, HOLE, shifted(HOLE, 0.001, 0.001)))
    assert (error.code, error.path) == ("self_intersection", ["coordinates", 2])


def test_overlapping_and_nested_multipolygon_parts() -> None:
    overlap = {"type": "MultiPolygon", "coordinates": [[SQUARE], [shifted(SQUARE, 0.005)]]}
    assert (reject(overlap).code, reject(overlap).path) == ("self_intersection", ["coordinates", 1, 0])
    small = [[0.002, 0.002], [0.003, 0.002], [0.003, 0.003], [0.002, 0.003], [0.002, 0.002]]
    nested = {"type": "MultiPolygon", "coordinates": [[SQUARE], [small]]}
    error = reject(nested)
    assert (error.code, error.path) == ("nested_shells", ["coordinates", 1, 0])


def test_multipolygon_parts_touching_at_a_point_are_valid() -> None:
    corner = shifted(SQUARE, 0.01, 0.01)
    assert parse_zone({"type": "MultiPolygon", "coordinates": [[SQUARE], [corner]]}).area_km2 > 0


def test_zone_too_large() -> None:
    big: list[list[float]] = [[0, 0], [0.1, 0], [0.1, 0.1], [0, 0.1], [0, 0]]  # ~123 km²
    error = reject(polygon(big))
    assert (error.code, error.path) == ("zone_too_large", ["coordinates"])
    assert parse_zone(polygon(big), ZoneLimits(max_area_km2=200)).area_km2 == pytest.approx(123.6, rel=0.01)
    error = reject({"type": "Circle", "center": [0, 0], "radius_m": 5000})
    assert (error.code, error.path) == ("zone_too_large", ["radius_m"])


def test_too_many_vertices_is_refused_before_positions_are_read() -> None:
    # 100,000 vertices, all of them garbage: the count alone refuses the zone.
    ring: list[Any] = [None] * 100_000
    error = reject(polygon(ring))
    assert (error.code, error.path) == ("too_many_vertices", ["coordinates"])
    many_rings = {"type": "MultiPolygon", "coordinates": [[[[0, 0]]]] * 100_000}
    assert reject(many_rings).code == "too_many_vertices"
    limits = ZoneLimits(max_vertices=7)
    assert reject(polygon(SQUARE, HOLE), limits).code == "too_many_vertices"
    assert parse_zone(polygon(SQUARE, HOLE), ZoneLimits(max_vertices=8)).vertex_count == 8


@pytest.mark.parametrize(
    ("circle", "code", "path"),
    [
        ({"type": "Circle", "radius_m": 10}, "invalid_circle", ["center"]),
        ({"type": "Circle", "center": [0, 0]}, "invalid_circle", ["radius_m"]),
        ({"type": "Circle", "center": [0, 0], "radius_m": 0}, "invalid_circle", ["radius_m"]),
        ({"type": "Circle", "center": [0, 0], "radius_m": -5}, "invalid_circle", ["radius_m"]),
        ({"type": "Circle", "center": [0, 0], "radius_m": "9"}, "invalid_circle", ["radius_m"]),
        ({"type": "Circle", "center": [0, 0], "radius_m": True}, "invalid_circle", ["radius_m"]),
        ({"type": "Circle", "center": [0, 0], "radius_m": math.nan}, "invalid_circle", ["radius_m"]),
        ({"type": "Circle", "center": [0, 0], "radius_m": 20_000}, "invalid_circle", ["radius_m"]),
        ({"type": "Circle", "center": [0, 84.99], "radius_m": 1500}, "invalid_circle", ["radius_m"]),
        ({"type": "Circle", "center": [179.999, 0], "radius_m": 1500}, "invalid_circle", ["radius_m"]),
        ({"type": "Circle", "center": [0, 91], "radius_m": 10}, "coordinate_out_of_range", ["center"]),
        ({"type": "Circle", "center": [0], "radius_m": 10}, "invalid_position", ["center"]),
    ],
)
def test_circle_errors(circle: dict[str, Any], code: str, path: list[str | int]) -> None:
    error = reject(circle)
    assert (error.code, error.path) == (code, path)


def test_zone_error_str_names_code_and_path() -> None:
    error = reject(polygon(SQUARE, [*HOLE[:-1], [0.0045, 0.0045]]))
    assert str(error).startswith("ring_not_closed at coordinates/1:")


def test_zone_area_of_a_multipolygon_sums_its_parts() -> None:
    one = parse_zone(polygon(SQUARE))
    two = parse_zone({"type": "MultiPolygon", "coordinates": [[SQUARE], [shifted(SQUARE, 0.5)]]})
    assert zone_area_km2(two.geometry) == pytest.approx(2 * one.area_km2, rel=1e-6)
