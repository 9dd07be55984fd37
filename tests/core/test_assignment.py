"""Route candidates, courier scores and the round's assignment, against hand-worked cases and
brute force."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from dispatch.core.assignment import (
    Candidate,
    DispatchParams,
    Job,
    assign_round,
    make_candidate,
    nearest_idle_round,
    plan_round,
    route_candidates,
    score,
)
from dispatch.core.courier_state import CourierState, commitments, earliest_arrival, timeline
from dispatch.core.routes import Point, ServiceTimes, Stop, build_route, simulate

PARAMS = DispatchParams(
    service=ServiceTimes(4, 4),
    max_bundle_size=3,
    bundle_window_minutes=5,
    bundle_dropoff_minutes=6,
    split_slack_minutes=10,
)


def minutes(a: Point, b: Point) -> float:
    """The replay's travel model at one unit a minute, rounded up."""
    return math.ceil(math.dist(a, b))


def minutes_many(points: NDArray[np.float64], to: Point) -> NDArray[np.float64]:
    return np.ceil(np.hypot(points[:, 0] - to[0], points[:, 1] - to[1]))


def job(
    name: str,
    shop: str = "s1",
    pickup: Point = (0, 0),
    ready: float = 0,
    door: Point = (0, 10),
    order: str | None = None,
    items: int = 1,
) -> Job:
    return Job(name, order or f"o-{name}", shop, pickup, ready, door, items)


def courier(name: str, at: Point, capacity: int = 10, **kwargs: Any) -> CourierState:
    return CourierState(name, at, capacity, **kwargs)


def groups(candidates: Sequence[Candidate]) -> list[tuple[str, ...]]:
    return sorted(c.job_ids for c in candidates)


# Candidates


def test_split_order_is_one_candidate_collecting_from_each_shop() -> None:
    jobs = [
        job("a", shop="s1", pickup=(0, 0), ready=3, order="o1", items=2),
        job("b", shop="s2", pickup=(5, 0), ready=7, order="o1"),
        job("c", shop="s1", pickup=(0, 0), ready=4),  # same shop, but bundles take whole orders
    ]
    split, single = route_candidates(jobs, PARAMS, minutes)
    assert split.job_ids == ("a", "b")
    assert [(p.shop_id, p.ready_at, p.items) for p in split.pickups] == [("s1", 3, 2), ("s2", 7, 1)]
    assert [(d.order_id, d.job_ids, d.items) for d in split.dropoffs] == [("o1", ("a", "b"), 3)]
    assert [part.job_ids for part in split.parts] == [("a",), ("b",)]
    assert single.job_ids == ("c",)
    assert single.parts == ()


def test_jobs_of_one_order_must_share_the_door() -> None:
    jobs = [job("a", shop="s1", order="o1"), job("b", shop="s2", order="o1", door=(9, 9))]
    with pytest.raises(ValueError, match="different drop-offs"):
        route_candidates(jobs, PARAMS, minutes)


def test_same_shop_orders_ready_within_the_window_are_bundled() -> None:
    jobs = [job("a", ready=0), job("b", ready=5, door=(3, 10)), job("c", ready=2, door=(0, 14))]
    (bundle,) = route_candidates(jobs, PARAMS, minutes)
    assert set(bundle.job_ids) == {"a", "b", "c"}
    (shop_stop,) = bundle.pickups
    assert shop_stop.ready_at == 5  # collected at once, when the last one is ready
    assert shop_stop.items == 3
    assert sorted(d.order_id or "" for d in bundle.dropoffs) == ["o-a", "o-b", "o-c"]


def test_orders_ready_outside_the_window_are_not_bundled() -> None:
    jobs = [job("a", ready=0), job("b", ready=5.5), job("c", ready=9)]
    assert groups(route_candidates(jobs, PARAMS, minutes)) == [("a",), ("b", "c")]


def test_orders_with_far_apart_doors_are_not_bundled() -> None:
    # c is near a but not near b: every door must be near every other, not just the first.
    jobs = [job("a", door=(0, 10)), job("b", door=(0, 15)), job("c", door=(0, 5))]
    assert groups(route_candidates(jobs, PARAMS, minutes)) == [("a", "b"), ("c",)]


def test_orders_of_different_shops_are_not_bundled() -> None:
    jobs = [job("a", shop="s1"), job("b", shop="s2")]
    assert groups(route_candidates(jobs, PARAMS, minutes)) == [("a",), ("b",)]


def test_bundles_are_capped_in_orders_and_items() -> None:
    jobs = [job(name) for name in "abcd"]
    assert groups(route_candidates(jobs, PARAMS, minutes)) == [("a", "b", "c"), ("d",)]
    no_bundles = DispatchParams(service=PARAMS.service, max_bundle_size=1)
    assert len(route_candidates(jobs, no_bundles, minutes)) == 4
    heavy = [job("a", items=3), job("b", items=2), job("c", items=1)]
    capped = DispatchParams(service=PARAMS.service, max_bundle_items=4)
    assert groups(route_candidates(heavy, capped, minutes)) == [("a", "c"), ("b",)]


# Scores


def single(**kwargs: Any) -> Candidate:
    return make_candidate([job("a", **kwargs)], PARAMS, minutes)


def test_score_is_the_minute_the_last_item_reaches_the_door() -> None:
    candidate = single(pickup=(0, 10), ready=5, door=(0, 20))
    # Travel 10, pickup at max(5, 10 + 2) = 12, leave 14, door at 24, handed over at 26.
    assert score(courier("c", (0, 0)), candidate, 0, minutes, PARAMS) == 26
    # Food ready late: wait for it.
    late = single(pickup=(0, 10), ready=30, door=(0, 20))
    assert score(courier("c", (0, 0)), late, 0, minutes, PARAMS) == 30 + 2 + 10 + 2


def test_score_starts_where_and_when_the_courier_is_free() -> None:
    candidate = single(pickup=(0, 10), door=(0, 20))
    busy = courier("c", (0, 0), available_at=3, route=(Stop("dropoff", (0, 5), ("x",)),))
    # From t=3: door x at 8, served 10, leave 12; shop at 17, pickup 19, leave 21; door 31, 33.
    assert score(busy, candidate, 0, minutes, PARAMS) == 33
    assert score(busy, candidate, 50, minutes, PARAMS) == 80  # a round later: free later


def test_capacity_counts_what_is_still_on_board_when_free() -> None:
    candidate = single(items=3)
    assert score(courier("c", (0, 0), capacity=2), candidate, 0, minutes, PARAMS) is None
    assert score(courier("c", (0, 0), capacity=3), candidate, 0, minutes, PARAMS) is not None
    carrying = courier("c", (0, 0), capacity=4, load=2)
    assert score(carrying, candidate, 0, minutes, PARAMS) is None
    delivering = courier("c", (0, 0), capacity=4, load=2, route=(Stop("dropoff", (0, 3), ("x",), items=2),))
    assert score(delivering, candidate, 0, minutes, PARAMS) is not None
    collecting = courier(
        "c",
        (0, 0),
        capacity=3,
        route=(Stop("pickup", (0, 2), ("x",), items=2), Stop("dropoff", (0, 3), ("x",), items=2)),
    )
    assert score(collecting, candidate, 0, minutes, PARAMS) is not None
    assert score(collecting, single(items=4), 0, minutes, PARAMS) is None


def test_no_pickup_after_the_shift_end_but_deliveries_may_run_over() -> None:
    candidate = single(pickup=(0, 10), door=(0, 40))  # pickup at 12, delivered at 46
    assert score(courier("c", (0, 0), shift_end=11), candidate, 0, minutes, PARAMS) is None
    assert score(courier("c", (0, 0), shift_end=12), candidate, 0, minutes, PARAMS) == 46


def test_stale_or_off_shift_couriers_get_nothing() -> None:
    candidate = single()
    assert score(courier("c", (0, 0), stale=True), candidate, 0, minutes, PARAMS) is None
    assert score(courier("c", (0, 0), on_shift=False), candidate, 0, minutes, PARAMS) is None


def test_work_is_deferred_while_its_courier_would_only_wait_at_the_shop() -> None:
    candidates = route_candidates([job("a", pickup=(0, 10), ready=30, door=(0, 20))], PARAMS, minutes)
    # Arrives at 10, could pick up at 12: would wait 18 minutes for the goods.
    patient = DispatchParams(service=PARAMS.service, defer_wait_minutes=18)
    hurried = DispatchParams(service=PARAMS.service, defer_wait_minutes=17.5)
    placed = assign_round(candidates, [courier("c", (0, 0))], 0, minutes, patient)
    assert [a.courier_id for a in placed.assignments] == ["c"]
    held = assign_round(candidates, [courier("c", (0, 0))], 0, minutes, hurried)
    assert held.assignments == () and held.unassigned == tuple(candidates)
    # Once the courier has to set off, the same work is placed.
    later = assign_round(candidates, [courier("c", (0, 0))], 18, minutes, hurried)
    assert [a.score for a in later.assignments] == [30 + 2 + 10 + 2]


def test_work_is_held_only_for_waits_longer_than_a_round() -> None:
    """Held work goes at the first round after its courier must set off: a wait within one round is not worth
    holding it for (it would leave up to a round late)."""
    candidates = route_candidates([job("a", pickup=(0, 10), ready=30, door=(0, 20))], PARAMS, minutes)
    # Would wait 18 minutes at the shop: held with rounds of 17.5 minutes or less beyond the threshold of 0.
    for round_minutes, placed in ((17.5, False), (18, True)):
        params = DispatchParams(service=PARAMS.service, defer_wait_minutes=0, round_minutes=round_minutes)
        result = assign_round(candidates, [courier("c", (0, 0))], 0, minutes, params)
        assert bool(result.assignments) is placed


def test_a_courier_only_reaching_the_shop_late_is_not_deferred() -> None:
    candidates = route_candidates([job("a", pickup=(0, 10), ready=5, door=(0, 20))], PARAMS, minutes)
    strict = DispatchParams(service=PARAMS.service, defer_wait_minutes=0)
    result = assign_round(candidates, [courier("c", (0, 0))], 0, minutes, strict)
    assert [a.score for a in result.assignments] == [10 + 2 + 2 + 10 + 2]


def test_deferral_counts_waits_at_every_shop_of_a_split_order() -> None:
    jobs = [
        job("a", shop="s1", pickup=(0, 0), ready=0, order="o1"),
        job("b", shop="s2", pickup=(0, 4), ready=40, order="o1"),
    ]
    candidates = route_candidates(jobs, PARAMS, minutes)
    strict = DispatchParams(service=PARAMS.service, defer_wait_minutes=5, split_slack_minutes=1000)
    # Nothing to wait for at s1, but ~30 minutes at s2: hold it.
    assert assign_round(candidates, [courier("c", (0, 0))], 0, minutes, strict).assignments == ()
    assert len(assign_round(candidates, [courier("c", (0, 0))], 30, minutes, strict).assignments) == 1


def test_empty_leg_weight_prefers_the_courier_driving_less_for_the_same_delivery() -> None:
    candidates = route_candidates([job("a", pickup=(0, 10), ready=30, door=(0, 20))], PARAMS, minutes)
    couriers = [courier("far", (0, -10)), courier("near", (0, 9))]  # both there before the goods are ready
    weighted = DispatchParams(service=PARAMS.service, empty_leg_weight=0.5)
    (chosen,) = assign_round(candidates, couriers, 0, minutes, weighted).assignments
    assert (chosen.courier_id, chosen.score) == ("near", 44)


def test_empty_leg_weight_trades_driving_against_lateness() -> None:
    candidates = route_candidates([job("a", pickup=(0, 10), ready=0, door=(0, 20))], PARAMS, minutes)
    # quick drives 5 minutes and delivers at 21; the other is at the shop, free at 7, delivers at 23.
    couriers = [courier("quick", (0, 5)), courier("at-the-shop", (0, 10), available_at=7)]
    (plain,) = assign_round(candidates, couriers, 0, minutes, PARAMS).assignments
    assert (plain.courier_id, plain.score) == ("quick", 21)
    weighted = DispatchParams(service=PARAMS.service, empty_leg_weight=0.5)  # 5 minutes driven = 2.5 late
    (chosen,) = assign_round(candidates, couriers, 0, minutes, weighted).assignments
    assert (chosen.courier_id, chosen.score) == ("at-the-shop", 23)
    lighter = DispatchParams(service=PARAMS.service, empty_leg_weight=0.3)  # 1.5 < 2: quick again
    assert assign_round(candidates, couriers, 0, minutes, lighter).assignments[0].courier_id == "quick"


# Joining: left-over work (or, when couriers are short, work matched alone) onto a route at its shop.

JOIN = dataclasses.replace(PARAMS, join_shop_minutes=0, join_courier_weight=0)


def alone(*jobs: Job) -> list[Candidate]:
    """One candidate per job (doors too far apart for the bundler to have put them together)."""
    return [make_candidate([j], JOIN, minutes) for j in jobs]


def test_left_over_work_joins_a_route_at_its_shop_when_that_delivers_sooner() -> None:
    # One courier, two orders ready at its shop. Alone, the courier delivers one (served at 16: pickup at 2,
    # 10 minutes to the door) and comes back for the other (free at 18, +10 to the shop, pickup at 30,
    # served at 44): 16 + 44 = 60. Both on one trip: 16 and 16 + 2 + 15 + 2 = 35, 51 in all.
    candidates = alone(job("a", door=(0, 10)), job("b", door=(10, 0)))
    without = assign_round(candidates, [courier("c", (0, 0))], 0, minutes, PARAMS)
    assert len(without.assignments) == 1 and len(without.unassigned) == 1
    (joined,) = assign_round(candidates, [courier("c", (0, 0))], 0, minutes, JOIN).assignments
    assert set(joined.candidate.job_ids) == {"a", "b"}
    assert [t.service_at for t in joined.timings if t.stop.kind == "dropoff"] == [16, 35]


def test_a_left_over_order_does_not_join_a_route_at_another_shop() -> None:
    candidates = alone(job("a", door=(0, 10)), job("b", shop="s2", pickup=(1, 0), door=(10, 0)))
    result = assign_round(candidates, [courier("c", (0, 0))], 0, minutes, JOIN)  # shops 1 minute apart
    assert [a.candidate.job_ids for a in result.assignments] == [("a",)]
    nearby = dataclasses.replace(JOIN, join_shop_minutes=1)
    (joined,) = assign_round(candidates, [courier("c", (0, 0))], 0, minutes, nearby).assignments
    assert set(joined.candidate.job_ids) == {"a", "b"}


def test_matched_work_moves_onto_a_route_at_its_shop_only_when_couriers_are_short() -> None:
    candidates = alone(job("a", door=(0, 10)), job("b", door=(0, 12)))
    # d is free only at 30, 40 minutes away: it would serve b at 88; on c's trip b is served at 22.
    short = [courier("c", (0, 0)), courier("d", (0, 40), available_at=30)]
    (joined,) = assign_round(candidates, short, 0, minutes, JOIN).assignments
    assert (joined.courier_id, set(joined.candidate.job_ids)) == ("c", {"a", "b"})
    assert [t.service_at for t in joined.timings if t.stop.kind == "dropoff"] == [16, 22]
    # d free now (as many couriers free as work waiting): each keeps its own order.
    plenty = [courier("c", (0, 0)), courier("d", (0, 40))]
    result = assign_round(candidates, plenty, 0, minutes, JOIN)
    assert sorted((a.courier_id, len(a.candidate.job_ids)) for a in result.assignments) == [
        ("c", 1),
        ("d", 1),
    ]


def test_a_join_counts_the_courier_minutes_it_saves_when_couriers_are_short() -> None:
    candidates = alone(job("a", door=(0, 10)), job("b", door=(0, -10)))
    # c is at the shop, d 20 minutes away and free at 1. Apart: 16 (c) + 37 (d: pickup at 23, served at 37).
    # Joined: 16 + 40 = 56, 3 minutes more, but d's trip (38 minutes) is saved and c's grows by 24.
    couriers = [courier("c", (0, 0)), courier("d", (0, -20), available_at=1)]
    apart = assign_round(candidates, couriers, 0, minutes, JOIN)
    assert sorted(a.courier_id for a in apart.assignments) == ["c", "d"]
    weighted = dataclasses.replace(JOIN, join_courier_weight=1)  # 56 - 14 < 53
    (joined,) = assign_round(candidates, couriers, 0, minutes, weighted).assignments
    assert (joined.courier_id, set(joined.candidate.job_ids)) == ("c", {"a", "b"})
    barely = dataclasses.replace(JOIN, join_courier_weight=0.2)  # 56 - 2.8 > 53
    assert len(assign_round(candidates, couriers, 0, minutes, barely).assignments) == 2


@st.composite
def split_orders(draw: st.DrawFn) -> tuple[CourierState, list[Job]]:
    grid = st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda p: (float(p[0]), float(p[1])))
    door = draw(grid)
    shops = draw(st.integers(1, 4))
    jobs = [
        job(f"j{i}", shop=f"s{i}", pickup=draw(grid), ready=draw(st.integers(0, 60)), door=door)
        for i in range(shops)
    ]
    return courier("c", draw(grid), available_at=draw(st.integers(0, 30))), [
        Job(j.job_id, "o1", j.shop_id, j.pickup, j.ready_at, j.dropoff, j.items) for j in jobs
    ]


@settings(max_examples=60, deadline=None)
@given(split_orders())
def test_score_equals_the_best_route_from_where_the_courier_starts(
    case: tuple[CourierState, list[Job]],
) -> None:
    who, jobs = case
    (candidate,) = route_candidates(jobs, PARAMS, minutes)
    start_time = float(who.available_at or 0)
    pickups, dropoffs = candidate.pickups, candidate.dropoffs
    best = build_route(who.position, start_time, pickups, dropoffs, minutes, PARAMS.service)
    assert score(who, candidate, 0, minutes, PARAMS) == best.finish


# The round


@st.composite
def rounds(draw: st.DrawFn) -> tuple[list[Job], list[CourierState]]:
    grid = st.tuples(st.integers(0, 30), st.integers(0, 30)).map(lambda p: (float(p[0]), float(p[1])))
    shops = [draw(grid) for _ in range(3)]
    jobs = []
    for i in range(draw(st.integers(1, 5))):
        shop = draw(st.integers(0, 2))
        ready = draw(st.integers(0, 30))
        items = draw(st.integers(1, 3))
        jobs.append(job(f"j{i}", f"s{shop}", shops[shop], ready, draw(grid), items=items))
    couriers = [
        courier(
            f"c{i}",
            draw(grid),
            capacity=draw(st.integers(1, 5)),
            shift_end=draw(st.none() | st.integers(0, 60).map(float)),
            stale=draw(st.booleans()) and draw(st.booleans()),
        )
        for i in range(draw(st.integers(1, 4)))
    ]
    return jobs, couriers


def brute_force(candidates: list[Candidate], couriers: list[CourierState]) -> tuple[int, float]:
    """Most candidates placed, then least total finish minutes, over every assignment."""
    scores = [[score(c, cand, 0, minutes, PARAMS) for c in couriers] for cand in candidates]
    best = (0, 0.0)
    options = [None, *range(len(couriers))]
    for picks in itertools.product(options, repeat=len(candidates)):
        chosen = [(row, col) for row, col in enumerate(picks) if col is not None]
        if len({col for _, col in chosen}) < len(chosen):
            continue
        values = [scores[row][col] for row, col in chosen]
        if any(value is None for value in values):
            continue
        total = sum(value for value in values if value is not None)
        if (len(chosen), -total) > (best[0], -best[1]):
            best = (len(chosen), total)
    return best


@settings(max_examples=80, deadline=None)
@given(rounds())
def test_round_is_as_good_as_brute_force(case: tuple[list[Job], list[CourierState]]) -> None:
    jobs, couriers = case
    candidates = route_candidates(jobs, PARAMS, minutes)
    result = assign_round(candidates, couriers, 0, minutes, PARAMS)
    placed, total = brute_force(candidates, couriers)
    assert len(result.assignments) == placed
    assert sum(a.score for a in result.assignments) == pytest.approx(total)
    assert len(result.unassigned) == len(candidates) - placed
    assert len({a.courier_id for a in result.assignments}) == placed
    by_id = {c.courier_id: c for c in couriers}
    for a in result.assignments:
        assert a.score == score(by_id[a.courier_id], a.candidate, 0, minutes, PARAMS)
        start = by_id[a.courier_id].position
        assert a.timings == simulate(start, 0, a.route.stops, minutes, PARAMS.service)
    vectorised = assign_round(candidates, couriers, 0, minutes, PARAMS, travel_many=minutes_many)
    assert sum(a.score for a in vectorised.assignments) == pytest.approx(total)
    assert len(vectorised.assignments) == placed


def test_without_couriers_every_candidate_waits() -> None:
    candidates = route_candidates([job("a"), job("b", shop="s2")], PARAMS, minutes)
    assert assign_round(candidates, [], 0, minutes, PARAMS).unassigned == tuple(candidates)
    assert assign_round([], [courier("c", (0, 0))], 0, minutes, PARAMS).assignments == ()


def test_a_courier_gets_one_candidate_per_round_and_the_rest_wait() -> None:
    candidates = route_candidates([job("a"), job("b", shop="s2")], PARAMS, minutes)
    result = assign_round(candidates, [courier("c", (0, 0))], 0, minutes, PARAMS)
    assert len(result.assignments) == 1
    assert len(result.unassigned) == 1


def test_placing_more_candidates_beats_a_lower_total() -> None:
    # Near alone would serve a soonest, but then b (too big for far) would wait: far takes a.
    jobs = [job("a", pickup=(0, 0)), job("b", shop="s2", pickup=(0, 1), items=5)]
    couriers = [courier("near", (0, 0)), courier("far", (0, 3000), capacity=1)]
    result = assign_round(route_candidates(jobs, PARAMS, minutes), couriers, 0, minutes, PARAMS)
    assert sorted((a.candidate.job_ids, a.courier_id) for a in result.assignments) == [
        (("a",), "far"),
        (("b",), "near"),
    ]


def test_new_work_goes_after_the_stops_still_to_do() -> None:
    existing = Stop("dropoff", (0, 5), ("x",))
    busy = courier("c", (0, 0), route=(existing,))
    (candidate,) = route_candidates([job("a", pickup=(0, 10), door=(0, 20))], PARAMS, minutes)
    (assignment,) = assign_round([candidate], [busy], 0, minutes, PARAMS).assignments
    assert assignment.route.stops == (existing, *candidate.options[0].stops)
    assert [t.service_at for t in assignment.timings] == [7, 16, 30]
    assert assignment.score == 30


def test_nearby_limits_the_couriers_scored() -> None:
    candidates = route_candidates([job("a"), job("b", shop="s2")], PARAMS, minutes)
    couriers = [courier("near", (0, 1)), courier("far", (0, 30))]
    only_far = assign_round(candidates[:1], couriers, 0, minutes, PARAMS, nearby=lambda c: ["far"])
    assert [a.courier_id for a in only_far.assignments] == ["far"]

    def nobody_for_b(candidate: Candidate) -> list[str]:
        return [] if candidate.job_ids == ("b",) else ["near", "far", "unknown"]

    result = assign_round(candidates, couriers, 0, minutes, PARAMS, nearby=nobody_for_b)
    assert [a.courier_id for a in result.assignments] == ["near"]
    assert [c.job_ids for c in result.unassigned] == [("b",)]


def test_keeping_k_best_couriers_per_candidate_can_leave_work_for_later() -> None:
    jobs = [job("a", pickup=(0, 0)), job("b", shop="s2", pickup=(0, 2))]
    couriers = [courier("far", (0, 30)), courier("near", (0, 1))]
    candidates = route_candidates(jobs, PARAMS, minutes)
    assert len(assign_round(candidates, couriers, 0, minutes, PARAMS).assignments) == 2
    k1 = DispatchParams(service=PARAMS.service, couriers_per_candidate=1)
    result = assign_round(candidates, couriers, 0, minutes, k1)
    assert [a.courier_id for a in result.assignments] == ["near"]
    assert len(result.unassigned) == 1


def split_case() -> list[Job]:
    """Two shops 60 apart and the door between them: one courier would deliver at 102, two at 38."""
    return [
        job("a", shop="s1", pickup=(-30, 0), door=(0, 10), order="o1"),
        job("b", shop="s2", pickup=(30, 0), door=(0, 10), order="o1"),
    ]


def test_split_order_stays_on_one_route_within_the_slack() -> None:
    couriers = [courier("west", (-30, 0)), courier("east", (30, 0))]
    candidates = route_candidates(split_case(), PARAMS, minutes)
    patient = DispatchParams(service=PARAMS.service, split_slack_minutes=64)
    (joint,) = assign_round(candidates, couriers, 0, minutes, patient).assignments
    assert joint.candidate.job_ids == ("a", "b")
    assert joint.score == 102


def test_split_order_goes_on_two_routes_beyond_the_slack() -> None:
    couriers = [courier("west", (-30, 0)), courier("east", (30, 0))]
    candidates = route_candidates(split_case(), PARAMS, minutes)
    hasty = DispatchParams(service=PARAMS.service, split_slack_minutes=63)
    result = assign_round(candidates, couriers, 0, minutes, hasty)
    assert sorted((a.courier_id, a.candidate.job_ids, a.score) for a in result.assignments) == [
        ("east", ("b",), 38),
        ("west", ("a",), 38),
    ]
    assert result.unassigned == ()


def test_split_order_needs_a_courier_for_every_part_to_split() -> None:
    candidates = route_candidates(split_case(), PARAMS, minutes)
    (joint,) = assign_round(candidates, [courier("west", (-30, 0))], 0, minutes, PARAMS).assignments
    assert joint.candidate.job_ids == ("a", "b")


def test_split_order_too_big_for_one_courier_is_split_whatever_the_slack() -> None:
    jobs = [Job(j.job_id, j.order_id, j.shop_id, j.pickup, j.ready_at, j.dropoff, 3) for j in split_case()]
    candidates = route_candidates(jobs, PARAMS, minutes)
    small = [courier("west", (-30, 0), capacity=4), courier("east", (30, 0), capacity=4)]
    patient = DispatchParams(service=PARAMS.service, split_slack_minutes=1000)
    result = assign_round(candidates, small, 0, minutes, patient)
    assert sorted(a.candidate.job_ids for a in result.assignments) == [("a",), ("b",)]
    # With one such courier, one part goes now and the other waits for a later round.
    result = assign_round(candidates, small[:1], 0, minutes, patient)
    assert [a.candidate.job_ids for a in result.assignments] == [("a",)]
    assert [c.job_ids for c in result.unassigned] == [("b",)]


def test_couriers_taken_by_one_split_order_are_not_offered_to_the_next() -> None:
    second = [Job(f"{j.job_id}2", "o2", j.shop_id, j.pickup, j.ready_at, j.dropoff) for j in split_case()]
    couriers = [courier("west", (-30, 0)), courier("east", (30, 0)), courier("mid", (0, 0))]
    candidates = route_candidates(split_case() + second, PARAMS, minutes)
    result = assign_round(candidates, couriers, 0, minutes, PARAMS)
    # o1 splits over its joint courier and mid (who delivers at 68); o2 keeps its joint route.
    assert sorted(a.candidate.job_ids for a in result.assignments) == [("a",), ("a2", "b2"), ("b",)]
    assert len({a.courier_id for a in result.assignments}) == 3


@st.composite
def rounds_with_split_orders(draw: st.DrawFn) -> tuple[list[Job], list[CourierState]]:
    jobs, couriers = draw(rounds())
    orders = [f"o{draw(st.integers(0, 2))}" for _ in jobs]
    doors: dict[str, Point] = {}
    split = []
    for j, order in zip(jobs, orders, strict=True):
        door = doors.setdefault(order, j.dropoff)  # one door per order, one shop per job
        split.append(Job(j.job_id, order, f"s-{j.job_id}", j.pickup, j.ready_at, door, j.items))
    return split, couriers


@settings(max_examples=80, deadline=None)
@given(rounds_with_split_orders(), st.sampled_from([0.0, 10.0, 1000.0]))
def test_every_job_is_placed_once_or_waits(case: tuple[list[Job], list[CourierState]], slack: float) -> None:
    jobs, couriers = case
    params = DispatchParams(service=PARAMS.service, split_slack_minutes=slack)
    result = assign_round(route_candidates(jobs, params, minutes), couriers, 0, minutes, params)
    placed = [j for a in result.assignments for j in a.candidate.job_ids]
    waiting = [j for c in result.unassigned for j in c.job_ids]
    assert sorted(placed + waiting) == sorted(j.job_id for j in jobs)
    assert len({a.courier_id for a in result.assignments}) == len(result.assignments)


# The nearest-idle baseline


def test_nearest_idle_gives_each_ready_job_to_the_nearest_idle_courier() -> None:
    jobs = [
        job("first", pickup=(0, 0), ready=1),
        job("second", pickup=(0, 0), ready=2),  # same shop and door: still not bundled
        job("later", pickup=(0, 0), ready=11),  # not ready at 10
    ]
    couriers = [
        courier("far", (0, 9)),
        courier("busy", (0, 0), route=(Stop("dropoff", (0, 1), ("x",)),)),
        courier("near", (0, 2)),
        courier("mid", (0, 5)),
        courier("resting", (0, 0), available_at=12),
        courier("stale", (0, 0), stale=True),
    ]
    result = nearest_idle_round(jobs, couriers, 10, minutes, PARAMS)
    assert [(a.candidate.job_ids, a.courier_id) for a in result.assignments] == [
        (("first",), "near"),
        (("second",), "mid"),
    ]
    assert result.unassigned == ()
    assert result.assignments[0].score == 10 + 2 + 2 + 2 + 10 + 2


def test_nearest_idle_skips_couriers_that_cannot_take_the_job() -> None:
    jobs = [job("big", items=5), job("small", ready=1)]
    couriers = [courier("tiny", (0, 1), capacity=2), courier("van", (0, 8), capacity=9)]
    result = nearest_idle_round(jobs, couriers, 10, minutes, PARAMS)
    assert [(a.candidate.job_ids, a.courier_id) for a in result.assignments] == [
        (("big",), "van"),
        (("small",), "tiny"),
    ]
    alone = nearest_idle_round(jobs, couriers[:1], 10, minutes, PARAMS)
    assert [c.job_ids for c in alone.unassigned] == [("big",)]


# Exact time


def test_a_courier_mid_leg_is_timed_from_where_it_set_off_not_the_straight_line() -> None:
    """The replay's violation: a courier 4.5 minutes into a 13-minute leg (12.2 units, rounded up) was put on
    the straight line and the 7.98 units left rounded up to 8, so it 'arrived' at 933.0 instead of 933.5,
    and a pickup planned at exactly the shift end happened half a minute after it."""
    door = Stop("dropoff", (12.2, 0), ("x",), order_id="ox", items=1)
    now, set_off = 925.0, 920.5
    midway = (12.2 * (now - set_off) / 13, 0.0)
    leg_end = set_off + minutes((0, 0), door.location)
    assert leg_end == 933.5 and now + minutes(midway, door.location) == 933.0
    # After the door (served 935.5, leaves 937.5) the shop is 10 away: pickup at 947.5 + 2 = 949.5.
    candidate = single(pickup=(12.2, 10), door=(12.2, 20))
    on_time = courier("c", midway, load=1, shift_end=949.5, route=(door,), first_arrival=leg_end)
    late = dataclasses.replace(on_time, shift_end=949.0)
    assert score(on_time, candidate, now, minutes, PARAMS) == 949.5 + 2 + 10 + 2
    assert score(late, candidate, now, minutes, PARAMS) is None
    (a,) = assign_round([candidate], [on_time], now, minutes, PARAMS).assignments
    assert [(t.arrival, t.service_at) for t in a.timings] == [(933.5, 935.5), (947.5, 949.5), (961.5, 963.5)]
    assert assign_round([candidate], [late], now, minutes, PARAMS).assignments == ()


def test_a_courier_already_at_its_stop_serves_it_now_at_the_earliest() -> None:
    # Arrived at the shop at 10; the goods were ready at 11; it is 20 and the pickup is not done yet.
    shop = Stop("pickup", (0, 0), ("x",), shop_id="s1", ready_at=11, items=1)
    at_shop = courier("c", (0, 0), route=(shop,), first_arrival=10)
    (timing,) = timeline(at_shop, 20, minutes, PARAMS.service)
    assert (timing.arrival, timing.service_at, timing.departure) == (10, 20, 22)


def test_earliest_arrival_is_never_early() -> None:
    shop = (0.0, 10.0)
    # Set off at 5 from (0, 0): there at 15, whatever the (rounded) straight line from midway says.
    assert earliest_arrival(shop, 8, minutes, position=(0, 3.5), set_off=((0, 0), 5)) == 15
    # A fix since it set off shows it slower than planned: later.
    assert (
        earliest_arrival(
            shop, 12, minutes, position=(0, 1), set_off=((0, 0), 5), fix=((0, 1), 12), crow=math.dist
        )
        == 21
    )
    # A fix from before it set off says nothing about this leg.
    assert (
        earliest_arrival(
            shop, 8, minutes, position=(0, 0), set_off=((0, 0), 5), fix=((0, 0), 4), crow=math.dist
        )
        == 15
    )
    # No leg known: from where it is, now.
    assert earliest_arrival(shop, 8, minutes, position=(0, 3.5)) == 8 + 7
    assert earliest_arrival(shop, 30, minutes, position=(0, 0), set_off=((0, 0), 5)) == 30  # never before now


# Revisable plans


def test_a_courier_is_committed_to_its_next_stop_and_what_it_carries() -> None:
    on_board = Stop("dropoff", (0, 1), ("x",), order_id="ox", items=1)
    p1, d1 = (
        Stop("pickup", (0, 2), ("a",), shop_id="s1", items=1),
        Stop("dropoff", (0, 3), ("a",), order_id="oa"),
    )
    p2, d2 = (
        Stop("pickup", (0, 4), ("b",), shop_id="s2", items=1),
        Stop("dropoff", (0, 5), ("b",), order_id="ob"),
    )
    split = commitments((p1, on_board, p2, d1, d2))
    assert (split.committed, split.queued, split.queued_jobs) == (
        (p1, on_board, d1),
        (p2, d2),
        frozenset("b"),
    )
    split = commitments((on_board, p1, d1))
    assert (split.committed, split.queued) == ((on_board,), (p1, d1))
    assert commitments(()) == commitments(()) and commitments(()).committed == ()
    # A split order stays whole: its second shop's job is committed with the first.
    q1 = Stop("pickup", (0, 2), ("a1",), shop_id="s1", items=1)
    q2 = Stop("pickup", (0, 4), ("a2",), shop_id="s2", items=1)
    both = Stop("dropoff", (0, 5), ("a1", "a2"), order_id="oa")
    split = commitments((q1, p2, q2, d2, both))
    assert (split.committed, split.queued) == ((q1, q2, both), (p2, d2))


def _queued_on(holder: str, j: Job, *before: Stop) -> tuple[CourierState, Job]:
    """A courier with `before` to do, then `j` queued behind it."""
    pickup = Stop("pickup", j.pickup, (j.job_id,), shop_id=j.shop_id, ready_at=j.ready_at, items=j.items)
    door = Stop("dropoff", j.dropoff, (j.job_id,), order_id=j.order_id, items=j.items)
    return courier(holder, (0, 0), route=(*before, pickup, door)), dataclasses.replace(j, holder=holder)


def test_queued_work_moves_when_another_courier_would_deliver_it_sooner() -> None:
    far_door = Stop("dropoff", (0, 40), ("x",), order_id="ox", items=1)
    busy, queued = _queued_on("busy", job("a", pickup=(0, 10), door=(0, 20)), far_door)
    fresh = courier("fresh", (0, 9))
    result = plan_round([queued], [busy, fresh], 0, minutes, PARAMS)
    ((who, what),) = [(a.courier_id, a.candidate.job_ids) for a in result.assignments]
    assert (who, what) == ("fresh", ("a",))
    assert result.released == ("a",)
    # Without the fresh courier, it stays where it is: nothing to write.
    alone = plan_round([queued], [busy], 0, minutes, PARAMS)
    ((kept,),) = [(a,) for a in alone.assignments]
    assert (kept.courier_id, kept.unchanged, alone.released) == ("busy", True, ())


def test_queued_work_stays_unless_the_other_courier_is_better_by_the_margin() -> None:
    near_door = Stop("dropoff", (0, 5), ("x",), order_id="ox", items=1)
    busy, queued = _queued_on("busy", job("a", pickup=(0, 10), door=(0, 20)), near_door)
    busy = dataclasses.replace(busy, position=(0, 4))
    # Busy: door x at 1, served 3, leaves 5, shop at 10, pickup at 12. Other, idle at (0, 1): shop at 9,
    # pickup at 11: a minute sooner, under a margin of 1.5, over one of 0.
    other = courier("other", (0, 1))
    sticky = dataclasses.replace(PARAMS, empty_leg_weight=0, move_margin_minutes=1.5)
    result = plan_round([queued], [busy, other], 0, minutes, sticky)
    assert [(a.courier_id, a.unchanged, a.score) for a in result.assignments] == [
        ("busy", True, 12 + 2 + 10 + 2)
    ]
    assert result.released == ()
    eager = plan_round(
        [queued], [busy, other], 0, minutes, dataclasses.replace(sticky, move_margin_minutes=0)
    )
    assert [(a.courier_id, a.unchanged) for a in eager.assignments] == [("other", False)]
    assert eager.released == ("a",)


def test_the_benchmark_rule_gives_work_only_to_couriers_doing_nothing() -> None:
    params = dataclasses.replace(PARAMS, assign_busy=False)
    door = Stop("dropoff", (0, 11), ("x",), order_id="ox", items=1)
    busy = courier("busy", (0, 10), route=(door,))  # a minute from the shop's door, but delivering
    idle = courier("idle", (0, 30))
    result = plan_round([job("a", pickup=(0, 12))], [busy, idle], 0, minutes, params)
    assert [a.courier_id for a in result.assignments] == ["idle"]
    serving = courier("serving", (0, 12), available_at=3)  # still handing over at its last door
    result = plan_round([job("a", pickup=(0, 12))], [serving], 0, minutes, params)
    assert result.assignments == () and [c.job_ids for c in result.unassigned] == [("a",)]
    # Under our rule the busy courier chains the job after its door.
    ours = plan_round([job("a", pickup=(0, 12))], [busy, idle], 0, minutes, PARAMS)
    assert [a.courier_id for a in ours.assignments] == ["busy"]
