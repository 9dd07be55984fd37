"""An operator moves work to another courier: which moves are allowed, and the stops the work needs there.

Pure: the service loads the jobs and the courier, asks here, and writes what this decides. Work goes at the
end of the courier's route as a route of its own: a pickup per shop, then a drop-off per order, in the
order the jobs came. Only goods still at the shop move (accepted or ready, not picked up); the courier must
be active and on shift, and may not be the one that already has all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dispatch.core.errors import TransitionError
from dispatch.core.jobs import JobState
from dispatch.core.routes import Point, Stop
from dispatch.core.stops import WAITING


@dataclass(frozen=True, slots=True)
class MovedJob:
    job_id: str
    order_id: str
    shop_id: str
    state: JobState
    delivery: bool  # a pick-up order's goods go to the resident at the counter, never to a courier
    courier_id: str | None  # whose live route holds it now (None: not on a route yet)
    shop: Point
    door: Point
    ready_at: float | None  # minutes, as the route's times
    items: int


@dataclass(frozen=True, slots=True)
class Target:
    courier_id: str
    active: bool
    on_shift: bool


def check_move(jobs: Sequence[MovedJob], target: Target) -> None:
    """Raise the TransitionError (409) that refuses the move, if any."""
    if not jobs:
        raise TransitionError("nothing_to_move", "no goods left at a shop to move")
    not_waiting = [j for j in jobs if j.state not in WAITING]
    if not_waiting:
        raise TransitionError(
            "job_not_waiting",
            "only goods still at the shop (accepted or ready) can move to another courier",
            details={"jobs": {j.job_id: j.state.value for j in not_waiting}},
        )
    pickups = [j.job_id for j in jobs if not j.delivery]
    if pickups:
        raise TransitionError(
            "not_a_delivery", "the resident collects these at the shop", details={"jobs": pickups}
        )
    if not target.active:
        raise TransitionError("courier_inactive", "that courier is deactivated")
    if not target.on_shift:
        raise TransitionError("courier_off_shift", "that courier is not on shift")
    if all(j.courier_id == target.courier_id for j in jobs):
        raise TransitionError("same_courier", "that courier has this work already")


def new_stops(jobs: Sequence[MovedJob]) -> tuple[Stop, ...]:
    """A pickup per shop (when every job collected there is ready), then a drop-off per order."""
    by_shop: dict[str, list[MovedJob]] = {}
    by_order: dict[str, list[MovedJob]] = {}
    for j in jobs:
        by_shop.setdefault(j.shop_id, []).append(j)
        by_order.setdefault(j.order_id, []).append(j)
    pickups = [
        Stop(
            "pickup",
            group[0].shop,
            tuple(j.job_id for j in group),
            shop_id=shop_id,
            ready_at=_latest([j.ready_at for j in group]),
            items=sum(j.items for j in group),
        )
        for shop_id, group in by_shop.items()
    ]
    drops = [
        Stop(
            "dropoff",
            group[0].door,
            tuple(j.job_id for j in group),
            order_id=order_id,
            items=sum(j.items for j in group),
        )
        for order_id, group in by_order.items()
    ]
    return (*pickups, *drops)


def _latest(times: Sequence[float | None]) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None
