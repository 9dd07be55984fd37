"""The dispatch core's own rounds run over an instance, with no server: fast, for tuning policies.

A replay through the real server takes minutes of wall time; this takes seconds, so a policy or one of its
parameters can be tried on many seeds before the figures that count are measured with `replay`. It calls
the very functions the server's round calls (`route_candidates` + `assign_round`, or
`nearest_idle_round`) every `round_minutes`, on the instance's plane (points are (x, y) metres, travel is
the instance's rounded-up euclidean minutes), and moves couriers as the simulated courier apps do:

- a shop accepts each order when it is placed, ready at its ready time (the replay's shops do the same);
- couriers take part in rounds while on shift (on_time <= now < off_time) and finish their routes after;
- a route's new stops go after the stops the courier still has; the courier drives each leg in the
  instance's time, picks up at max(ready, arrival + half the service) and leaves half a service later,
  hands over at arrival + half the drop-off service and leaves half a service later;
- between stops a courier is where it would be on the straight line (what its location pings would say).

Pure: no I/O and no clock; the result is a `Trace` for `compute_metrics`, like a live replay's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from dispatch.core.assignment import (
    Assignment,
    DispatchParams,
    Job,
    assign_round,
    nearest_idle_round,
    route_candidates,
)
from dispatch.core.courier_state import CourierState
from dispatch.core.routes import Point, ServiceTimes, Stop
from dispatch.replay.instance import START_POINT, Instance
from dispatch.replay.trace import AssignmentRecord, CourierMove, OrderRecord, Trace

Policy = Literal["ours", "nearest-idle"]
CAPACITY = 20  # items; the replay registers its couriers with this capacity, one item per order


@dataclass(frozen=True)
class _Planned:
    """A stop on a courier's timeline, with the times the courier will actually keep."""

    stop: Stop
    place: str  # restaurant id (pickup) or order id (drop-off)
    leaves_for: float  # when the courier sets off towards it
    arrival: float
    service_at: float
    departure: float


@dataclass
class _Courier:
    courier_id: str
    on_time: float
    off_time: float
    place: str  # where the courier is or last was: "0", a restaurant id or an order id
    point: Point
    timeline: list[_Planned] = field(default_factory=list)
    load_after: list[int] = field(default_factory=list)  # items on board after each planned stop

    def last(self) -> tuple[str, Point, float]:
        """Where and when the courier is free after everything planned."""
        if not self.timeline:
            return self.place, self.point, -math.inf
        done = self.timeline[-1]
        return done.place, done.stop.location, done.departure


# sqrt of the sum of squares, as `instance.distance_m` (and the published evaluator): ceil() agrees with them.
def _travel(speed: float) -> Callable[[Point, Point], float]:
    def travel(a: Point, b: Point) -> float:
        return float(math.ceil(math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) / speed))

    return travel


def _travel_many(speed: float) -> Callable[[NDArray[np.float64], Point], NDArray[np.float64]]:
    def travel_many(points: NDArray[np.float64], to: Point) -> NDArray[np.float64]:
        metres = np.sqrt((points[:, 0] - to[0]) ** 2 + (points[:, 1] - to[1]) ** 2)
        return np.asarray(np.ceil(metres / speed), dtype=np.float64)

    return travel_many


def simulate_policy(
    instance: Instance,
    policy: Policy = "ours",
    params: DispatchParams | None = None,
    *,
    round_minutes: float = 0.5,
) -> Trace:
    """Run the day under `policy` with rounds every `round_minutes`; deterministic."""
    p = instance.parameters
    service = ServiceTimes(p.pickup_service_minutes, p.dropoff_service_minutes)
    params = params or DispatchParams(service=service)
    travel, travel_many = _travel(p.meters_per_minute), _travel_many(p.meters_per_minute)
    couriers = [
        _Courier(c.id, c.on_time, c.off_time, START_POINT, (c.x, c.y)) for c in instance.couriers.values()
    ]
    by_id = {c.courier_id: c for c in couriers}
    orders = sorted(instance.orders.values(), key=lambda o: (o.placement_time, o.id))
    jobs: dict[str, Job] = {}
    records: dict[str, OrderRecord] = {}
    assignments: list[AssignmentRecord] = []
    moves: list[CourierMove] = []
    last_on = max((c.off_time for c in couriers), default=-math.inf)
    placed, rounds = 0, 0
    first = orders[0].placement_time if orders else 0.0
    now = first
    while (placed < len(orders) or jobs) and now < last_on:
        while placed < len(orders) and orders[placed].placement_time <= now:
            o = orders[placed]
            r = instance.restaurants[o.restaurant]
            jobs[o.id] = Job(o.id, o.id, r.id, (r.x, r.y), o.ready_time, (o.x, o.y))
            placed += 1
        states = [_state(c, now) for c in couriers if c.on_time <= now < c.off_time]
        if jobs and states:
            pending = list(jobs.values())
            if policy == "nearest-idle":
                decided = nearest_idle_round(pending, states, now, travel, params).assignments
            else:
                candidates = route_candidates(pending, params, travel)
                decided = assign_round(
                    candidates, states, now, travel, params, travel_many=travel_many
                ).assignments
            for a in decided:
                _carry_out(
                    a, by_id[a.courier_id], now, travel, service, moves, assignments, records, instance
                )
                for job_id in a.candidate.job_ids:
                    del jobs[job_id]
        rounds += 1
        now = first + rounds * round_minutes  # no drift from adding up fractions
    for o in orders:
        records.setdefault(o.id, OrderRecord(o.id, o.placement_time, o.ready_time))
    return Trace(assignments, [records[o.id] for o in instance.orders.values()], moves)


def _state(courier: _Courier, now: float) -> CourierState:
    """What the round sees: where the courier is now, what it still has to do, what it carries."""
    ahead = [i for i, planned in enumerate(courier.timeline) if planned.departure > now]
    if not ahead:
        _, point, _ = courier.last()
        return CourierState(courier.courier_id, point, CAPACITY, shift_end=courier.off_time)
    first = ahead[0]
    current = courier.timeline[first]
    load_before = courier.load_after[first - 1] if first > 0 else 0
    if current.arrival <= now:  # at the stop: busy there until it leaves
        return CourierState(
            courier.courier_id,
            current.stop.location,
            CAPACITY,
            shift_end=courier.off_time,
            load=courier.load_after[first],
            available_at=current.departure,
            route=tuple(planned.stop for planned in courier.timeline[first + 1 :]),
        )
    origin = courier.timeline[first - 1].stop.location if first > 0 else courier.point
    span = current.arrival - current.leaves_for
    fraction = 1.0 if span <= 0 else max(0.0, min(1.0, (now - current.leaves_for) / span))
    here = (
        origin[0] + (current.stop.location[0] - origin[0]) * fraction,
        origin[1] + (current.stop.location[1] - origin[1]) * fraction,
    )
    return CourierState(
        courier.courier_id,
        here,
        CAPACITY,
        shift_end=courier.off_time,
        load=load_before,
        route=tuple(planned.stop for planned in courier.timeline[first:]),
    )


def _carry_out(
    a: Assignment,
    courier: _Courier,
    now: float,
    travel: Callable[[Point, Point], float],
    service: ServiceTimes,
    moves: list[CourierMove],
    assignments: list[AssignmentRecord],
    records: dict[str, OrderRecord],
    instance: Instance,
) -> None:
    """Append the assignment's new stops to the courier's timeline and record what will happen."""
    place, point, free = courier.last()
    if not courier.timeline or free <= now:  # idle: the trip starts now from where it waits
        courier.place, courier.point = place, point
        courier.timeline, courier.load_after = [], []
        free = now
    new_stops = a.route.stops[len(a.route.stops) - _new_count(a) :]
    clock, load = free, courier.load_after[-1] if courier.load_after else 0
    pickup_at: float | None = None
    for stop in new_stops:
        to = stop.shop_id if stop.kind == "pickup" else stop.order_id
        assert to is not None
        arrival = clock + travel(point, stop.location)
        if to != place:
            moves.append(CourierMove(courier.courier_id, clock, place, to))
        if stop.kind == "pickup":
            served = arrival + service.pickup_minutes / 2
            if stop.ready_at is not None:
                served = max(served, stop.ready_at)
            leave = served + service.pickup_minutes / 2
            load += stop.items
            pickup_at = served if pickup_at is None else pickup_at
        else:
            served = arrival + service.dropoff_minutes / 2
            leave = served + service.dropoff_minutes / 2
            load -= stop.items
            o = instance.orders[to]
            records[to] = OrderRecord(
                to, o.placement_time, o.ready_time, now, pickup_at, served, courier.courier_id
            )
        courier.timeline.append(_Planned(stop, to, clock, arrival, served, leave))
        courier.load_after.append(load)
        place, point, clock = to, stop.location, leave
    assert pickup_at is not None
    delivered_in = tuple(stop.order_id for stop in new_stops if stop.order_id is not None)
    assignments.append(AssignmentRecord(now, pickup_at, courier.courier_id, delivered_in))


def _new_count(a: Assignment) -> int:
    return len(a.candidate.pickups) + len(a.candidate.dropoffs)
