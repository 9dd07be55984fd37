"""haversine_m, destination and TravelModel."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from geo import EARTH_RADIUS_M, TravelModel, destination, haversine_m

DEGREE_M = EARTH_RADIUS_M * math.pi / 180  # 111,195.08 m on the mean sphere


def test_haversine_known_distances() -> None:
    assert haversine_m(0, 0, 0, 0) == 0.0
    assert haversine_m(0, 0, 1, 0) == pytest.approx(DEGREE_M, rel=1e-12)
    assert haversine_m(0, 0, 0, 1) == pytest.approx(DEGREE_M, rel=1e-12)
    assert haversine_m(60, 0, 60, 1) == pytest.approx(
        2 * EARTH_RADIUS_M * math.asin(math.cos(math.radians(60)) * math.sin(math.radians(0.5)))
    )
    assert haversine_m(0, 0, 0, 180) == pytest.approx(math.pi * EARTH_RADIUS_M)
    assert haversine_m(90, 0, -90, 0) == pytest.approx(math.pi * EARTH_RADIUS_M)
    # Paris (Notre-Dame) to London (Trafalgar Square): ~343.5 km great-circle.
    assert haversine_m(48.8530, 2.3499, 51.5080, -0.1281) == pytest.approx(343_500, rel=0.005)
    # Across the antimeridian it takes the short way.
    assert haversine_m(0, 179.5, 0, -179.5) == pytest.approx(DEGREE_M, rel=1e-9)


def test_haversine_is_symmetric() -> None:
    assert haversine_m(48.1, 11.5, 52.5, 13.4) == haversine_m(52.5, 13.4, 48.1, 11.5)


def test_destination_round_trips() -> None:
    for bearing in (0, 45, 90, 180, 270, 333):
        lat, lng = destination(48.85, 2.35, bearing, 1234.5)
        assert haversine_m(48.85, 2.35, lat, lng) == pytest.approx(1234.5, abs=1e-6)
    lat, lng = destination(10, 20, 0, DEGREE_M)
    assert lat == pytest.approx(11) and lng == pytest.approx(20)


def test_travel_model_defaults() -> None:
    model = TravelModel()
    # 1 degree of latitude: 111,195 m x 1.3 / 250 m/min.
    assert model.minutes(0, 0, 1, 0) == pytest.approx(DEGREE_M * 1.3 / 250)
    assert model.minutes(5, 5, 5, 5) == 0.0


def test_travel_model_parameters() -> None:
    replay = TravelModel(speed_m_per_min=500, detour_factor=1.0, service_minutes=2.0)
    assert replay.minutes(0, 0, 1, 0) == pytest.approx(DEGREE_M / 500 + 2.0)
    assert replay.minutes_for_distance(1000) == pytest.approx(4.0)
    rounded = TravelModel(speed_m_per_min=300, detour_factor=1.0, round_up=True)
    assert rounded.minutes_for_distance(301) == 2.0
    assert rounded.minutes_for_distance(300) == 1.0
    assert rounded.minutes_for_distance(0) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"speed_m_per_min": 0},
        {"speed_m_per_min": -1},
        {"speed_m_per_min": math.inf},
        {"detour_factor": 0},
        {"detour_factor": math.nan},
        {"service_minutes": -0.5},
    ],
)
def test_travel_model_rejects_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TravelModel(**kwargs)


@pytest.mark.parametrize(
    "model",
    [TravelModel(), TravelModel(speed_m_per_min=90.0, detour_factor=1.0, service_minutes=2.5, round_up=True)],
)
def test_travel_minutes_to_many_points_are_those_to_each(model: TravelModel) -> None:
    rnd = random.Random(7)
    points = [(45.7 + rnd.uniform(-0.1, 0.1), 4.8 + rnd.uniform(-0.1, 0.1)) for _ in range(50)]
    lats = np.array([p[0] for p in points])
    lngs = np.array([p[1] for p in points])
    many = model.minutes_array(45.76, 4.83, lats, lngs).tolist()
    each = [model.minutes(45.76, 4.83, lat, lng) for lat, lng in points]
    assert many == pytest.approx(each, rel=1e-12, abs=1e-9)
    if model.round_up:
        assert all(m == math.ceil(m) for m in many)
