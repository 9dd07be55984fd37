"""A pure discrete-event reference simulator of the instance semantics, with no server.

It runs the ``nearest-idle`` baseline: each order, once ready (or once placed), goes to the
nearest idle on-shift courier that can pick it up before its off time, one order per trip.
The courier drives to the restaurant, picks up at the later of the ready time and its arrival
plus half the pickup service, leaves half a service later, drives to the drop-off, delivers at
arrival plus half the drop-off service and is idle half a service later, waiting where it is.
Orders nobody can take wait, first come first served; those never taken stay undelivered.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Literal

from dispatch.replay.instance import START_POINT, Instance, Point, travel_minutes
from dispatch.replay.trace import AssignmentRecord, CourierMove, OrderRecord, Trace


@dataclass
class _CourierState:
    place: str  # where it waits: "0" or the last drop-off's order id
    point: Point
    free_at: float


def simulate_nearest_idle(instance: Instance, *, trigger: Literal["ready", "placed"] = "ready") -> Trace:
    """Run the day under ``nearest-idle``; orders are released to couriers at their ready time
    (the baseline the issue specifies) or, with ``trigger="placed"``, at their placement time.
    Ties go to the courier listed first; the result is deterministic."""
    params = instance.parameters
    half_pick = params.pickup_service_minutes / 2
    half_drop = params.dropoff_service_minutes / 2
    states = {cid: _CourierState(START_POINT, c, c.on_time) for cid, c in instance.couriers.items()}

    def released(o: str) -> float:
        order = instance.orders[o]
        return order.ready_time if trigger == "ready" else order.placement_time

    # Stable first-come order: release time, then the instance's order.
    arrivals = sorted(instance.orders, key=released)
    events = sorted({released(o) for o in arrivals} | {c.on_time for c in instance.couriers.values()})
    heapq.heapify(events)
    waiting: list[str] = []
    next_arrival = 0
    assignments: list[AssignmentRecord] = []
    moves: list[CourierMove] = []
    outcome: dict[str, OrderRecord] = {}

    while events:
        now = heapq.heappop(events)
        while events and events[0] == now:
            heapq.heappop(events)
        while next_arrival < len(arrivals) and released(arrivals[next_arrival]) <= now:
            waiting.append(arrivals[next_arrival])
            next_arrival += 1

        still_waiting = []
        for o in waiting:
            order = instance.orders[o]
            restaurant = instance.restaurants[order.restaurant]
            best: tuple[int, int, str, float] | None = None
            for rank, (cid, state) in enumerate(states.items()):
                courier = instance.couriers[cid]
                if state.free_at > now or courier.on_time > now:
                    continue
                to_restaurant = travel_minutes(state.point, restaurant, params)
                pickup = max(order.ready_time, now + to_restaurant + half_pick)
                if pickup > courier.off_time:
                    continue
                if best is None or (to_restaurant, rank) < best[:2]:
                    best = (to_restaurant, rank, cid, pickup)
            if best is None:
                still_waiting.append(o)
                continue
            _, _, cid, pickup = best
            state = states[cid]
            leave = pickup + half_pick
            delivery = leave + travel_minutes(restaurant, order, params) + half_drop
            moves.append(CourierMove(cid, now, state.place, restaurant.id))
            moves.append(CourierMove(cid, leave, restaurant.id, o))
            assignments.append(AssignmentRecord(now, pickup, cid, (o,)))
            outcome[o] = OrderRecord(o, order.placement_time, order.ready_time, now, pickup, delivery, cid)
            state.place, state.point, state.free_at = o, order, delivery + half_drop
            heapq.heappush(events, state.free_at)
        waiting = still_waiting

    records = [
        outcome.get(o) or OrderRecord(o, order.placement_time, order.ready_time)
        for o, order in instance.orders.items()
    ]
    return Trace(assignments, records, moves)
