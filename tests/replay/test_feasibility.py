from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from dispatch.replay.feasibility import RULES, check
from dispatch.replay.generate import generate_instance
from dispatch.replay.instance import Instance
from dispatch.replay.simulate import simulate_nearest_idle
from dispatch.replay.trace import AssignmentRecord, CourierMove, OrderRecord, Trace

Mutation = Callable[[Instance, Trace], tuple[Instance, Trace]]


def _order(inst: Instance, oid: str, **changes: Any) -> Instance:
    return replace(inst, orders={**inst.orders, oid: replace(inst.orders[oid], **changes)})


def _courier(inst: Instance, cid: str, **changes: Any) -> Instance:
    return replace(inst, couriers={**inst.couriers, cid: replace(inst.couriers[cid], **changes)})


def _record(trace: Trace, oid: str, **changes: Any) -> Trace:
    orders = [replace(r, **changes) if r.order == oid else r for r in trace.orders]
    return replace(trace, orders=orders)


def _moves(trace: Trace, courier: str, moves: list[CourierMove]) -> Trace:
    return replace(trace, moves=[m for m in trace.moves if m.courier != courier] + moves)


# One mutation of the feasible tiny trace per rule, each breaking that rule alone.
VIOLATIONS: dict[str, Mutation] = {
    "unknown-id": lambda i, t: (i, replace(t, orders=[*t.orders, OrderRecord("o9", 0, 0)])),
    "duplicate-order": lambda i, t: (i, replace(t, orders=[*t.orders, t.orders[2]])),
    "multiple-assignments": lambda i, t: (
        i,
        replace(t, assignments=[*t.assignments, t.assignments[1]]),
    ),
    "record-mismatch": lambda i, t: (i, _record(t, "o3", courier="c1")),
    "mixed-bundle": lambda i, t: (_order(i, "o2", restaurant="r2"), t),
    "assigned-before-placement": lambda i, t: (
        i,
        _record(
            _record(
                replace(t, assignments=[AssignmentRecord(1, 12, "c1", ("o1", "o2")), t.assignments[1]]),
                "o1",
                assignment_time=1,
            ),
            "o2",
            assignment_time=1,
        ),
    ),
    "pickup-before-ready": lambda i, t: (_order(i, "o2", ready_time=13), t),
    "pickup-after-off-time": lambda i, t: (_courier(i, "c2", off_time=19), t),
    "before-shift": lambda i, t: (_courier(i, "c2", on_time=7), t),
    # c1 starts where r1 is, so leaving from "0" takes as long as leaving from r1.
    "broken-chain": lambda i, t: (
        i,
        _moves(
            t,
            "c1",
            [
                CourierMove("c1", 5, "0", "r1"),
                CourierMove("c1", 14, "0", "o1"),
                CourierMove("c1", 23, "o1", "o2"),
            ],
        ),
    ),
    # c2 heads for o1 (11 min away) but leaves it for r2 at 6, reaching r2 at 18 < 20 - 2.
    "departure-before-arrival": lambda i, t: (
        i,
        _moves(
            t,
            "c2",
            [
                CourierMove("c2", 0, "0", "o1"),
                CourierMove("c2", 6, "o1", "r2"),
                CourierMove("c2", 22, "r2", "o3"),
            ],
        ),
    ),
    # c1 serves o2 (reached at 24, delivered 26) before o1 (reached 33, delivered 35).
    "out-of-sequence": lambda i, t: (
        i,
        _record(
            _record(
                _moves(
                    t,
                    "c1",
                    [
                        CourierMove("c1", 5, "0", "r1"),
                        CourierMove("c1", 14, "r1", "o2"),
                        CourierMove("c1", 28, "o2", "o1"),
                    ],
                ),
                "o1",
                delivery_time=35,
            ),
            "o2",
            delivery_time=26,
        ),
    ),
    # c2 goes to r1 (arrives 17) and on to o3 at 17 (arrives 32): never at r2.
    "pickup-place": lambda i, t: (
        i,
        _moves(t, "c2", [CourierMove("c2", 6, "0", "r1"), CourierMove("c2", 17, "r1", "o3")]),
    ),
    "delivery-place": lambda i, t: (i, _record(t, "o3", delivery_time=22)),
    "service-time": lambda i, t: (i, _record(t, "o3", delivery_time=33)),
}


def test_every_rule_has_a_violating_trace() -> None:
    assert set(VIOLATIONS) == set(RULES)


def test_the_hand_built_trace_is_feasible(tiny: Instance, tiny_trace: Trace) -> None:
    assert check(tiny, tiny_trace) == []


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_is_caught_alone(rule: str, tiny: Instance, tiny_trace: Trace) -> None:
    instance, trace = VIOLATIONS[rule](tiny, tiny_trace)
    violations = check(instance, trace)
    assert violations, f"{rule} not detected"
    assert {v.rule for v in violations} == {rule}, violations
    assert all(v.message for v in violations)


def test_violations_name_the_order_and_courier(tiny: Instance, tiny_trace: Trace) -> None:
    (v,) = check(*VIOLATIONS["pickup-after-off-time"](tiny, tiny_trace))
    assert (v.order, v.courier) == ("o3", "c2")
    assert v.to_dict() == {"rule": v.rule, "order": "o3", "courier": "c2", "message": v.message}
    (v,) = check(*VIOLATIONS["pickup-before-ready"](tiny, tiny_trace))
    assert (v.order, v.courier) == ("o2", "c1")


def test_tolerance_absorbs_clock_jitter(tiny: Instance, tiny_trace: Trace) -> None:
    instance, trace = VIOLATIONS["service-time"](tiny, tiny_trace)  # one minute early
    assert check(instance, trace, tolerance=0.5)
    assert check(instance, trace, tolerance=1.0) == []
    late = _courier(tiny, "c2", off_time=19.9)  # picked up at 20
    assert check(late, tiny_trace, tolerance=0.05)
    assert check(late, tiny_trace, tolerance=0.1) == []


def test_delivery_after_off_time_is_allowed(tiny: Instance, tiny_trace: Trace) -> None:
    # c1 picks up at 12 and delivers at 21 and 30.
    assert check(_courier(tiny, "c1", off_time=12), tiny_trace) == []


def test_waiting_and_repositioning_are_allowed(tiny: Instance, tiny_trace: Trace) -> None:
    # c2 drives to r2 (3 min), back to its start and to r2 again, then waits there until 20.
    moves = [
        CourierMove("c2", 0, "0", "r2"),
        CourierMove("c2", 3, "r2", "0"),
        CourierMove("c2", 6, "0", "r2"),
        CourierMove("c2", 22, "r2", "o3"),
    ]
    assert check(tiny, _moves(tiny_trace, "c2", moves)) == []


def test_undelivered_orders_are_not_violations(tiny: Instance, tiny_trace: Trace) -> None:
    trace = Trace(
        assignments=[tiny_trace.assignments[0]],
        orders=[*tiny_trace.orders[:2], OrderRecord("o3", 5, 20)],
        moves=[m for m in tiny_trace.moves if m.courier == "c1"],
    )
    assert check(tiny, trace) == []


@pytest.mark.parametrize("trigger", ["ready", "placed"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_simulator_traces_are_feasible(seed: int, trigger: str) -> None:
    instance = generate_instance(150, seed)
    trace = simulate_nearest_idle(instance, trigger="ready" if trigger == "ready" else "placed")
    assert check(instance, trace) == []
