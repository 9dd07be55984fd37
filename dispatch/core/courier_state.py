"""What the dispatch core knows about a courier when a round runs, and when and where it is next free."""

from __future__ import annotations

from dataclasses import dataclass

from dispatch.core.routes import Point, ServiceTimes, Stop, Travel, simulate


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

    @property
    def assignable(self) -> bool:
        return self.on_shift and not self.stale


def next_free(
    courier: CourierState, now: float, travel: Travel, service: ServiceTimes
) -> tuple[Point, float]:
    """Where and when the courier will have finished its current route (new work goes after it)."""
    start = now if courier.available_at is None else max(now, courier.available_at)
    if not courier.route:
        return courier.position, start
    last = simulate(courier.position, start, courier.route, travel, service)[-1]
    return last.stop.location, last.departure


def load_when_free(courier: CourierState) -> int:
    """Items still on board once the current route is done (normally none)."""
    load = courier.load
    for stop in courier.route:
        load += stop.items if stop.kind == "pickup" else -stop.items
    return load
