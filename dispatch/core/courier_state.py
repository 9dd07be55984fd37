"""What the dispatch core knows about a courier when a round runs: where and when it will be, what it is
committed to, and what may still be re-planned.

Time is exact by construction: the stop a courier is driving to (or standing at) is timed from when the
courier reached it or set off towards it (`first_arrival`), never by placing the courier on a straight line
and rounding the rest of the leg, which can come out earlier than the leg it is actually driving. Every
later stop is timed from the previous one (`routes.simulate`), so shift ends, ready times and capacities
checked on these timings hold when the courier keeps them.

Commitments. A courier is committed only to what it is already doing: the stop it is driving to (or is at),
the goods it carries, and what it collects at that stop (their drop-offs). Everything queued behind stays in
play each round. `commitments` splits a route so: committed jobs are those of the first stop and those on
board (a drop-off whose jobs have no pickup left on the route), closed over orders (a split order stays
whole) and over stops (a stop is committed or queued as a whole); the committed stops keep their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dispatch.core.routes import Point, ServiceTimes, Stop, StopTiming, Travel, simulate


@dataclass(frozen=True, slots=True)
class CourierState:
    courier_id: str
    position: Point  # latest trusted position
    capacity: int  # items the courier can carry at once
    load: int = 0  # items on board now
    available_at: float | None = None  # busy until then (e.g. mid hand-over); None: now
    shift_end: float | None = None  # no pickup after this minute; deliveries may run over
    on_shift: bool = True
    stale: bool = False  # no recent location ping: where it is cannot be trusted
    route: tuple[Stop, ...] = ()  # stops still to do, in order
    # When the courier reaches route[0]: when it got there, or the earliest it can from where and when it set
    # off (`earliest_arrival`). None: it sets off from `position` when free.
    first_arrival: float | None = None

    @property
    def assignable(self) -> bool:
        return self.on_shift and not self.stale

    def busy(self, now: float) -> bool:
        """Executing an assignment: stops to do, or still serving the last one."""
        return bool(self.route) or (self.available_at is not None and self.available_at > now)


def timeline(
    courier: CourierState,
    now: float,
    travel: Travel,
    service: ServiceTimes,
    stops: Sequence[Stop] | None = None,
) -> tuple[StopTiming, ...]:
    """The timings of the courier's route, or of `stops` (which must begin with its route)."""
    start = now if courier.available_at is None else max(now, courier.available_at)
    todo = courier.route if stops is None else stops
    first = courier.first_arrival if courier.route else None
    return simulate(courier.position, start, todo, travel, service, first_arrival=first)


def next_free(
    courier: CourierState, now: float, travel: Travel, service: ServiceTimes
) -> tuple[Point, float]:
    """Where and when the courier will have finished its current route (new work goes after it)."""
    start = now if courier.available_at is None else max(now, courier.available_at)
    if not courier.route:
        return courier.position, start
    last = timeline(courier, now, travel, service)[-1]
    return last.stop.location, last.departure


def load_when_free(courier: CourierState) -> int:
    """Items still on board once the current route is done (normally none)."""
    load = courier.load
    for stop in courier.route:
        load += stop.items if stop.kind == "pickup" else -stop.items
    return load


def earliest_arrival(
    destination: Point,
    now: float,
    travel: Travel,
    *,
    position: Point,
    set_off: tuple[Point, float] | None = None,
    fix: tuple[Point, float] | None = None,
    crow: Travel | None = None,
) -> float:
    """When a courier on its way to `destination` gets there at the earliest, never before it can.

    With `set_off` (where and when it left for this destination): that time plus the leg's travel, and not
    before a `fix` (a position and its time, taken since it set off) plus the travel left from there at the
    model's speed, unrounded (`crow`; a rounded-up remainder of a leg can overshoot the rounded-up leg).
    Without: from `position`, now. Never before now.
    """
    if set_off is None:
        return now + travel(position, destination)
    origin, at = set_off
    arrival = max(now, at + travel(origin, destination))
    if fix is not None and crow is not None and fix[1] >= at:
        arrival = max(arrival, fix[1] + crow(fix[0], destination))
    return arrival


@dataclass(frozen=True, slots=True)
class Commitments:
    committed: tuple[Stop, ...]  # what the courier does whatever the round decides, in order
    queued: tuple[Stop, ...]  # the rest, in order: in play
    queued_jobs: frozenset[str]


def commitments(route: Sequence[Stop]) -> Commitments:
    """Split a route into what the courier is committed to and what is queued (see the module docstring).

    O(stops x rounds of closure); a route has a handful of stops."""
    if not route:
        return Commitments((), (), frozenset())
    to_pick = {job for stop in route if stop.kind == "pickup" for job in stop.job_ids}
    committed = set(route[0].job_ids)
    for stop in route:
        if stop.kind == "dropoff" and not to_pick.intersection(stop.job_ids):
            committed.update(stop.job_ids)  # on board
    orders: dict[str, set[str]] = {}
    for stop in route:
        if stop.kind == "dropoff" and stop.order_id is not None:
            orders.setdefault(stop.order_id, set()).update(stop.job_ids)
    changed = True
    while changed:
        changed = False
        for group in [*(set(stop.job_ids) for stop in route), *orders.values()]:
            if group & committed and not group <= committed:
                committed |= group
                changed = True
    kept = tuple(s for i, s in enumerate(route) if i == 0 or committed.intersection(s.job_ids))
    queued = tuple(s for i, s in enumerate(route) if i > 0 and not committed.intersection(s.job_ids))
    return Commitments(kept, queued, frozenset(j for s in queued for j in s.job_ids))
