"""ZoneIndex: add / replace / remove, stored covers, a dense city against brute force,
nearest_shops against brute force."""

from __future__ import annotations

import math
import random
from typing import Any

import h3.api.basic_int as h3
import pytest
import shapely

import geo.index
from geo import (
    CoordinateError,
    Cover,
    GeoError,
    ZoneIndex,
    cover_zone,
    haversine_m,
    parse_zone,
    random_points,
    synthetic_city,
)
from geo.cells import G
from tests.geo.shapes import unprepared


def circle(lng: float, lat: float, radius_m: float) -> Any:
    return parse_zone({"type": "Circle", "center": [lng, lat], "radius_m": radius_m})


A = circle(2.35, 48.85, 1000)
B = circle(2.36, 48.85, 1000)


def brute(zones: dict[str, Any], lat: float, lng: float) -> set[str]:
    point = shapely.Point(lng, lat)
    return {shop for shop, geometry in zones.items() if geometry.covers(point)}


def test_add_replace_remove() -> None:
    index = ZoneIndex()
    assert len(index) == 0 and "a" not in index
    cover = index.set_zone("a", A, location=(48.85, 2.35))
    index.set_zone("b", B.geometry)
    assert len(index) == 2 and "a" in index and "b" in index
    assert cover == cover_zone(A) == index.cover_of("a")
    assert index.cell_count("a") == len(cover) > 0
    assert index.zone_of("b") is B.geometry
    assert index.location_of("a") == (48.85, 2.35)
    both = (48.85, 2.355)  # between the centres, inside both circles
    assert sorted(index.shops_delivering_to(*both)) == ["a", "b"]
    assert index.shops_delivering_to(48.85, 2.34) == ["a"]
    # Replace a's zone with one far away: the old cells forget it.
    index.set_zone("a", circle(2.45, 48.85, 500))
    assert index.shops_delivering_to(*both) == ["b"]
    assert index.shops_delivering_to(48.85, 2.45) == ["a"]
    assert index.remove("a") is True
    assert index.remove("a") is False
    assert "a" not in index and len(index) == 1
    assert index.shops_delivering_to(48.85, 2.45) == []
    assert index.location_of("a") is None
    with pytest.raises(KeyError):
        index.zone_of("a")
    index.remove("b")
    assert index.shops_delivering_to(*both) == []


def test_replace_before_any_query_and_slot_reuse() -> None:
    index = ZoneIndex()
    for shop in ("a", "b", "c"):
        index.set_zone(shop, A)
    index.set_zone("b", B)  # still queued: the queued cover is dropped, not merged
    index.remove("c")
    index.set_zone("d", B)  # reuses c's slot
    assert sorted(index.shops_delivering_to(48.85, 2.365)) == ["b", "d"]
    assert sorted(index.shops_delivering_to(48.85, 2.34)) == ["a"]
    index.warm()
    index.set_zone("a", B)  # replaces after compilation
    assert sorted(index.shops_delivering_to(48.85, 2.365)) == ["a", "b", "d"]
    assert index.shops_delivering_to(48.85, 2.34) == []


def test_stored_covers_are_used_not_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    covers = {shop: cover_zone(zone) for shop, zone in (("a", A), ("b", B))}

    def fail(*args: object) -> None:
        raise AssertionError("cover recomputed")

    monkeypatch.setattr(geo.index, "cover_zone", fail)
    index = ZoneIndex()
    for shop, zone in (("a", A), ("b", B)):
        stored = Cover(frozenset(covers[shop].interior), frozenset(covers[shop].edge), 9)
        index.set_zone(shop, shapely.from_wkb(shapely.to_wkb(zone.geometry)), stored)
    assert sorted(index.shops_delivering_to(48.85, 2.355)) == ["a", "b"]
    with pytest.raises(AssertionError, match="recomputed"):
        index.set_zone("c", A)


def test_bad_arguments() -> None:
    index = ZoneIndex()
    with pytest.raises(GeoError, match="resolution"):
        index.set_zone("a", A, cover_zone(A, 10))
    with pytest.raises(GeoError, match="Polygon"):
        index.set_zone("a", shapely.Point(0, 0))
    with pytest.raises(CoordinateError):
        index.set_zone("a", A, location=(91.0, 0.0))
    assert "a" not in index
    for lat, lng in ((math.nan, 0.0), (0.0, math.inf), (90.5, 0.0), (0.0, -180.5)):
        with pytest.raises(CoordinateError):
            index.shops_delivering_to(lat, lng)
        with pytest.raises(CoordinateError):
            index.nearest_shops(lat, lng, 3, 1000)
    with pytest.raises(ValueError, match="resolution"):
        ZoneIndex(resolution=2)


def test_empty_places_do_not_grow_the_index() -> None:
    index = ZoneIndex()
    index.set_zone("a", A)
    for lat, lng in random_points(200, seed=5, origin=(10.0, 10.0)):
        assert index.shops_delivering_to(lat, lng) == []
    before = index.memory_bytes()
    for lat, lng in random_points(200, seed=6, origin=(-10.0, 10.0)):
        index.shops_delivering_to(lat, lng)
    assert index.memory_bytes() == before


def test_dense_city_matches_brute_force() -> None:
    # 400 shops in a 10 km square: as dense as the 5,000-shop benchmark city, so edge
    # cells get rasters.
    city = synthetic_city(400, seed=11, size_km=10.0)
    index = ZoneIndex()
    zones = {}
    for shop in city:
        zone = parse_zone(shop.zone)
        index.set_zone(shop.shop_id, zone, location=(shop.lat, shop.lng))
        zones[shop.shop_id] = unprepared(zone.geometry)
    points = random_points(3000, seed=12, size_km=12.0)
    rasters = 0
    for lat, lng in points:
        got = index.shops_delivering_to(lat, lng)
        assert len(got) == len(set(got))
        assert set(got) == brute(zones, lat, lng), (lat, lng)
        entry = index._compiled.get(h3.latlng_to_cell(lat, lng, 9))
        rasters += entry is not None and entry[1] is not None
    assert rasters > 1000
    assert index.memory_bytes() > 0


def test_points_on_raster_square_borders() -> None:
    city = synthetic_city(150, seed=13, size_km=4.0)
    index = ZoneIndex()
    zones = {}
    for shop in city:
        zone = parse_zone(shop.zone)
        index.set_zone(shop.shop_id, zone)
        zones[shop.shop_id] = unprepared(zone.geometry)
    index.warm()
    rnd = random.Random(14)
    rasters = [(c, e[1]) for c, e in index._compiled.items() if e[1] is not None]
    assert rasters
    for _cell, (x0, y0, sx, sy, *_) in rnd.sample(rasters, 40):
        for i in range(G + 1):
            for j in range(G + 1):
                lng, lat = x0 + i / sx, y0 + j / sy
                assert set(index.shops_delivering_to(lat, lng)) == brute(zones, lat, lng)


def test_nearest_shops_against_brute_force() -> None:
    city = synthetic_city(600, seed=21, size_km=20.0)
    index = ZoneIndex()
    for shop in city:
        index.set_location(shop.shop_id, shop.lat, shop.lng)
    # Two shops at one spot: ties are broken by id.
    index.set_location("twin-b", city[0].lat, city[0].lng)
    index.set_location("twin-a", city[0].lat, city[0].lng)
    located = {s.shop_id: (s.lat, s.lng) for s in city}
    located["twin-a"] = located["twin-b"] = (city[0].lat, city[0].lng)
    rnd = random.Random(22)
    queries = [*random_points(150, seed=23, size_km=26.0), (city[0].lat, city[0].lng)]
    for lat, lng in queries:
        k = rnd.choice([1, 3, 10, 50])
        limit = rnd.choice([300.0, 1500.0, 5000.0, 1e9])
        expected = sorted(
            (d, shop)
            for shop, (slat, slng) in located.items()
            if (d := haversine_m(lat, lng, slat, slng)) <= limit
        )[:k]
        got = index.nearest_shops(lat, lng, k, limit)
        assert [shop for shop, _ in got] == [shop for _, shop in expected]
        assert [d for _, d in got] == pytest.approx([d for d, _ in expected])
    assert index.nearest_shops(city[0].lat, city[0].lng, 0, 1000) == []
    at_zero = index.nearest_shops(city[0].lat, city[0].lng, 5, 0)
    assert at_zero == [("shop-00000", 0.0), ("twin-a", 0.0), ("twin-b", 0.0)]


def test_nearest_shops_moves_and_removals_and_sparse_world() -> None:
    index = ZoneIndex()
    assert index.nearest_shops(0, 0, 5, 1e12) == []  # no shops: no endless ring walk
    index.set_location("far", -33.9, 151.2)  # Sydney
    index.set_location("near", 48.86, 2.35)
    assert [s for s, _ in index.nearest_shops(48.85, 2.35, 5, 20_000_000)] == ["near", "far"]
    index.set_location("near", 48.9, 2.35)  # moved
    ((shop, dist),) = index.nearest_shops(48.85, 2.35, 1, 10_000)
    assert shop == "near" and dist == pytest.approx(haversine_m(48.85, 2.35, 48.9, 2.35))
    index.remove("near")
    assert index.nearest_shops(48.85, 2.35, 1, 10_000) == []
    assert len(index) == 1


def test_zone_and_location_count_once() -> None:
    index = ZoneIndex()
    index.set_zone("a", A, location=(48.85, 2.35))
    index.set_location("b", 48.0, 2.0)
    assert len(index) == 2
    assert "b" in index
    with pytest.raises(KeyError):
        index.cell_count("b")


def test_multipolygon_with_hole_in_index() -> None:
    outer = [[0.0, 0.0], [0.02, 0.0], [0.02, 0.02], [0.0, 0.02], [0.0, 0.0]]
    hole = [[0.005, 0.005], [0.015, 0.005], [0.015, 0.015], [0.005, 0.015], [0.005, 0.005]]
    zone = parse_zone(
        {"type": "MultiPolygon", "coordinates": [[outer, hole], [[[p[0] + 1, p[1]] for p in outer]]]}
    )
    index = ZoneIndex()
    index.set_zone("z", zone)
    assert index.shops_delivering_to(0.01, 0.01) == []  # in the hole
    assert index.shops_delivering_to(0.005, 0.01) == ["z"]  # on the hole's ring
    assert index.shops_delivering_to(0.002, 0.002) == ["z"]
    assert index.shops_delivering_to(0.01, 1.01) == ["z"]
    assert index.shops_delivering_to(0.0, 0.0) == ["z"]  # a vertex
    assert index.shops_delivering_to(-1e-12, 0.0) == []


def test_nearest_of_given_shops_against_brute_force() -> None:
    """An order's candidate shops: the k nearest of those delivering to its door, ties by id, shops
    without a location last."""
    city = synthetic_city(300, seed=31, size_km=10.0)
    index = ZoneIndex()
    for shop in city:
        index.set_location(shop.shop_id, shop.lat, shop.lng)
    index.set_location("twin-b", city[0].lat, city[0].lng)
    index.set_location("twin-a", city[0].lat, city[0].lng)
    located = {s.shop_id: (s.lat, s.lng) for s in city}
    located["twin-a"] = located["twin-b"] = (city[0].lat, city[0].lng)
    rnd = random.Random(32)
    for lat, lng in [*random_points(80, seed=33, size_km=12.0), (city[0].lat, city[0].lng)]:
        given = rnd.sample(sorted(located), rnd.choice([0, 1, 5, 40, 200]))
        given += rnd.sample(["nowhere-1", "nowhere-2"], rnd.choice([0, 1, 2]))
        k = rnd.choice([1, 3, 30, 300])
        expected = sorted((haversine_m(lat, lng, *located[s]), s) for s in given if s in located)
        want = [s for _, s in expected] + sorted(s for s in given if s not in located)
        assert index.nearest_of(lat, lng, given, k) == want[:k]
    # A tie at the cut goes to the smaller id.
    assert index.nearest_of(city[0].lat, city[0].lng, ["twin-b", "twin-a"], 1) == ["twin-a"]
    assert index.nearest_of(city[0].lat, city[0].lng, ["twin-b"], 0) == []
    # Shops that move, leave and come back are measured where they are now.
    for shop in rnd.sample(city, 60):
        index.remove(shop.shop_id)
        del located[shop.shop_id]
    for shop in rnd.sample([s for s in city if s.shop_id in located], 60):
        lat, lng = random_points(1, seed=rnd.randrange(10**6), size_km=12.0)[0]
        index.set_location(shop.shop_id, lat, lng)
        located[shop.shop_id] = (lat, lng)
    for n in range(100):  # more than the rows freed: the location arrays grow
        lat, lng = random_points(1, seed=1000 + n, size_km=12.0)[0]
        index.set_location(f"new-{n}", lat, lng)
        located[f"new-{n}"] = (lat, lng)
    everyone = sorted(located) + [s.shop_id for s in city if s.shop_id not in located]
    for lat, lng in random_points(40, seed=34, size_km=12.0):
        given = rnd.sample(everyone, rnd.choice([1, 40, 300]))
        expected = sorted((haversine_m(lat, lng, *located[s]), s) for s in given if s in located)
        want = [s for _, s in expected] + sorted(s for s in given if s not in located)
        assert index.nearest_of(lat, lng, given, 30) == want[:30]
