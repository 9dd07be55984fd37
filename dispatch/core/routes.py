"""Courier routes: stops, their timing (the ETAs), and the best stop order for a route candidate.

Pure: travel time comes in as a function returning minutes, and time is a number of minutes on an
axis the caller chooses (the service uses minutes since an epoch, the replay the instance's minutes).

Timing rules, those of the Meal Delivery Routing Problem so the replay reproduces them exactly:
a pickup happens at max(ready time, arrival + half the pickup service) and the courier leaves half
a service later; a drop-off happens at arrival + half the drop-off service and the courier leaves
half a service later.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Point = tuple[float, float]
"""(lat, lng); the core never looks inside, it only hands points to the travel function."""
Travel = Callable[[Point, Point], float]
"""Travel time in minutes from one point to another."""
TravelMany = Callable[[NDArray[np.float64], Point], NDArray[np.float64]]
"""Travel minutes from each of n points (an n x 2 array) to one point, vectorised."""
StopKind = Literal["pickup", "dropoff"]

EXHAUSTIVE_LIMIT = 4
"""Up to this many pickups (or drop-offs) every order is tried; beyond it, nearest neighbour."""


@dataclass(frozen=True, slots=True)
class ServiceTimes:
    pickup_minutes: float
    dropoff_minutes: float


@dataclass(frozen=True, slots=True)
class Stop:
    kind: StopKind
    location: Point
    job_ids: tuple[str, ...]
    order_id: str | None = None  # drop-offs: the order handed over here
    shop_id: str | None = None  # pickups: the shop collected from
    ready_at: float | None = None  # pickups: when every job collected here is ready
    items: int = 0  # picked up or handed over here


@dataclass(frozen=True, slots=True)
class StopTiming:
    """One stop's ETAs: arrival, the pickup or hand-over itself, and departure."""

    stop: Stop
    arrival: float
    service_at: float
    departure: float


@dataclass(frozen=True, slots=True)
class Route:
    courier_id: str
    stops: tuple[Stop, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """Stops in order with their timings; `finish` is when the last stop is served."""

    timings: tuple[StopTiming, ...]
    finish: float

    @property
    def stops(self) -> tuple[Stop, ...]:
        return tuple(timing.stop for timing in self.timings)


def simulate(
    start: Point,
    start_time: float,
    stops: Iterable[Stop],
    travel: Travel,
    service: ServiceTimes,
    first_arrival: float | None = None,
) -> tuple[StopTiming, ...]:
    """Drive the stops in order from `start`, leaving at `start_time`.

    `first_arrival`, when known, is when the courier reaches (or reached) the first stop: a courier
    already on its way or already there is not placed on a straight line and re-timed from `start`
    (a leg rounded up from where it set off can end later than one rounded up from midway). Nothing
    is served before `start_time` (the present): a courier already at a stop serves it now at the
    earliest.
    """
    half_pickup = service.pickup_minutes / 2
    half_dropoff = service.dropoff_minutes / 2
    timings: list[StopTiming] = []
    here, clock = start, start_time
    for stop in stops:
        if first_arrival is not None and not timings:
            arrival = first_arrival
        else:
            arrival = clock + travel(here, stop.location)
        if stop.kind == "pickup":
            served = arrival + half_pickup
            if stop.ready_at is not None:
                served = max(served, stop.ready_at)
        else:
            served = arrival + half_dropoff
        served = max(served, start_time)
        leave = served + (half_pickup if stop.kind == "pickup" else half_dropoff)
        timings.append(StopTiming(stop, arrival, served, leave))
        here, clock = stop.location, leave
    return tuple(timings)


def plan(
    start: Point, start_time: float, stops: Iterable[Stop], travel: Travel, service: ServiceTimes
) -> Plan:
    timings = simulate(start, start_time, stops, travel, service)
    return Plan(timings, timings[-1].service_at if timings else start_time)


@dataclass(frozen=True, slots=True)
class RouteOption:
    """One stop order for a candidate (pickups, then drop-offs), reduced to closed form.

    The courier only changes the arrival `a` at the first pickup. Each pickup step is
    t -> max(ready, t + gap), and such steps compose into one of the same shape, so the last pickup
    happens at max(release, a + lead) and the last drop-off `tail` minutes later (drop-offs have
    no time windows). This lets the assignment score thousands of couriers with array arithmetic.
    """

    stops: tuple[Stop, ...]
    first_pickup: Point
    release: float
    lead: float
    tail: float

    def last_pickup_at(self, arrival: float) -> float:
        return max(self.release, arrival + self.lead)

    def finish(self, arrival: float) -> float:
        return self.last_pickup_at(arrival) + self.tail


def route_options(
    pickups: Sequence[Stop], dropoffs: Sequence[Stop], travel: Travel, service: ServiceTimes
) -> tuple[RouteOption, ...]:
    """The pickup orders worth considering, each with its best drop-off order.

    Every pickup order up to EXHAUSTIVE_LIMIT pickups; beyond it, a nearest-neighbour chain from
    each possible first pickup (so the courier's start picks the best of them). For a given last
    pickup the best drop-off order does not depend on when the courier gets there.
    """
    if not pickups:
        raise ValueError("a route option needs at least one pickup")
    half_pickup = service.pickup_minutes / 2
    tails: dict[Point, tuple[tuple[Stop, ...], float]] = {}
    options: list[RouteOption] = []
    for order in _pickup_orders(pickups, travel):
        release = -math.inf if order[0].ready_at is None else order[0].ready_at
        lead = half_pickup
        for before, after in itertools.pairwise(order):
            gap = service.pickup_minutes + travel(before.location, after.location)
            release = release + gap
            if after.ready_at is not None:
                release = max(release, after.ready_at)
            lead += gap
        last = order[-1].location
        if last not in tails:
            tails[last] = best_dropoff_order(last, dropoffs, travel, service)
        drops, span = tails[last]
        tail = half_pickup + span if drops else 0.0
        options.append(RouteOption(order + drops, order[0].location, release, lead, tail))
    return tuple(options)


def best_dropoff_order(
    start: Point, dropoffs: Sequence[Stop], travel: Travel, service: ServiceTimes
) -> tuple[tuple[Stop, ...], float]:
    """Drop-off order reaching the last door soonest, and minutes from leaving `start` to then.

    Without time windows that is the order of least travel: exhaustive up to EXHAUSTIVE_LIMIT,
    nearest neighbour beyond.
    """
    if not dropoffs:
        return (), 0.0
    if len(dropoffs) <= EXHAUSTIVE_LIMIT:
        order = min(itertools.permutations(dropoffs), key=lambda drops: _path_minutes(start, drops, travel))
    else:
        order = _nearest_neighbour(start, dropoffs, travel)
    span = (
        _path_minutes(start, order, travel)
        + service.dropoff_minutes * (len(order) - 1)
        + service.dropoff_minutes / 2
    )
    return tuple(order), span


def build_route(
    start: Point,
    start_time: float,
    pickups: Sequence[Stop],
    dropoffs: Sequence[Stop],
    travel: Travel,
    service: ServiceTimes,
) -> Plan:
    """All pickups, then all drop-offs, in the order that serves the last drop-off soonest."""
    if not pickups:
        order, _ = best_dropoff_order(start, dropoffs, travel, service)
        return plan(start, start_time, order, travel, service)
    legs: dict[Point, float] = {}

    def finish(option: RouteOption) -> float:
        if option.first_pickup not in legs:
            legs[option.first_pickup] = travel(start, option.first_pickup)
        return option.finish(start_time + legs[option.first_pickup])

    best = min(route_options(pickups, dropoffs, travel, service), key=finish)
    return plan(start, start_time, best.stops, travel, service)


def eta_changes(
    old: Iterable[StopTiming], new: Iterable[StopTiming], threshold_minutes: float = 1.0
) -> tuple[StopTiming, ...]:
    """New timings worth pushing: stops that are new, or whose arrival or service moved by more
    than the threshold. Stops are matched by identity, so completed stops simply drop out."""
    before = {timing.stop: timing for timing in old}
    changed: list[StopTiming] = []
    for timing in new:
        previous = before.get(timing.stop)
        if (
            previous is None
            or abs(timing.arrival - previous.arrival) > threshold_minutes
            or abs(timing.service_at - previous.service_at) > threshold_minutes
        ):
            changed.append(timing)
    return tuple(changed)


def remaining_route(route: Route, completed_count: int) -> Route:
    """The route without its first `completed_count` stops (stops complete in order)."""
    if not 0 <= completed_count <= len(route.stops):
        raise ValueError(f"{completed_count} stops completed on a route of {len(route.stops)} stops")
    return Route(route.courier_id, route.stops[completed_count:])


def _pickup_orders(pickups: Sequence[Stop], travel: Travel) -> list[tuple[Stop, ...]]:
    if len(pickups) <= EXHAUSTIVE_LIMIT:
        return list(itertools.permutations(pickups))
    return [
        (first, *_nearest_neighbour(first.location, [p for p in pickups if p is not first], travel))
        for first in pickups
    ]


def _nearest_neighbour(start: Point, stops: Sequence[Stop], travel: Travel) -> tuple[Stop, ...]:
    left = list(stops)
    order: list[Stop] = []
    here = start
    while left:
        nearest = min(left, key=lambda stop: travel(here, stop.location))
        left.remove(nearest)
        order.append(nearest)
        here = nearest.location
    return tuple(order)


def _path_minutes(start: Point, stops: Sequence[Stop], travel: Travel) -> float:
    total, here = 0.0, start
    for stop in stops:
        total += travel(here, stop.location)
        here = stop.location
    return total


def travel_from(
    points: NDArray[np.float64], to: Point, travel: Travel, travel_many: TravelMany | None
) -> NDArray[np.float64]:
    """Travel minutes from each of `points` to `to`: vectorised when `travel_many` is given."""
    if travel_many is not None:
        return np.asarray(travel_many(points, to), dtype=np.float64)
    return np.fromiter((travel((float(x), float(y)), to) for x, y in points), np.float64, len(points))
