from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.replay.mapping import EARTH_RADIUS_M, PlaneMapping, haversine_m, relative_error_bound

RADIUS = 30_000.0  # metres around the origin that an instance may span

origins = st.builds(
    PlaneMapping,
    origin_lat=st.floats(-70, 70),
    origin_lng=st.floats(-180, 180),
    origin_x=st.floats(-1e6, 1e6),
    origin_y=st.floats(-1e6, 1e7),
)
offsets = st.tuples(st.floats(0, RADIUS), st.floats(0, 2 * math.pi))


def _point(mapping: PlaneMapping, offset: tuple[float, float]) -> tuple[float, float]:
    r, angle = offset
    return mapping.origin_x + r * math.cos(angle), mapping.origin_y + r * math.sin(angle)


@settings(max_examples=300)
@given(origins, offsets)
def test_round_trip(mapping: PlaneMapping, offset: tuple[float, float]) -> None:
    x, y = _point(mapping, offset)
    back = mapping.to_xy(*mapping.to_latlng(x, y))
    assert math.dist(back, (x, y)) < 1e-6


@settings(max_examples=300)
@given(origins, offsets, offsets)
def test_haversine_matches_euclidean(
    mapping: PlaneMapping, a: tuple[float, float], b: tuple[float, float]
) -> None:
    pa, pb = _point(mapping, a), _point(mapping, b)
    euclid = math.dist(pa, pb)
    great_circle = haversine_m(*mapping.to_latlng(*pa), *mapping.to_latlng(*pb))
    # The documented bound (3.7e-6 at 30 km), far inside the 0.1% the replay needs; the
    # absolute term covers rounding for points a few millimetres apart.
    assert relative_error_bound(RADIUS) < 1e-5
    assert abs(great_circle - euclid) <= relative_error_bound(RADIUS) * euclid + 1e-6


def test_origin_and_directions() -> None:
    m = PlaneMapping(48.85, 2.35, origin_x=500_000, origin_y=5_400_000)
    assert m.to_latlng(500_000, 5_400_000) == pytest.approx((48.85, 2.35), abs=1e-12)
    lat, lng = m.to_latlng(500_000, 5_401_000)  # 1 km north
    assert lat == pytest.approx(48.85 + math.degrees(1000 / EARTH_RADIUS_M), abs=1e-9)
    assert lng == pytest.approx(2.35, abs=1e-12)
    lat, lng = m.to_latlng(501_000, 5_400_000)  # 1 km east
    assert lng > 2.35
    assert haversine_m(48.85, 2.35, lat, lng) == pytest.approx(1000, abs=1e-6)


def test_haversine_known_distance() -> None:
    # One degree of a great circle on the mean earth sphere.
    assert haversine_m(0, 0, 0, 1) == pytest.approx(EARTH_RADIUS_M * math.pi / 180, rel=1e-12)
    assert haversine_m(10, 20, 10, 20) == 0


def test_error_bound_grows_with_the_square_of_the_radius() -> None:
    assert relative_error_bound(0) == 0
    assert relative_error_bound(30_000) == pytest.approx((30_000 / EARTH_RADIUS_M) ** 2 / 6, rel=1e-3)
    assert relative_error_bound(100_000) < 1e-4


@pytest.mark.parametrize(("lat", "lng"), [(89.0, 0.0), (-86.0, 0.0), (0.0, 181.0)])
def test_rejects_origins_near_the_poles_or_off_the_globe(lat: float, lng: float) -> None:
    with pytest.raises(ValueError, match="origin"):
        PlaneMapping(lat, lng)
