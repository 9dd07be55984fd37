"""Whether an order can be delivered at all, decided at placement: hand-worked cases on a line, travel one
unit a minute rounded up, services 4 + 4."""

from __future__ import annotations

import math

from dispatch.core.admission import Capacity, Part, Upcoming, assess
from dispatch.core.courier_state import CourierState
from dispatch.core.routes import Point, ServiceTimes, Stop

SERVICE = ServiceTimes(4, 4)


def minutes(a: Point, b: Point) -> float:
    return math.ceil(math.dist(a, b))


def part(shop: float = 10, door: float = 20, ready: float = 0, items: int = 1) -> Part:
    return Part((0, shop), (0, door), items, ready)


def courier(at: float, end: float | None = None, **kwargs: object) -> CourierState:
    return CourierState("c", (0, at), 4, shift_end=end, **kwargs)  # type: ignore[arg-type]


def test_no_courier_no_delivery() -> None:
    assert not assess([part()], [], [], [], 0, minutes, SERVICE).deliverable


def test_a_courier_must_collect_before_its_shift_ends() -> None:
    # From 0, the shop at 10, collected at 12.
    ok = assess([part()], [], [courier(0, end=12)], [], 0, minutes, SERVICE)
    assert (ok.deliverable, ok.pickup_at) == (True, 12)
    assert not assess([part()], [], [courier(0, end=11.9)], [], 0, minutes, SERVICE).deliverable
    stale = CourierState("c", (0, 0), 4, stale=True)
    assert not assess([part()], [], [stale], [], 0, minutes, SERVICE).deliverable


def test_after_its_route_and_within_its_capacity() -> None:
    busy = courier(0, end=40, route=(Stop("dropoff", (0, 5), ("x",), items=1),), load=1)
    # Door x at 5, served 7, leaves 9; the shop at 14, collected at 16.
    assert assess([part()], [], [busy], [], 0, minutes, SERVICE).pickup_at == 16
    assert not assess([part(items=5)], [], [courier(0)], [], 0, minutes, SERVICE).deliverable


def test_work_ahead_goes_first_to_whoever_collects_it_soonest() -> None:
    # One courier until 30: the job ahead is collected at 12, delivered at 24 (leaves 26), then the shop at
    # 36: too late for the new order. A second courier until 30 at the shop takes the new one.
    ahead = [part()]
    alone = assess([part()], ahead, [courier(0, end=30)], [], 0, minutes, SERVICE)
    assert not alone.deliverable
    helped = assess([part()], ahead, [courier(0, end=30), courier(10, end=30)], [], 0, minutes, SERVICE)
    assert helped.deliverable and helped.pickup_at == 12  # the courier at the shop took the job ahead at 2
    # Work no courier can take holds no one.
    stuck = [part(shop=500)]
    assert assess([part()], stuck, [courier(0, end=30)], [], 0, minutes, SERVICE).pickup_at == 12


def test_a_shift_starting_soon_counts_a_later_one_offers_a_slot() -> None:
    soon = Upcoming("u", 20, 200, 4)  # where it starts is not known: at the shop, at 20
    verdict = assess([part()], [], [], [soon], 0, minutes, SERVICE)
    assert (verdict.deliverable, verdict.pickup_at) == (True, 22)
    later = Upcoming("u", 45, 200, 4, position=(0, 0))
    verdict = assess([part()], [], [], [later], 0, minutes, SERVICE)
    # From (0, 0) at 45: the shop at 55, collected 57, leaves 59, the door at 69, served at 71.
    assert (verdict.deliverable, verdict.later_slot) == (False, (71, 131))
    assert (
        assess([part()], [], [], [Upcoming("u", 45, 50, 4, (0, 0))], 0, minutes, SERVICE).later_slot is None
    )


def test_one_snapshot_answers_many_orders_each_taking_its_courier() -> None:
    # Two couriers until 29, at 0 and at the shop (10). The first order takes the one at the shop (collected
    # at 2; free at the door 20 at 18, too late to come back: 30).
    capacity = Capacity.build([], [courier(0, end=29), courier(10, end=29)], [], 0, minutes, SERVICE)
    assert capacity.admit([part()], 0).pickup_at == 2
    # An order that cannot be delivered takes no one, not even the courier its first part would have had.
    assert not capacity.admit([part(), part(shop=500)], 0).deliverable
    assert capacity.admit([part()], 0).pickup_at == 12  # the courier at 0
    assert not capacity.admit([part()], 0).deliverable  # no one left in time


def test_a_snapshot_used_later_starts_no_courier_before_now() -> None:
    capacity = Capacity.build([], [courier(10, end=60)], [], 0, minutes, SERVICE)
    assert capacity.admit([part()], 5).pickup_at == 7  # at the shop since 0, asked at 5: collected at 7
