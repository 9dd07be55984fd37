"""The offline policy simulator: the server's own round functions over an instance, with no server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson

from dispatch.core.assignment import DispatchParams
from dispatch.core.routes import ServiceTimes
from dispatch.replay.cli import replay_main
from dispatch.replay.feasibility import check
from dispatch.replay.generate import generate_instance
from dispatch.replay.instance import Courier, Instance, Order, Parameters, Restaurant, write_instance
from dispatch.replay.metrics import compute_metrics
from dispatch.replay.offline import admission, simulate_policy
from dispatch.replay.simulate import simulate_nearest_idle
from dispatch.replay.trace import (
    ASSIGNMENTS_FILE,
    COURIERS_FILE,
    ORDERS_FILE,
    ORDERS_HEADER,
    AssignmentRecord,
    CourierMove,
    OrderRecord,
)

SERVICE = ServiceTimes(4, 4)


def test_the_baseline_rounds_reproduce_the_reference_simulator(tiny: Instance) -> None:
    # Every event of the tiny day falls on a whole minute, so rounds every minute see them all in time.
    ours, reference = (
        simulate_policy(tiny, "nearest-idle", round_minutes=1, phase_minutes=0),
        simulate_nearest_idle(tiny),
    )
    assert (ours.assignments, ours.orders) == (reference.assignments, reference.orders)
    # Each courier's moves in order (how couriers interleave is nothing the evaluator reads).
    assert ours.moves_by_courier() == reference.moves_by_courier()


def test_ours_holds_work_until_due_and_bundles_same_shop_orders(tiny: Instance) -> None:
    # o1 (ready 10) and o2 (placed at 2, ready 12) come from r1, doors 5 minutes apart: one bundle, ready
    # at 12. c1 waits on r1 (no empty leg), so nobody is sent before 10, when c1 must start to be served
    # at 12. Without deferral, c1 is sent for o1 alone at 0 and waits at the counter.
    params = DispatchParams(service=SERVICE, empty_leg_weight=0.5, defer_wait_minutes=0)
    trace = simulate_policy(tiny, "ours", params, round_minutes=1, phase_minutes=0)
    assert trace.assignments[0] == AssignmentRecord(10, 12, "c1", ("o1", "o2"))
    assert trace.orders[:2] == [
        OrderRecord("o1", 0, 10, 10, 12, 12 + 2 + 5 + 2, "c1"),
        OrderRecord("o2", 2, 12, 10, 12, 21 + 2 + 5 + 2, "c1"),
    ]
    assert trace.moves_by_courier()["c1"][:3] == [
        CourierMove("c1", 10, "0", "r1"),  # its start point is r1's: no time on the road
        CourierMove("c1", 14, "r1", "o1"),
        CourierMove("c1", 23, "o1", "o2"),
    ]
    assert check(tiny, trace) == []
    assert all(o.delivery_time is not None for o in trace.orders)
    eager = simulate_policy(
        tiny, "ours", replace(params, defer_wait_minutes=None), round_minutes=1, phase_minutes=0
    )
    assert eager.assignments[0] == AssignmentRecord(0, 10, "c1", ("o1",))


def test_rounds_fall_between_the_whole_minutes_of_the_instance_by_default(tiny: Instance) -> None:
    # The live server's rounds fall anywhere between the day's whole-minute events; offline puts them halfway
    # (the mean wait for the next round), so the bundle above, due to set off at 10, goes at the round at 10.5
    # and is served half a minute after it is ready.
    params = DispatchParams(service=SERVICE, empty_leg_weight=0.5, defer_wait_minutes=0)
    trace = simulate_policy(tiny, "ours", params, round_minutes=1)
    assert trace.assignments[0] == AssignmentRecord(10.5, 12.5, "c1", ("o1", "o2"))
    assert check(tiny, trace) == []


def test_a_generated_day_is_delivered_feasibly_and_ours_beats_the_baseline() -> None:
    """The comparison the replay makes, with the dispatch defaults of the server (deterministic)."""
    day = generate_instance(200, 3)
    params = DispatchParams(service=SERVICE, empty_leg_weight=0.5, defer_wait_minutes=0)
    ours = compute_metrics(day, simulate_policy(day, "ours", params))
    baseline = compute_metrics(day, simulate_policy(day, "nearest-idle", params))
    for m in (ours, baseline):
        assert m["orders"]["delivered"] == 200
        assert m["feasibility"]["violations"] == 0
    assert ours["click_to_door"]["mean"] < baseline["click_to_door"]["mean"]
    assert ours["couriers"]["orders_per_active_hour"] > baseline["couriers"]["orders_per_active_hour"]
    assert simulate_policy(day, "ours", params) == simulate_policy(day, "ours", params)  # deterministic


def test_work_queued_on_a_busy_courier_moves_to_a_courier_who_can_do_it_sooner() -> None:
    """o2 is queued at 1 behind c1's long delivery (pickup at 50: the only courier on shift); at 10 c2 comes
    on shift next to the shop and takes it (at the shop at 11, pickup at 13 after half the service)."""
    day = Instance(
        "moved",
        {"r1": Restaurant("r1", 0, 0)},
        {"o1": Order("o1", 0, 2000, 0, "r1", 0), "o2": Order("o2", 0, -500, 1, "r1", 5)},
        {"c1": Courier("c1", 0, 0, 0, 120), "c2": Courier("c2", 0, 100, 10, 120)},
        Parameters(100, 4, 4, 40, 90, 10, 15),
    )
    params = DispatchParams(service=SERVICE, empty_leg_weight=0.5, defer_wait_minutes=0)
    trace = simulate_policy(day, "ours", params, round_minutes=1, phase_minutes=0)
    assert trace.orders == [
        OrderRecord("o1", 0, 0, 0, 2, 26, "c1"),
        OrderRecord("o2", 1, 5, 10, 13, 22, "c2"),
    ]
    assert trace.moves_by_courier() == {
        "c1": [CourierMove("c1", 0, "0", "r1"), CourierMove("c1", 4, "r1", "o1")],  # never sent back for o2
        "c2": [CourierMove("c2", 10, "0", "r1"), CourierMove("c2", 15, "r1", "o2")],
    }
    assert check(day, trace) == []
    # Under the benchmark's rule c1 is not given o2 while delivering o1: c2 takes it at 10 all the same.
    rule = simulate_policy(day, "ours", replace(params, assign_busy=False), round_minutes=1, phase_minutes=0)
    assert rule.orders[1] == OrderRecord("o2", 1, 5, 10, 13, 22, "c2")


def test_the_offline_command_writes_each_orders_times_as_a_replay_does(tmp_path: Path) -> None:
    day = generate_instance(24, 3)
    write_instance(day, tmp_path / "day")
    assert replay_main(["offline", str(tmp_path / "day"), "--json", "--out", str(tmp_path / "out")]) == 0
    for policy in ("ours", "nearest-idle"):
        out = tmp_path / "out" / f"day-{policy}"
        rows = (out / ORDERS_FILE).read_text().splitlines()
        assert rows[0].split() == list(ORDERS_HEADER)
        assert sorted(row.split()[0] for row in rows[1:]) == sorted(day.orders)
        assert (out / ASSIGNMENTS_FILE).exists() and (out / COURIERS_FILE).exists()
        assert orjson.loads((out / "metrics.json").read_bytes())["orders"]["total"] == 24


def test_an_order_is_judged_at_its_placement_not_at_the_next_round() -> None:
    # The server's check at placement (DISPATCH_UNDELIVERABLE=refuse) runs when the order comes in: at 5 the
    # courier waiting at the shop until 7 can still collect it, at the round half a minute later it cannot.
    day = Instance(
        "late",
        {"r1": Restaurant("r1", 0, 0)},
        {"o1": Order("o1", 0, 300, 5, "r1", 6)},
        {"c1": Courier("c1", 0, 0, 0, 7)},
        Parameters(100, 4, 4, 25, 28, 10, 15),
    )
    assert simulate_policy(day, "ours", round_minutes=1, admit=admission(day)).refused == ()
