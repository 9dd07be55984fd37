from __future__ import annotations

from dataclasses import replace

from dispatch.replay.instance import Instance
from dispatch.replay.simulate import simulate_nearest_idle
from dispatch.replay.trace import AssignmentRecord, CourierMove, OrderRecord


def _off(inst: Instance, courier: str, off_time: float) -> Instance:
    couriers = {**inst.couriers, courier: replace(inst.couriers[courier], off_time=off_time)}
    return replace(inst, couriers=couriers)


def test_nearest_idle_on_the_tiny_day(tiny: Instance) -> None:
    trace = simulate_nearest_idle(tiny)
    # o1 ready at 10: c1 waits on r1 (0 min away; c2 is 11). Picks up at 12, delivers at 21
    # (500 m), free at 23 on o1. o2 ready at 12: only c2 is idle; 11 min to r1, picks up at 25,
    # delivers at 39. o3 ready at 20 waits for c1, free at 23 and 12 min from r2: pickup at 37,
    # leaves at 39, delivery at 51.
    assert trace.assignments == [
        AssignmentRecord(10, 12, "c1", ("o1",)),
        AssignmentRecord(12, 25, "c2", ("o2",)),
        AssignmentRecord(23, 37, "c1", ("o3",)),
    ]
    assert trace.orders == [
        OrderRecord("o1", 0, 10, 10, 12, 21, "c1"),
        OrderRecord("o2", 2, 12, 12, 25, 39, "c2"),
        OrderRecord("o3", 5, 20, 23, 37, 51, "c1"),
    ]
    assert trace.moves_by_courier() == {
        "c1": [
            CourierMove("c1", 10, "0", "r1"),
            CourierMove("c1", 14, "r1", "o1"),
            CourierMove("c1", 23, "o1", "r2"),
            CourierMove("c1", 39, "r2", "o3"),
        ],
        "c2": [CourierMove("c2", 12, "0", "r1"), CourierMove("c2", 27, "r1", "o2")],
    }


def test_no_pickup_after_off_time_but_delivery_is_fine(tiny: Instance) -> None:
    trace = simulate_nearest_idle(_off(tiny, "c1", 12))
    # c1 picks o1 up right at its off time and delivers it at 21; o3 must then wait for c2, free
    # at 41 on o2, 15 min from r2: pickup at 58, delivery at 72 (1000 m).
    assert trace.orders[0] == OrderRecord("o1", 0, 10, 10, 12, 21, "c1")
    assert trace.orders[2] == OrderRecord("o3", 5, 20, 41, 58, 72, "c2")


def test_orders_nobody_can_take_stay_undelivered(tiny: Instance) -> None:
    # c1 could pick up at 12 at the earliest, c2 at 23 (o1), 25 (o2), 25 (o3).
    trace = simulate_nearest_idle(_off(_off(tiny, "c1", 11), "c2", 22))
    assert trace.assignments == []
    assert trace.moves == []
    assert trace.orders == [OrderRecord(o.id, o.placement_time, o.ready_time) for o in tiny.orders.values()]


def test_assign_on_placement(tiny: Instance) -> None:
    trace = simulate_nearest_idle(tiny, trigger="placed")
    # o1 placed at 0 goes to c1 at once, which waits on r1 for the ready time.
    assert trace.assignments[0] == AssignmentRecord(0, 10, "c1", ("o1",))
    assert trace.moves[0] == CourierMove("c1", 0, "0", "r1")
