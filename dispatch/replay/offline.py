"""The dispatch core's own rounds run over an instance, with no server: fast, for tuning policies.

A replay through the real server takes minutes of wall time; this takes seconds, so a policy or one of its
parameters can be tried on many seeds before the figures that count are measured with `replay`. It calls
the very functions the server's round calls (`plan_round`, or `nearest_idle_round`) every `round_minutes`,
on the instance's plane (points are (x, y) metres, travel is the instance's rounded-up euclidean minutes),
and moves couriers as the simulated courier apps do:

- a shop accepts each order when it is placed, ready at its ready time (the replay's shops do the same);
- with an `admit` check (as the server's `DISPATCH_UNDELIVERABLE=refuse`), an order that check refuses at
  its placement is never placed: it is recorded as refused;
- couriers take part in rounds while on shift (on_time <= now < off_time) and finish their routes after;
- a courier keeps what it is committed to (the stop it is driving to or at, and what it carries); the stops
  queued behind are re-planned each round: they stay, move to another courier, or wait again;
- the courier drives each leg in the instance's time, picks up at max(ready, arrival + half the service) and
  leaves half a service later, hands over at arrival + half the drop-off service and leaves half a service
  later: exactly the timings the core computes (`routes.simulate`), which the round's decisions rest on;
- between stops a courier is where it would be on the straight line (what its location pings would say),
  and the round is told when it reaches the stop it is driving to (`CourierState.first_arrival`).

Pure: no I/O and no clock; the result is a `Trace` for `compute_metrics`, like a live replay's, written
from the couriers' final timelines (what they did).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from dispatch.core.admission import Part, Upcoming, assess
from dispatch.core.assignment import (
    DispatchParams,
    Job,
    RoundResult,
    nearest_idle_round,
    plan_round,
)
from dispatch.core.courier_state import CourierState, commitments, timeline
from dispatch.core.routes import Point, ServiceTimes, Stop, StopTiming
from dispatch.replay.instance import START_POINT, Instance, Order
from dispatch.replay.trace import AssignmentRecord, CourierMove, OrderRecord, Trace

Policy = Literal["ours", "nearest-idle"]
CAPACITY = 20  # items; the replay registers its couriers with this capacity, one item per order

Admit = Callable[[Order, list[CourierState], list[Job], float], bool]
"""At an order's placement: the couriers on shift (as a round would see them), the work waiting or queued,
and the time -> whether the order is taken (False: refused)."""


@dataclass
class _Planned:
    """A stop on a courier's timeline, with the times the courier keeps."""

    stop: Stop
    place: str  # restaurant id (pickup) or order id (drop-off)
    leaves_for: float  # when the courier sets off towards it
    timing: StopTiming
    assigned_at: float  # the round that gave the courier this stop, as it now is


@dataclass
class _Courier:
    courier_id: str
    on_time: float
    off_time: float
    start: Point
    timeline: list[_Planned] = field(default_factory=list)

    def where(self) -> tuple[str, Point]:
        """Where the courier is or last was."""
        if not self.timeline:
            return START_POINT, self.start
        last = self.timeline[-1]
        return last.place, last.stop.location

    def ahead(self, now: float) -> int:
        """Index of the first stop the courier has not left yet."""
        for i in range(len(self.timeline) - 1, -1, -1):
            if self.timeline[i].timing.departure <= now:
                return i + 1
        return 0


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
    admit: Admit | None = None,
    phase_minutes: float | None = None,
) -> Trace:
    """Run the day under `policy` with rounds every `round_minutes`, the first `phase_minutes` after the first
    placement (default: half a round); deterministic.

    The instance's times are whole minutes, so rounds on whole minutes would see every placement, ready time
    and arrival the moment it happens and send a held courier exactly when it has to set off. The live
    server's rounds fall anywhere between such events (an event waits half a round for the next one on
    average): halfway is that average, so offline no longer counts on a coincidence the server lacks."""
    phase = round_minutes / 2 if phase_minutes is None else phase_minutes
    p = instance.parameters
    service = ServiceTimes(p.pickup_service_minutes, p.dropoff_service_minutes)
    params = params or DispatchParams(service=service)
    travel, travel_many = _travel(p.meters_per_minute), _travel_many(p.meters_per_minute)
    couriers = [_Courier(c.id, c.on_time, c.off_time, (c.x, c.y)) for c in instance.couriers.values()]
    by_id = {c.courier_id: c for c in couriers}
    orders = sorted(instance.orders.values(), key=lambda o: (o.placement_time, o.id))
    pending: dict[str, Job] = {}
    refused: list[str] = []
    last_on = max((c.off_time for c in couriers), default=-math.inf)
    placed, rounds = 0, 0
    first = (orders[0].placement_time if orders else 0.0) + phase
    now = first
    while (placed < len(orders) or pending or _busy(couriers, now)) and now < last_on:
        states = {c.courier_id: _state(c, now, travel) for c in couriers if c.on_time <= now < c.off_time}
        queued = [job for state in states.values() for job in _queued_jobs(state, instance)]
        while placed < len(orders) and orders[placed].placement_time <= now:
            o = orders[placed]
            placed += 1
            # The server checks an order when it is placed, not at the next round: the fleet as it was then.
            if admit is not None:
                at = o.placement_time
                then = [_state(c, at, travel) for c in couriers if c.on_time <= at < c.off_time]
                if not admit(o, then, [*pending.values(), *queued], at):
                    refused.append(o.id)
                    continue
            r = instance.restaurants[o.restaurant]
            pending[o.id] = Job(o.id, o.id, r.id, (r.x, r.y), o.ready_time, (o.x, o.y))
        if (pending or queued) and states:
            jobs = [*pending.values(), *queued]
            fleet = list(states.values())
            if policy == "nearest-idle":
                result = nearest_idle_round(list(pending.values()), fleet, now, travel, params)
            else:
                result = plan_round(jobs, fleet, now, travel, params, travel_many=travel_many)
            _apply(result, states, by_id, now, travel, service, instance)
            taken = {j for a in result.assignments for j in a.candidate.job_ids}
            for job_id in taken:
                pending.pop(job_id, None)
            for job in queued:
                if job.job_id in result.released and job.job_id not in taken:
                    pending[job.job_id] = replace(job, holder=None)
        rounds += 1
        now = first + rounds * round_minutes  # no drift from adding up fractions
    return _trace(instance, couriers, refused)


def admission(instance: Instance) -> Admit:
    """The server's check at placement (`DISPATCH_UNDELIVERABLE=refuse`, `core.admission`) on the instance:
    the couriers on shift as the round sees them, the waiting jobs ahead, and the couriers whose shift starts
    later at their start points; the order counts as ready at once, as the server must assume."""
    p = instance.parameters
    service = ServiceTimes(p.pickup_service_minutes, p.dropoff_service_minutes)
    travel, travel_many = _travel(p.meters_per_minute), _travel_many(p.meters_per_minute)
    later = sorted(instance.couriers.values(), key=lambda c: (c.on_time, c.id))

    def admit(order: Order, couriers: list[CourierState], waiting: list[Job], now: float) -> bool:
        r = instance.restaurants[order.restaurant]
        part = Part((r.x, r.y), (order.x, order.y), 1, now)
        ahead = [Part(j.pickup, j.dropoff, j.items, j.ready_at) for j in waiting if j.holder is None]
        upcoming = [
            Upcoming(c.id, c.on_time, c.off_time, CAPACITY, (c.x, c.y)) for c in later if c.on_time > now
        ]
        return assess([part], ahead, couriers, upcoming, now, travel, service, travel_many).deliverable

    return admit


def _busy(couriers: list[_Courier], now: float) -> bool:
    """Someone still has stops to do (queued work stays in play until it is started)."""
    return any(c.timeline and c.timeline[-1].timing.departure > now for c in couriers)


def _state(courier: _Courier, now: float, travel: Callable[[Point, Point], float]) -> CourierState:
    """What the round sees: where the courier is now, what it still has to do, what it carries."""
    first = courier.ahead(now)
    todo = courier.timeline[first:]
    load = sum(
        planned.stop.items if planned.stop.kind == "pickup" else -planned.stop.items
        for planned in courier.timeline[:first]
    )
    base = CourierState(
        courier.courier_id, courier.where()[1], CAPACITY, load=load, shift_end=courier.off_time
    )
    if not todo:
        return base
    current = todo[0]
    if current.timing.arrival <= now:  # at the stop: busy there until it leaves
        return replace(
            base,
            position=current.stop.location,
            load=load + (current.stop.items if current.stop.kind == "pickup" else -current.stop.items),
            available_at=current.timing.departure,
            route=tuple(planned.stop for planned in todo[1:]),
        )
    origin = courier.timeline[first - 1].stop.location if first > 0 else courier.start
    span = current.timing.arrival - current.leaves_for
    fraction = 1.0 if span <= 0 else max(0.0, min(1.0, (now - current.leaves_for) / span))
    here = (
        origin[0] + (current.stop.location[0] - origin[0]) * fraction,
        origin[1] + (current.stop.location[1] - origin[1]) * fraction,
    )
    # Where it is, and when it gets there: the leg was rounded up from where it set off.
    return replace(
        base, position=here, route=tuple(p.stop for p in todo), first_arrival=current.timing.arrival
    )


def _queued_jobs(state: CourierState, instance: Instance) -> list[Job]:
    """The jobs queued behind what the courier is committed to, as jobs the round may move."""
    jobs = []
    for stop in commitments(state.route).queued:
        if stop.kind != "pickup" or stop.shop_id is None:
            continue
        for job_id in stop.job_ids:
            o = instance.orders[job_id]
            jobs.append(
                Job(
                    job_id,
                    job_id,
                    stop.shop_id,
                    stop.location,
                    o.ready_time,
                    (o.x, o.y),
                    holder=state.courier_id,
                )
            )
    return jobs


def _apply(
    result: RoundResult,
    states: dict[str, CourierState],
    by_id: dict[str, _Courier],
    now: float,
    travel: Callable[[Point, Point], float],
    service: ServiceTimes,
    instance: Instance,
) -> None:
    """Give each courier its new timeline: committed stops, then its new candidate, if any."""
    released = set(result.released)
    new: dict[str, tuple[StopTiming, ...]] = {}
    for a in result.assignments:
        if not a.unchanged:
            new[a.courier_id] = a.timings
    for courier_id, state in states.items():
        if courier_id in new:
            continue
        split = commitments(state.route)
        if released.intersection(split.queued_jobs):
            new[courier_id] = timeline(replace(state, route=split.committed), now, travel, service)
    for courier_id, timings in new.items():
        courier, state = by_id[courier_id], states[courier_id]
        first = len(courier.timeline) - len(state.route)
        old = {planned.stop: planned for planned in courier.timeline[first:]}
        future: list[_Planned] = []
        for i, t in enumerate(timings):
            before = old.get(t.stop)
            if i == 0 and state.first_arrival is not None and before is not None:
                leaves = before.leaves_for  # already on its way there
            elif i == 0:
                leaves = now if state.available_at is None else max(now, state.available_at)
            else:
                leaves = timings[i - 1].departure
            place = t.stop.shop_id if t.stop.kind == "pickup" else t.stop.order_id
            assert place is not None
            assigned = now if before is None else before.assigned_at
            future.append(_Planned(t.stop, place, leaves, t, assigned))
        courier.timeline[first:] = future


def _trace(instance: Instance, couriers: list[_Courier], refused: list[str]) -> Trace:
    """What the couriers did, as the evaluator's files describe it."""
    moves: list[CourierMove] = []
    assignments: list[AssignmentRecord] = []
    records: dict[str, OrderRecord] = {}
    for courier in couriers:
        place = START_POINT
        delivered: dict[str, float] = {}
        for planned in courier.timeline:
            if planned.place != place:
                moves.append(CourierMove(courier.courier_id, planned.leaves_for, place, planned.place))
            place = planned.place
            if planned.stop.kind == "dropoff":
                delivered[planned.place] = planned.timing.service_at
        for planned in courier.timeline:
            if planned.stop.kind != "pickup":
                continue
            orders = sorted(planned.stop.job_ids, key=lambda o: (delivered.get(o, math.inf), o))
            at, pickup = planned.assigned_at, planned.timing.service_at
            assignments.append(AssignmentRecord(at, pickup, courier.courier_id, tuple(orders)))
            for o in orders:
                order = instance.orders[o]
                records[o] = OrderRecord(
                    o,
                    order.placement_time,
                    order.ready_time,
                    at,
                    pickup,
                    delivered.get(o),
                    courier.courier_id,
                )
    moves.sort(key=lambda m: m.departure_time)
    assignments.sort(key=lambda a: (a.assignment_time, a.pickup_time, a.courier))
    out = [
        records.get(o) or OrderRecord(o, order.placement_time, order.ready_time)
        for o, order in instance.orders.items()
    ]
    return Trace(assignments, out, moves, refused=tuple(refused))
