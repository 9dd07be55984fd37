"""synthetic_city / random_points: deterministic, valid, realistic mix."""

from __future__ import annotations

import collections

import pytest

from geo import haversine_m, parse_zone, random_points, synthetic_city


def test_same_seed_same_city_other_seed_other_city() -> None:
    assert synthetic_city(50, seed=1) == synthetic_city(50, seed=1)
    assert synthetic_city(50, seed=1) != synthetic_city(50, seed=2)
    assert random_points(20, seed=3) == random_points(20, seed=3)
    assert random_points(20, seed=3) != random_points(20, seed=4)


def test_city_mix_is_valid_and_in_the_area() -> None:
    origin = (52.52, 13.405)
    city = synthetic_city(400, seed=9, size_km=20.0, origin=origin)
    assert len({shop.shop_id for shop in city}) == 400
    kinds: collections.Counter[str] = collections.Counter()
    for shop in city:
        zone = parse_zone(shop.zone)  # every zone passes the default limits
        kind = shop.zone["type"]
        if kind == "Polygon" and len(shop.zone["coordinates"]) > 1:
            kind = "Polygon with hole"
        kinds[kind] += 1
        assert 0.5**2 * 0.3 < zone.area_km2 < 3.1**2 * 3.2
        assert zone.geometry.covers(zone.geometry.representative_point())
        # Shops lie in the square (±10 km of the origin along each axis).
        assert haversine_m(origin[0], origin[1], shop.lat, origin[1]) <= 10_001
        assert haversine_m(origin[0], origin[1], origin[0], shop.lng) <= 10_001
    assert kinds["Circle"] == pytest.approx(160, abs=40)
    assert kinds["Polygon"] == pytest.approx(180, abs=40)
    assert kinds["Polygon with hole"] == pytest.approx(40, abs=20)
    assert kinds["MultiPolygon"] == pytest.approx(20, abs=15)


def test_random_points_cover_the_square() -> None:
    points = random_points(2000, seed=5, size_km=10.0, origin=(0.0, 0.0))
    lats = [lat for lat, _ in points]
    lngs = [lng for _, lng in points]
    half = 5000 / 111_195.08
    assert -half <= min(lats) < -0.9 * half and 0.9 * half < max(lats) <= half
    assert -half <= min(lngs) < -0.9 * half and 0.9 * half < max(lngs) <= half
