"""Property tests: ZoneIndex.shops_delivering_to equals brute-force shapely `covers`.

Scenes mix star polygons, polygons with holes, MultiPolygons, thin slivers and families of
near-identical zones (whose boundaries share cells, so edge cells get rasters), in a few
places on earth (high latitude, the equator, next to the antimeridian). Points sit exactly on
vertices, on edges (interpolated along a segment), 1e-9 degrees off either, and anywhere.
"""

from __future__ import annotations

import math
import random
from typing import Any

import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geo import ZoneIndex, parse_zone
from tests.geo.shapes import polygon, star_ring, unprepared

PLACES = [
    (2.35, 48.85),
    (0.0, 0.0),
    (-70.65, -33.45),
    (151.2, -33.87),
    (18.95, 69.65),
    (25.0, 84.0),
    (179.97, -16.8),
]
SIZES = [3e-4, 1.5e-3, 5e-3, 1e-2]  # zone radius in degrees; a res-9 cell is ~3e-3 wide
NUDGES = [0.0, 1e-9, -1e-9]

PROPERTY_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def make_zone(kind: str, lng: float, lat: float, size: float, rnd: random.Random) -> list[Any]:
    """GeoJSON zones of one kind around (lng, lat)."""
    if kind == "star":
        return [polygon(star_ring(lng, lat, size, rnd.randint(3, 24), rnd))]
    if kind == "holes":
        # Shell radii >= 0.6 size with angular gaps <= 1.6 x 360/8 degrees keep every edge
        # beyond 0.6 x cos(72) size > 0.18 size from the centre; holes stay inside that.
        shell = star_ring(lng, lat, size, rnd.randint(8, 20), rnd, inner=0.6)
        hole_a = star_ring(lng + 0.07 * size, lat, 0.05 * size, rnd.randint(3, 8), rnd)
        hole_b = star_ring(lng - 0.07 * size, lat, 0.05 * size, rnd.randint(3, 8), rnd)
        return [polygon(shell, hole_a[::-1], hole_b)]
    if kind == "multi":
        parts = [
            [star_ring(lng, lat, size, rnd.randint(8, 16), rnd, inner=0.6)],
            [star_ring(lng + 2.5 * size, lat, 0.5 * size, rnd.randint(3, 9), rnd)],
        ]
        # A third part touching the second one's extreme vertex at a single point.
        tip = max(parts[1][0], key=lambda p: p[0])
        parts.append([[tip, [tip[0] + size, tip[1]], [tip[0] + size, tip[1] + size], tip]])
        return [{"type": "MultiPolygon", "coordinates": parts}]
    if kind == "sliver":
        angle = rnd.uniform(0, math.pi)
        dx, dy = size * math.cos(angle), size * math.sin(angle)
        width = rnd.choice([1e-9, 1e-8, 1e-7, 1e-6])
        mid = [lng - dy * width / size, lat + dx * width / size]
        return [polygon([[lng - dx, lat - dy], [lng + dx, lat + dy], mid, [lng - dx, lat - dy]])]
    # family: five scaled copies of one star, boundaries crossing the same cells
    base = star_ring(lng, lat, size, rnd.randint(5, 30), rnd)
    return [
        polygon([[lng + (x - lng) * s, lat + (y - lat) * s] for x, y in base])
        for s in (1.0, 0.97, 1.02, 0.95, 1.05)
    ]


@st.composite
def scenes(draw: st.DrawFn) -> tuple[list[Any], list[tuple[float, float]]]:
    place_lng, place_lat = draw(st.sampled_from(PLACES))
    size = draw(st.sampled_from(SIZES))
    kinds = draw(
        st.lists(st.sampled_from(["star", "holes", "multi", "sliver", "family"]), min_size=1, max_size=4)
    )
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    zones: list[Any] = []
    for kind in kinds:
        lng = place_lng + rnd.uniform(-size, size)
        lat = place_lat + rnd.uniform(-size, size)
        zones.extend(parse_zone(west_of_180(obj)) for obj in make_zone(kind, lng, lat, size, rnd))
    return zones, points_for(zones, rnd)


def west_of_180(obj: dict[str, Any]) -> dict[str, Any]:
    """Shift a zone that pokes past the antimeridian west, so that it just touches it."""
    polygons = [obj["coordinates"]] if obj["type"] == "Polygon" else obj["coordinates"]
    excess = max(p[0] for poly in polygons for ring in poly for p in ring) - 180.0
    if excess <= 0:
        return obj
    shifted = [[[[min(x - excess, 180.0), y] for x, y in ring] for ring in poly] for poly in polygons]
    if obj["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": shifted[0]}
    return {"type": "MultiPolygon", "coordinates": shifted}


def points_for(zones: list[Any], rnd: random.Random) -> list[tuple[float, float]]:
    """(lat, lng) points: on and next to vertices and edges of the zones, and at random."""
    points = []
    for zone in zones:
        rings = shapely.get_rings(shapely.get_parts(zone.geometry))
        coords = shapely.get_coordinates(rings).tolist()
        for _ in range(12):
            k = rnd.randrange(len(coords) - 1)
            (ax, ay), (bx, by) = coords[k], coords[k + 1]
            t = rnd.choice([0.0, 0.5, rnd.random()])
            x, y = ax + t * (bx - ax), ay + t * (by - ay)
            points.append((y + rnd.choice(NUDGES), x + rnd.choice(NUDGES)))
        minx, miny, maxx, maxy = zone.geometry.bounds
        points.extend((rnd.uniform(miny, maxy), rnd.uniform(minx, maxx)) for _ in range(6))
    return [(lat, lng) for lat, lng in points if -180.0 <= lng <= 180.0]


@PROPERTY_SETTINGS
@given(scenes())
def test_index_equals_brute_force_covers(scene: tuple[list[Any], list[tuple[float, float]]]) -> None:
    zones, points = scene
    index = ZoneIndex()
    oracle = {}
    for i, zone in enumerate(zones):
        index.set_zone(f"z{i}", zone)
        oracle[f"z{i}"] = unprepared(zone.geometry)
    disagreements = []
    for lat, lng in points:
        point = shapely.Point(lng, lat)
        expected = {shop for shop, geometry in oracle.items() if geometry.covers(point)}
        got = index.shops_delivering_to(lat, lng)
        if set(got) != expected or len(got) != len(expected):
            disagreements.append((lat, lng, sorted(got), sorted(expected)))
    assert disagreements == []


@PROPERTY_SETTINGS
@given(scenes(), st.data())
def test_incremental_updates_equal_a_fresh_index(
    scene: tuple[list[Any], list[tuple[float, float]]], data: st.DataObject
) -> None:
    zones, points = scene
    index = ZoneIndex()
    live: dict[str, Any] = {}
    shops = [f"s{i}" for i in range(4)]
    for step in range(data.draw(st.integers(1, 8))):
        shop = data.draw(st.sampled_from(shops))
        if data.draw(st.booleans()):
            zone = zones[step % len(zones)]
            index.set_zone(shop, zone)
            live[shop] = unprepared(zone.geometry)
        else:
            index.remove(shop)
            live.pop(shop, None)
        for lat, lng in points[step::5]:  # queries in between compile cells mid-sequence
            point = shapely.Point(lng, lat)
            expected = {s for s, geometry in live.items() if geometry.covers(point)}
            assert set(index.shops_delivering_to(lat, lng)) == expected
    assert len(index) == len(live)
