"""Route timing (the replay's exact semantics), stop ordering, ETA pushes."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.core.routes import (
    Point,
    Route,
    ServiceTimes,
    Stop,
    StopTiming,
    build_route,
    eta_changes,
    remaining_route,
    route_options,
    simulate,
)

SERVICE = ServiceTimes(pickup_minutes=4, dropoff_minutes=6)


def grid_minutes(a: Point, b: Point) -> float:
    """The replay's travel model: euclidean distance over speed, rounded up (speed 1 here)."""
    return math.ceil(math.dist(a, b))


def pickup(name: str, at: Point, ready: float | None = None) -> Stop:
    return Stop("pickup", at, (name,), shop_id=f"shop-{name}", ready_at=ready, items=1)


def dropoff(name: str, at: Point) -> Stop:
    return Stop("dropoff", at, (name,), order_id=f"order-{name}", items=1)


def brute_force_finish(start: Point, start_time: float, pickups: list[Stop], dropoffs: list[Stop]) -> float:
    return min(
        simulate(start, start_time, p + d, grid_minutes, SERVICE)[-1].service_at
        for p in itertools.permutations(pickups)
        for d in itertools.permutations(dropoffs)
    )


def test_pickup_waits_for_ready_time_and_service_is_split_in_halves() -> None:
    shop, door = pickup("a", (3, 4), ready=110), dropoff("a", (3, 10))
    first, second = simulate((0, 0), 100, [shop, door], grid_minutes, SERVICE)
    assert (first.arrival, first.service_at, first.departure) == (105, 110, 112)
    assert (second.arrival, second.service_at, second.departure) == (118, 121, 124)


def test_pickup_of_a_ready_job_happens_half_a_service_after_arrival() -> None:
    for ready in (90, None, 107):
        (timing,) = simulate((0, 0), 100, [pickup("a", (3, 4), ready)], grid_minutes, SERVICE)
        assert (timing.arrival, timing.service_at, timing.departure) == (105, 107, 109)


def test_no_stops_no_timings() -> None:
    assert simulate((0, 0), 5, [], grid_minutes, SERVICE) == ()
    assert build_route((0, 0), 5, [], [], grid_minutes, SERVICE).finish == 5


points = st.tuples(st.integers(0, 30), st.integers(0, 30)).map(lambda p: (float(p[0]), float(p[1])))


@st.composite
def route_cases(
    draw: st.DrawFn, max_pickups: int = 4, max_dropoffs: int = 3
) -> tuple[Point, float, list[Stop], list[Stop]]:
    n_pickups = draw(st.integers(1, max_pickups))
    n_dropoffs = draw(st.integers(1, max_dropoffs))
    ready = st.none() | st.integers(0, 80).map(float)
    pickups = [pickup(f"p{i}", draw(points), draw(ready)) for i in range(n_pickups)]
    dropoffs = [dropoff(f"d{i}", draw(points)) for i in range(n_dropoffs)]
    return draw(points), float(draw(st.integers(0, 40))), pickups, dropoffs


@settings(max_examples=60, deadline=None)
@given(route_cases())
def test_build_route_finds_the_best_order(case: tuple[Point, float, list[Stop], list[Stop]]) -> None:
    start, start_time, pickups, dropoffs = case
    plan = build_route(start, start_time, pickups, dropoffs, grid_minutes, SERVICE)
    assert plan.finish == brute_force_finish(start, start_time, pickups, dropoffs)
    assert plan.stops[: len(pickups)] in set(itertools.permutations(pickups))
    assert plan.stops[len(pickups) :] in set(itertools.permutations(dropoffs))
    assert plan.timings == simulate(start, start_time, plan.stops, grid_minutes, SERVICE)


@settings(max_examples=60, deadline=None)
@given(route_cases(max_pickups=6, max_dropoffs=6), points, st.floats(0, 100))
def test_closed_form_of_each_option_matches_simulation(
    case: tuple[Point, float, list[Stop], list[Stop]], start: Point, start_time: float
) -> None:
    _, _, pickups, dropoffs = case

    def euclid(a: Point, b: Point) -> float:  # fractional minutes too
        return math.dist(a, b) / 1.7

    for option in route_options(pickups, dropoffs, euclid, SERVICE):
        timings = simulate(start, start_time, option.stops, euclid, SERVICE)
        arrival = start_time + euclid(start, option.first_pickup)
        last_pickup = timings[len(pickups) - 1]
        assert last_pickup.service_at == pytest.approx(option.last_pickup_at(arrival), abs=1e-9)
        assert timings[-1].service_at == pytest.approx(option.finish(arrival), abs=1e-9)


def test_up_to_four_stops_every_order_is_tried() -> None:
    # Nearest first would go 1, -2, 4 (10 minutes of driving); -2, 1, 4 takes 8.
    line = [(1.0, 0.0), (-2.0, 0.0), (4.0, 0.0)]
    dropoffs = [dropoff(f"d{i}", at) for i, at in enumerate(line)]
    plan = build_route((0, 0), 0, [], dropoffs, grid_minutes, SERVICE)
    assert [stop.location[0] for stop in plan.stops] == [-2, 1, 4]
    pickups = [pickup(f"p{i}", at) for i, at in enumerate(line)]
    plan = build_route((0, 0), 0, pickups, [dropoff("d", (4.0, 0.0))], grid_minutes, SERVICE)
    assert [stop.location[0] for stop in plan.stops[:3]] == [-2, 1, 4]


def test_many_stops_fall_back_to_nearest_neighbour() -> None:
    pickups = [pickup(f"p{x}", (float(x), 0.0)) for x in (3, 1, 5, 2, 4)]
    dropoffs = [dropoff(f"d{x}", (float(x), 0.0)) for x in (9, 7, 11, 6, 10, 8)]
    plan = build_route((0, 0), 0, pickups, dropoffs, grid_minutes, SERVICE)
    assert [stop.location[0] for stop in plan.stops] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]


def test_many_pickups_pick_the_best_nearest_neighbour_start() -> None:
    # Nearest-first from the start would go to x=1 then x=-1: the chain from x=-1 is better.
    pickups = [pickup(f"p{x}", (float(x), 0.0)) for x in (1, -1, 10, 20, 30)]
    plan = build_route((0, 0), 0, pickups, [dropoff("d", (30.0, 0.0))], grid_minutes, SERVICE)
    assert [stop.location[0] for stop in plan.stops[:5]] == [-1, 1, 10, 20, 30]


def test_dropoffs_only_route_takes_the_shortest_order() -> None:
    dropoffs = [dropoff("far", (10.0, 0.0)), dropoff("near", (2.0, 0.0))]
    plan = build_route((0, 0), 0, [], dropoffs, grid_minutes, SERVICE)
    assert [stop.job_ids for stop in plan.stops] == [("near",), ("far",)]
    assert plan.finish == 2 + 3 + 3 + 8 + 3


def timing(stop: Stop, arrival: float, service_at: float) -> StopTiming:
    return StopTiming(stop, arrival, service_at, service_at + 1)


def test_eta_changes_reports_moves_beyond_the_threshold_and_new_stops() -> None:
    done, same, nudged, moved, late = (dropoff(n, (0, 0)) for n in "abcde")
    added = dropoff("f", (1, 1))
    old = [timing(done, 0, 1), timing(same, 5, 6), timing(nudged, 10, 11), timing(moved, 20, 21)]
    old.append(timing(late, 30, 31))
    new = [timing(same, 5.5, 6.5), timing(nudged, 11, 12), timing(moved, 21.5, 22.5)]
    new += [timing(late, 30, 33), timing(added, 40, 41)]
    changed = eta_changes(old, new)
    assert [t.stop for t in changed] == [moved, late, added]
    assert [t.stop for t in eta_changes(old, new, threshold_minutes=0.25)] == [
        same,
        nudged,
        moved,
        late,
        added,
    ]


def test_remaining_route_drops_completed_stops() -> None:
    stops = (pickup("a", (0, 0)), dropoff("a", (1, 1)))
    route = Route("c1", stops)
    assert remaining_route(route, 0) == route
    assert remaining_route(route, 1) == Route("c1", stops[1:])
    assert remaining_route(route, 2).stops == ()
    with pytest.raises(ValueError, match="3 stops completed"):
        remaining_route(route, 3)
