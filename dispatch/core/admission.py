"""Whether a delivery order can be delivered at all, decided when it is placed.

Pure: the couriers, the work ahead of the order and the time come in as arguments.

Rules. An order is *deliverable* when each of its parts (one job per shop) can be collected by a courier
before that courier's shift ends:

- a courier on shift (fresh) is free where and when it finishes its whole current route (`next_free`); a
  courier whose planned shift starts within `UPCOMING_MINUTES` is free at its start, where it will start (or,
  not known, at the shop: the optimistic case, so that an order is refused only when no courier can possibly
  take it; a shift starting later is no answer to an order wanted now, but may offer a later slot);
- the work ahead of the order (jobs waiting for a courier, in ready order, then the order's own parts) is
  given greedily to the courier that would collect it soonest among those with the capacity, who is then free
  at its door after the hand-over; a job no courier can collect in time is skipped (it holds no one);
- the order's parts count as ready at once (no shop has said how long it needs yet): the same optimism.

Tie-breaks: the earliest pickup, then the courier listed first. Complexity: O((jobs ahead + parts) x
couriers) travel evaluations (vectorised with `travel_many`).

An undeliverable order gets `alternatives`: pick-up when the resident can walk to every shop, and a later
slot when a planned shift could take it (its start plus the trip, to an hour later).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dispatch.core.courier_state import CourierState, load_when_free, next_free
from dispatch.core.routes import Point, ServiceTimes, Travel, TravelMany, travel_from

SLOT_MINUTES = 60.0  # the length of an offered later slot
UPCOMING_MINUTES = 30.0  # a planned shift starting within this counts for an order wanted now


@dataclass(frozen=True, slots=True)
class Part:
    """One shop's part of an order (or of the work ahead of it)."""

    pickup: Point
    dropoff: Point
    items: int
    ready_at: float


@dataclass(frozen=True, slots=True)
class Upcoming:
    """A courier whose planned shift starts later."""

    courier_id: str
    start: float
    end: float
    capacity: int
    position: Point | None = None  # where it starts; None: not known


@dataclass(frozen=True, slots=True)
class Verdict:
    deliverable: bool
    pickup_at: float | None = None  # when the last part would be collected (deliverable)
    later_slot: tuple[float, float] | None = None  # a slot a planned shift could deliver in (undeliverable)


def assess(
    parts: Sequence[Part],
    ahead: Sequence[Part],
    couriers: Sequence[CourierState],
    upcoming: Sequence[Upcoming],
    now: float,
    travel: Travel,
    service: ServiceTimes,
    travel_many: TravelMany | None = None,
) -> Verdict:
    """Whether the order of `parts` can be delivered, with `ahead` waiting before it (see the rules)."""
    capacity = Capacity.build(ahead, couriers, upcoming, now, travel, service, travel_many)
    return capacity.admit(parts, now)


class Capacity:
    """The fleet after the work ahead: where and when each courier (on shift, or starting soon) is next free,
    until when and with how much room. Built once, it answers many orders (`admit`), each admitted order
    taking its couriers as if it were work ahead of the next: a node checks orders against a snapshot
    instead of reading the whole fleet and backlog for each one. Cost: `build` O(ahead x couriers), `admit`
    O(parts x couriers)."""

    def __init__(
        self,
        arrays: tuple[
            NDArray[np.float64],
            NDArray[np.bool_],
            NDArray[np.float64],
            NDArray[np.float64],
            NDArray[np.int64],
        ],
        upcoming: Sequence[Upcoming],
        travel: Travel,
        service: ServiceTimes,
        travel_many: TravelMany | None,
    ) -> None:
        self.points, self.known, self.when, self.deadline, self.spare = arrays
        self.upcoming = tuple(upcoming)
        self.travel, self.service, self.travel_many = travel, service, travel_many

    @classmethod
    def build(
        cls,
        ahead: Sequence[Part],
        couriers: Sequence[CourierState],
        upcoming: Sequence[Upcoming],
        now: float,
        travel: Travel,
        service: ServiceTimes,
        travel_many: TravelMany | None = None,
    ) -> Capacity:
        usable = [c for c in couriers if c.assignable]
        free = [next_free(c, now, travel, service) for c in usable]
        soon = [u for u in upcoming if u.start <= now + UPCOMING_MINUTES]
        n = len(usable) + len(soon)
        points = np.zeros((n, 2), dtype=np.float64)
        known = np.ones(n, dtype=np.bool_)  # where the courier is free is known (else: at the shop)
        when = np.empty(n, dtype=np.float64)
        deadline = np.empty(n, dtype=np.float64)
        spare = np.empty(n, dtype=np.int64)
        for k, (c, (point, at)) in enumerate(zip(usable, free, strict=True)):
            points[k], when[k] = point, at
            deadline[k] = math.inf if c.shift_end is None else c.shift_end
            spare[k] = c.capacity - load_when_free(c)
        for k, u in enumerate(soon, start=len(usable)):
            if u.position is None:
                known[k] = False
            else:
                points[k] = u.position
            when[k], deadline[k], spare[k] = max(now, u.start), u.end, u.capacity
        capacity = cls((points, known, when, deadline, spare), upcoming, travel, service, travel_many)
        for part in sorted(ahead, key=lambda p: p.ready_at):
            capacity._place(part, now)
        return capacity

    def admit(self, parts: Sequence[Part], now: float) -> Verdict:
        """Whether `parts` can all be collected in time (`now` may be later than the build). A deliverable
        order keeps its couriers (the next order sees them taken); an undeliverable one changes nothing."""
        saved = (self.points.copy(), self.known.copy(), self.when.copy())
        collected = [self._place(part, now) for part in parts]
        if all(at is not None for at in collected):
            return Verdict(True, pickup_at=max(at for at in collected if at is not None))
        self.points, self.known, self.when = saved
        return Verdict(False, later_slot=_later_slot(parts, self.upcoming, now, self.travel, self.service))

    def _place(self, part: Part, now: float) -> float | None:
        """Give the part to the courier collecting it soonest; when, or None if none can in time."""
        if len(self.points) == 0:
            return None
        half_pickup, half_dropoff = self.service.pickup_minutes / 2, self.service.dropoff_minutes / 2
        arrival = np.maximum(self.when, now) + np.where(
            self.known, travel_from(self.points, part.pickup, self.travel, self.travel_many), 0.0
        )
        pickup = np.maximum(part.ready_at, arrival + half_pickup)
        pickup[(self.spare < part.items) | (pickup > self.deadline)] = np.inf
        k = int(np.argmin(pickup))
        if not np.isfinite(pickup[k]):
            return None
        self.points[k], self.known[k] = part.dropoff, True
        self.when[k] = pickup[k] + half_pickup + self.travel(part.pickup, part.dropoff) + 2 * half_dropoff
        return float(pickup[k])


def _later_slot(
    parts: Sequence[Part], upcoming: Sequence[Upcoming], now: float, travel: Travel, service: ServiceTimes
) -> tuple[float, float] | None:
    """The first planned shift that could collect every part (one courier, the parts one after another) gives
    a slot from when the last door could be reached."""
    for u in sorted(upcoming, key=lambda u: (u.start, u.courier_id)):
        if u.start <= now or u.capacity < sum(p.items for p in parts):
            continue
        clock, here = u.start, u.position
        for part in parts:
            clock += (0.0 if here is None else travel(here, part.pickup)) + service.pickup_minutes
            here = part.pickup
        if clock - service.pickup_minutes / 2 > u.end:
            continue
        assert here is not None
        door = max(clock + travel(here, p.dropoff) for p in parts) + service.dropoff_minutes / 2
        return (door, door + SLOT_MINUTES)
    return None
