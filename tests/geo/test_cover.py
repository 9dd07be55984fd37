"""cover_zone: no gaps, interior cells wholly inside, margins, odd places."""

from __future__ import annotations

import random
from typing import Any

import h3.api.basic_int as h3
import pytest
import shapely

from geo import Cover, GeoError, ZoneError, cover_zone, edge_margin_deg, parse_zone
from geo.cover import cell_polygons, estimated_cells
from tests.geo.shapes import comb, polygon, random_points_in_cell, star_ring

PLACES = [(2.35, 48.85), (-58.4, -34.6), (139.7, 35.7), (18.95, 69.65), (-21.9, 84.5)]


def zones() -> list[Any]:
    rnd = random.Random(7)
    out = []
    for lng, lat in PLACES:
        out.append(parse_zone({"type": "Circle", "center": [lng, lat], "radius_m": 900}))
        shell = star_ring(lng, lat, 0.01, 17, rnd)
        hole = star_ring(lng, lat, 0.002, 7, rnd)[::-1]
        out.append(parse_zone(polygon(shell, hole)))
        tiny = star_ring(lng + 0.03, lat, 0.0002, 5, rnd)  # smaller than one cell
        out.append(parse_zone({"type": "MultiPolygon", "coordinates": [[shell], [tiny]]}))
    return out


ZONES = zones()


def check_no_gaps(zone: Any, cover: Cover, points: list[tuple[float, float]]) -> None:
    cells = cover.interior | cover.edge
    for lat, lng in points:
        cell = h3.latlng_to_cell(lat, lng, cover.resolution)
        covered = zone.geometry.covers(shapely.Point(lng, lat))
        if covered:
            assert cell in cells, (lat, lng)
        if cell in cover.interior:
            assert covered, (lat, lng)


def boundary_points(geometry: Any, rnd: random.Random, n: int) -> list[tuple[float, float]]:
    """Vertices, points interpolated along edges, and points 1e-9 degrees off them."""
    coords = shapely.get_coordinates(shapely.get_rings(shapely.get_parts(geometry))).tolist()
    points = []
    for _ in range(n):
        k = rnd.randrange(len(coords) - 1)
        (ax, ay), (bx, by) = coords[k], coords[k + 1]
        t = rnd.choice([0.0, rnd.random()])
        x, y = ax + t * (bx - ax), ay + t * (by - ay)
        dx, dy = rnd.choice([0.0, 1e-9, -1e-9]), rnd.choice([0.0, 1e-9, -1e-9])
        points.append((y + dy, x + dx))
    return points


@pytest.mark.parametrize("index", range(len(ZONES)))
def test_cover_has_no_gaps_and_interior_is_inside(index: int) -> None:
    zone = ZONES[index]
    cover = cover_zone(zone)
    assert cover.resolution == 9
    assert not cover.interior & cover.edge
    rnd = random.Random(index)
    minx, miny, maxx, maxy = zone.geometry.bounds
    uniform = [(rnd.uniform(miny, maxy), rnd.uniform(minx, maxx)) for _ in range(1500)]
    check_no_gaps(zone, cover, uniform + boundary_points(zone.geometry, rnd, 1500))
    # Points of interior cells (also near their corners) are all inside the zone.
    for cell in rnd.sample(sorted(cover.interior), min(15, len(cover.interior))):
        for lat, lng in random_points_in_cell(cell, 30, rnd):
            assert zone.geometry.covers(shapely.Point(lng, lat))
    # Interior cells are inside with the margin to spare; edge cells all come near the zone.
    margin = edge_margin_deg(9)
    hexes = cell_polygons(sorted(cover.interior))
    assert shapely.covers(zone.geometry, shapely.buffer(hexes, margin * 0.99)).all()
    assert (shapely.distance(zone.geometry, cell_polygons(sorted(cover.edge))) <= margin).all()


def test_cover_is_a_superset_of_h3_center_polyfill_which_leaves_gaps() -> None:
    zone = ZONES[1]
    cover = cover_zone(zone)
    shape = h3.geo_to_h3shape(zone.geometry.__geo_interface__)
    centre_cells = set(h3.h3shape_to_cells(shape, 9))
    assert centre_cells <= cover.interior | cover.edge
    # The centre polyfill alone misses cells that hold points of the zone.
    rnd = random.Random(3)
    missed = [
        (lat, lng)
        for lat, lng in boundary_points(zone.geometry, rnd, 2000)
        if zone.geometry.covers(shapely.Point(lng, lat))
        and h3.latlng_to_cell(lat, lng, 9) not in centre_cells
    ]
    assert missed


def test_zone_smaller_than_a_cell_is_an_edge_cell() -> None:
    zone = parse_zone({"type": "Circle", "center": [2.35, 48.85], "radius_m": 5})
    cover = cover_zone(zone)
    assert not cover.interior
    assert h3.latlng_to_cell(48.85, 2.35, 9) in cover.edge
    check_no_gaps(zone, cover, boundary_points(zone.geometry, random.Random(1), 500))


def test_zone_touching_the_antimeridian() -> None:
    ring = [[179.99, -16.8], [180.0, -16.8], [180.0, -16.79], [179.99, -16.79], [179.99, -16.8]]
    zone = parse_zone(polygon(ring))
    cover = cover_zone(zone)
    spans = [
        max(p[1] for p in h3.cell_to_boundary(c)) - min(p[1] for p in h3.cell_to_boundary(c))
        for c in cover.edge
    ]
    assert max(spans) > 180  # some cells straddle the antimeridian
    points = [(-16.8 + 0.01 * f, 180.0) for f in (0.0, 0.25, 0.5, 1.0)]
    points += boundary_points(zone.geometry, random.Random(2), 500)
    check_no_gaps(zone, cover, points)
    west = parse_zone(polygon([[-x, y] for x, y in ring]))
    check_no_gaps(west, cover_zone(west), boundary_points(west.geometry, random.Random(4), 500))


@pytest.mark.parametrize("resolution", [7, 10, 11])
def test_other_resolutions(resolution: int) -> None:
    zone = ZONES[4]
    cover = cover_zone(zone.geometry, resolution)
    assert cover.resolution == resolution
    rnd = random.Random(resolution)
    minx, miny, maxx, maxy = zone.geometry.bounds
    points = [(rnd.uniform(miny, maxy), rnd.uniform(minx, maxx)) for _ in range(500)]
    check_no_gaps(zone, cover, points + boundary_points(zone.geometry, rnd, 500))


def test_margin_shrinks_with_resolution_and_resolution_is_checked() -> None:
    assert edge_margin_deg(7) > edge_margin_deg(9) > edge_margin_deg(11) > 0
    # Far above the measured bulge of H3 cell edges at res 9 (~1e-7 degrees), far below a metre.
    assert 1e-6 < edge_margin_deg(9) < 1e-4
    with pytest.raises(ValueError, match="resolution"):
        cover_zone(ZONES[0], 3)
    with pytest.raises(ValueError, match="resolution"):
        edge_margin_deg(16)


@pytest.mark.parametrize(
    "geometry", [shapely.Point(0, 0), shapely.Polygon(), shapely.LineString([(0, 0), (1, 1)])]
)
def test_non_zones_raise_geo_error_not_library_errors(geometry: Any) -> None:
    with pytest.raises(GeoError, match="Polygon"):
        cover_zone(geometry)


def test_a_comb_is_refused_before_any_h3_work() -> None:
    """40 teeth 390 km long: 3.6 km², 163 vertices, a 31,000 km boundary, minutes of covering."""
    zone = parse_zone(comb(40, 3.5))
    assert zone.area_km2 < 50 and zone.vertex_count < 200
    assert estimated_cells(zone.geometry, 9) > 30_000  # the real cover: 60,000 cells
    with pytest.raises(ZoneError) as err:
        cover_zone(zone, 9, max_cells=10_000)
    assert (err.value.code, err.value.path) == ("zone_too_complex", ["coordinates"])
    assert "10,000" in err.value.message


def test_a_zone_past_the_limit_is_refused_while_covering() -> None:
    """The estimate is low (a comb's two sides share cells): the cover itself stops at the limit."""
    zone = parse_zone(comb(10, 0.3))
    assert estimated_cells(zone.geometry, 9) < 1000 < len(cover_zone(zone, 9))
    with pytest.raises(ZoneError) as err:
        cover_zone(zone, 9, max_cells=1000)
    assert err.value.code == "zone_too_complex"


def test_a_circle_too_fine_for_the_limit_points_at_its_radius() -> None:
    zone = parse_zone({"type": "Circle", "center": [4.83, 45.76], "radius_m": 3900})
    with pytest.raises(ZoneError) as err:
        cover_zone(zone, 11, max_cells=10_000)
    assert (err.value.code, err.value.path) == ("zone_too_complex", ["radius_m"])


@pytest.mark.parametrize("index", range(len(ZONES)))
def test_zones_within_the_limit_get_their_whole_cover(index: int) -> None:
    full = cover_zone(ZONES[index], 9)
    assert cover_zone(ZONES[index], 9, max_cells=len(full)) == full
