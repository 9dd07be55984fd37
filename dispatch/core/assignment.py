"""One dispatch round: route candidates from pending jobs, courier scores, the optimal matching.

Candidates. The jobs of one split order form one candidate: one courier collects from every shop,
then delivers. Single-shop orders from the same shop are bundled greedily, earliest ready first:
a bundle takes later orders whose ready time is within `bundle_window_minutes` of the first one's
and whose drop-off is within `bundle_dropoff_minutes` of travel from every drop-off already in it,
up to `max_bundle_size` orders (and `max_bundle_items` items).

Score. The minute the candidate's last item reaches its door, starting from where and when the
courier will be free (after its current route): travel to the first pickup, waiting for
readiness, service times, travel between stops. Infeasible (None / no edge) when the courier is
stale or off shift, would carry more than its capacity, or would make a pickup after its shift end
(deliveries may run over).

Matching. `linear_sum_assignment` on cost = finish minute + `empty_leg_weight` x minutes driven
empty to the first pickup (so of two couriers that would be there in time, the nearer goes, and
a courier finishing nearby can beat an idle one across town), infeasible pairs priced above any
sum of feasible ones: this places as many candidates as possible, then minimises the total cost.
Each courier gets at most one new candidate per round.

Deferral. With `defer_wait_minutes`, a matched candidate whose courier would wait at its shops
longer than that plus one round (`round_minutes`) is not placed this round: the courier is better left
free until it has to set off, and the candidate may meet more same-shop orders by then. The round's
length is added because held work goes at the first round after its courier must set off, up to a round
late (offline on 18 generated days, rounds every 30 s: gap to the floor 2.72 -> 2.49 and 2.66 -> 2.33).
Work a courier can only reach late is placed at once.

Joining (`join_shop_minutes`; off when None). When couriers are short, the matching gives each one candidate
and same-shop work that the bundle rule kept apart (ready minutes apart, doors in different directions) waits
for a courier of its own. After the matching, a candidate may join another courier's new route whose shops are
all within `join_shop_minutes` of its own (up to `join_limit` orders on it, the route's stop order chosen
afresh): a candidate left without a courier (what it would get otherwise: its finish with the courier that
would be free for it once this round's routes and the left-over candidates ahead of it are served, for each of
its orders), and, only when couriers are short, one matched alone (its finish with its courier, whose new work
is then taken off). It joins where that lowers the sum of delivery minutes most: the route's orders and its
own, with the route's added stops timed exactly (`courier_state.timeline`), against the route's before plus
its own; when couriers are short, `join_courier_weight` x the courier minutes saved (its own courier's trip
less what the route grows by) counts as gained too, since every waiting order pays for couriers' time then.
Short: more candidates than couriers free now. Candidates go earliest ready first; a route that has taken one
in does not move, one that moved takes nothing in; split orders do not join. Each candidate tries the
`JOIN_HOSTS` routes with the nearest first shop, so the step is O(movers x (couriers + JOIN_HOSTS x options)).

Revisable plans (`plan_round`, what the server and `replay offline` run). A courier is committed only to
what it is already doing (`courier_state.commitments`: the stop it is driving to or at, what it carries and
what it collects there); the jobs queued behind are put back in play every round with the waiting ones, and
the courier is scored from the end of its committed stops. So each round every courier's plan is its
committed stops and at most one candidate, and queued work moves when another courier would do it sooner.
Ties and near-ties do not move work: the holder's cost for a candidate made only of its own queued jobs is
lowered by `move_margin_minutes` (a courier outside the holder's nearby set is still scored for it), and
such a kept candidate is never deferred. An assignment that keeps exactly the stops already queued is
`unchanged` (nothing to write); every other queued job is `released` from its holder (the service takes it
off the holder's route in the round's transaction, before the new routes claim their jobs).

The benchmark's rule (`assign_busy=False`): no new instructions to a courier executing an assignment; only
couriers with nothing to do (no stop left, not serving) are matched, and queued work stays where it is.

Exactness. A chosen courier's whole new route is timed with `courier_state.timeline` (the stop it is on its
way to from when it gets there, not from a straight-line guess); an assignment whose timings would put a
pickup after the shift end or the load above the capacity is dropped (left waiting), so the closed-form
scores above, possibly computed with a vectorised travel function, never decide alone.

Complexity: candidates are built in O(jobs log jobs) per shop; scores are O(candidates x couriers scored)
array operations (`couriers_per_candidate`, `nearby` bound them); the matching is O(n^3) in the smaller
side of the matrix restricted to rows and columns with a feasible pair.

Split orders. The joint candidate takes part in the matching. Afterwards, for each split order in
turn, its per-shop parts are matched among the couriers still free plus the joint's courier; the
order goes on several routes only when every part gets a courier and the order's last part
arrives more than `split_slack_minutes` before the joint route would. If no courier could take the
joint candidate, the parts that can be placed are (the rest wait for a later round). Solving the
joint problem first keeps the two alternatives mutually exclusive without a custom solver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from dispatch.core.courier_state import CourierState, commitments, load_when_free, next_free, timeline
from dispatch.core.routes import (
    Point,
    Route,
    RouteOption,
    ServiceTimes,
    Stop,
    StopTiming,
    Travel,
    TravelMany,
    route_options,
    travel_from,
)

JOIN_HOSTS = 8
"""Routes tried for each candidate that may join one, nearest first shop first: bounds the round's work."""


@dataclass(frozen=True, slots=True)
class Job:
    """One shop's part of an order, accepted and waiting for a courier."""

    job_id: str
    order_id: str
    shop_id: str
    pickup: Point
    ready_at: float
    dropoff: Point
    items: int = 1
    holder: str | None = None  # the courier whose plan queues it now (in play: it may move)


@dataclass(frozen=True, slots=True)
class DispatchParams:
    service: ServiceTimes = field(default_factory=lambda: ServiceTimes(4.0, 4.0))
    max_bundle_size: int = 3  # orders per bundle; 1 disables bundling
    bundle_window_minutes: float = 5.0
    bundle_dropoff_minutes: float = 5.0
    max_bundle_items: int | None = None
    split_slack_minutes: float = 10.0
    couriers_per_candidate: int | None = None  # keep only the k best couriers of each candidate
    empty_leg_weight: float = 0.0  # cost = finish + this x minutes driven empty to the first pickup
    defer_wait_minutes: float | None = None  # hold work whose courier would wait longer at shops
    # (beyond one round: held work goes at the first round after it must, up to a round late)
    round_minutes: float = 0.0
    assign_busy: bool = True  # False: the benchmark's rule, no new work for a courier executing some
    move_margin_minutes: float = 1.0  # queued work moves only to a courier this much better
    join_shop_minutes: float | None = None  # joining (see the module docstring): shops this near; None: off
    join_limit: int = 3  # orders on a route made by joining, at most
    join_courier_weight: float = 0.0  # when couriers are short, a join gains this x the courier minutes saved


@dataclass(frozen=True, slots=True)
class Candidate:
    """Jobs that one courier would take together: one pickup per shop, one drop-off per order."""

    job_ids: tuple[str, ...]
    order_ids: tuple[str, ...]
    items: int
    pickups: tuple[Stop, ...]
    dropoffs: tuple[Stop, ...]
    options: tuple[RouteOption, ...]
    parts: tuple[Candidate, ...] = ()  # a split order's per-shop candidates, to fall back on
    jobs: tuple[Job, ...] = ()


Nearby = Callable[[Candidate], Sequence[str]]
"""Courier ids worth scoring for a candidate (e.g. from H3 rings around its first pickup)."""


@dataclass(frozen=True, slots=True)
class Assignment:
    courier_id: str
    candidate: Candidate
    route: Route  # the courier's whole route: stops still to do, then the candidate's
    timings: tuple[StopTiming, ...]  # for every stop of `route`
    score: float  # minute the candidate's last item reaches its door
    unchanged: bool = False  # the courier keeps exactly the stops it had queued: nothing to write


@dataclass(frozen=True, slots=True)
class RoundResult:
    assignments: tuple[Assignment, ...]
    unassigned: tuple[Candidate, ...]
    # Queued jobs taken off their holder's plan (moved to another courier, re-planned, or back to waiting).
    released: tuple[str, ...] = ()


def make_candidate(jobs: Sequence[Job], params: DispatchParams, travel: Travel) -> Candidate:
    by_shop: dict[str, list[Job]] = {}
    by_order: dict[str, list[Job]] = {}
    for job in jobs:
        by_shop.setdefault(job.shop_id, []).append(job)
        by_order.setdefault(job.order_id, []).append(job)
    pickups = tuple(
        Stop(
            "pickup",
            group[0].pickup,
            tuple(job.job_id for job in group),
            shop_id=shop_id,
            ready_at=max(job.ready_at for job in group),
            items=sum(job.items for job in group),
        )
        for shop_id, group in by_shop.items()
    )
    dropoffs: list[Stop] = []
    for order_id, group in by_order.items():
        if len({job.dropoff for job in group}) > 1:
            raise ValueError(f"the jobs of order {order_id} have different drop-offs")
        job_ids = tuple(job.job_id for job in group)
        items = sum(job.items for job in group)
        dropoffs.append(Stop("dropoff", group[0].dropoff, job_ids, order_id=order_id, items=items))
    split = len(by_order) == 1 and len(by_shop) > 1
    return Candidate(
        job_ids=tuple(job.job_id for job in jobs),
        order_ids=tuple(by_order),
        items=sum(job.items for job in jobs),
        pickups=pickups,
        dropoffs=tuple(dropoffs),
        options=route_options(pickups, dropoffs, travel, params.service),
        parts=tuple(make_candidate([job], params, travel) for job in jobs) if split else (),
        jobs=tuple(jobs),
    )


def route_candidates(jobs: Sequence[Job], params: DispatchParams, travel: Travel) -> list[Candidate]:
    """Group pending jobs into candidates: split orders whole, same-shop orders bundled."""
    by_order: dict[str, list[Job]] = {}
    for job in jobs:
        by_order.setdefault(job.order_id, []).append(job)
    groups: list[list[Job]] = []
    singles: dict[str, list[Job]] = {}
    for order_jobs in by_order.values():
        if len(order_jobs) > 1:
            groups.append(order_jobs)
        else:
            singles.setdefault(order_jobs[0].shop_id, []).append(order_jobs[0])
    for shop_jobs in singles.values():
        groups.extend(_bundles(shop_jobs, params, travel))
    groups.sort(key=lambda group: (min(job.ready_at for job in group), group[0].job_id))
    return [make_candidate(group, params, travel) for group in groups]


def _bundles(jobs: Sequence[Job], params: DispatchParams, travel: Travel) -> list[list[Job]]:
    waiting = sorted(jobs, key=lambda job: (job.ready_at, job.job_id))
    bundles: list[list[Job]] = []
    while waiting:
        seed = waiting.pop(0)
        bundle, items = [seed], seed.items
        for job in list(waiting):
            if len(bundle) >= params.max_bundle_size:
                break
            if job.ready_at - seed.ready_at > params.bundle_window_minutes:
                break  # sorted by ready time: no later job fits either
            if params.max_bundle_items is not None and items + job.items > params.max_bundle_items:
                continue
            if all(travel(b.dropoff, job.dropoff) <= params.bundle_dropoff_minutes for b in bundle):
                bundle.append(job)
                items += job.items
                waiting.remove(job)
        bundles.append(bundle)
    return bundles


@dataclass(frozen=True, slots=True)
class _Fleet:
    """The couriers of a round as arrays: where and when each will be free, and its limits."""

    couriers: Sequence[CourierState]
    index: dict[str, int]
    points: list[Point]
    coords: NDArray[np.float64]  # `points` as an (n, 2) array
    free_at: NDArray[np.float64]
    deadline: NDArray[np.float64]  # last minute for a pickup
    spare: NDArray[np.int64]  # capacity left once free
    assignable: NDArray[np.bool_]

    @classmethod
    def of(
        cls, couriers: Sequence[CourierState], now: float, travel: Travel, service: ServiceTimes
    ) -> _Fleet:
        free = [next_free(courier, now, travel, service) for courier in couriers]
        points = [point for point, _ in free]
        return cls(
            couriers=couriers,
            index={courier.courier_id: i for i, courier in enumerate(couriers)},
            points=points,
            coords=np.array(points, dtype=np.float64).reshape(len(points), 2),
            free_at=np.array([at for _, at in free], dtype=np.float64),
            deadline=np.array(
                [np.inf if c.shift_end is None else c.shift_end for c in couriers], dtype=np.float64
            ),
            spare=np.array([c.capacity - load_when_free(c) for c in couriers], dtype=np.int64),
            assignable=np.array([c.assignable for c in couriers], dtype=np.bool_),
        )

    def subset(self, cols: NDArray[np.intp]) -> _Fleet:
        couriers = [self.couriers[c] for c in cols]
        return _Fleet(
            couriers=couriers,
            index=dict(zip((courier.courier_id for courier in couriers), range(cols.size), strict=True)),
            points=[self.points[c] for c in cols],
            coords=self.coords[cols],
            free_at=self.free_at[cols],
            deadline=self.deadline[cols],
            spare=self.spare[cols],
            assignable=self.assignable[cols],
        )


def _legs(
    fleet: _Fleet,
    cols: NDArray[np.intp] | None,
    to: Point,
    travel: Travel,
    travel_many: TravelMany | None,
) -> NDArray[np.float64]:
    """Travel minutes to `to` from where each courier (of `cols`, or all) will be free."""
    if travel_many is not None:
        coords = fleet.coords if cols is None else fleet.coords[cols]
        return np.asarray(travel_many(coords, to), dtype=np.float64)
    points = fleet.points if cols is None else [fleet.points[c] for c in cols]
    return np.fromiter((travel(point, to) for point in points), np.float64, len(points))


@dataclass(frozen=True, slots=True)
class _Scores:
    """Per courier: when the candidate's last item reaches its door (inf: infeasible), what the matching
    minimises for it, minutes the courier would wait at shops for goods, and the route option chosen."""

    finish: NDArray[np.float64]
    cost: NDArray[np.float64]
    wait: NDArray[np.float64]
    choice: NDArray[np.intp]


def _scores(
    candidate: Candidate,
    fleet: _Fleet,
    cols: NDArray[np.intp] | None,
    travel: Travel,
    travel_many: TravelMany | None,
    params: DispatchParams,
) -> _Scores:
    """Scores of the couriers of `cols` (None: all) for the candidate."""
    everyone = cols is None
    free_at = fleet.free_at if everyone else fleet.free_at[cols]
    spare = fleet.spare if everyone else fleet.spare[cols]
    usable = (fleet.assignable if everyone else fleet.assignable[cols]) & (spare >= candidate.items)
    deadline = fleet.deadline if everyone else fleet.deadline[cols]
    finishes, costs, waits = [], [], []
    legs: dict[Point, NDArray[np.float64]] = {}
    for option in candidate.options:
        if option.first_pickup not in legs:
            legs[option.first_pickup] = _legs(fleet, cols, option.first_pickup, travel, travel_many)
        leg = legs[option.first_pickup]
        arrival = free_at + leg
        last_pickup = np.maximum(option.release, arrival + option.lead)
        finish = np.where(usable & (last_pickup <= deadline), last_pickup + option.tail, np.inf)
        finishes.append(finish)
        costs.append(finish + params.empty_leg_weight * leg)
        waits.append(last_pickup - (arrival + option.lead))
    if len(finishes) == 1:  # the common case: one shop
        return _Scores(finishes[0], costs[0], waits[0], np.zeros(free_at.size, dtype=np.intp))
    choice = np.argmin(np.stack(costs), axis=0)

    def chosen(values: list[NDArray[np.float64]]) -> NDArray[np.float64]:
        picked: NDArray[np.float64] = np.take_along_axis(np.stack(values), choice[None, :], axis=0)[0]
        return picked

    return _Scores(chosen(finishes), chosen(costs), chosen(waits), choice)


def score(
    courier: CourierState,
    candidate: Candidate,
    now: float,
    travel: Travel,
    params: DispatchParams,
) -> float | None:
    """Minute the candidate's last item would reach its door with this courier; None: infeasible."""
    fleet = _Fleet.of([courier], now, travel, params.service)
    finish = _scores(candidate, fleet, None, travel, None, params).finish
    return float(finish[0]) if np.isfinite(finish[0]) else None


def assign_round(
    candidates: Sequence[Candidate],
    couriers: Sequence[CourierState],
    now: float,
    travel: Travel,
    params: DispatchParams,
    nearby: Nearby | None = None,
    travel_many: TravelMany | None = None,
) -> RoundResult:
    """Match candidates to couriers optimally (see the module docstring for the rules)."""
    fleet = _Fleet.of(couriers, now, travel, params.service)
    cost = _cost_matrix(candidates, fleet, nearby, travel, travel_many, params)
    chosen = dict(_match(cost))
    busy = np.zeros(len(couriers), dtype=np.bool_)
    busy[list(chosen.values())] = True
    placed: list[tuple[Candidate, int]] = []
    unassigned: list[Candidate] = []
    unmatched = {id(candidate) for row, candidate in enumerate(candidates) if row not in chosen}
    for row, candidate in enumerate(candidates):
        col = chosen.get(row)
        parts = None
        if candidate.parts:
            free = ~busy
            if col is not None:
                free[col] = True  # the joint's courier may take a part instead
            pool = np.flatnonzero(free)
            joint = None if col is None else _finish(candidate, fleet, col, travel, params)
            parts = _split_instead(candidate, joint, fleet, pool, nearby, travel, travel_many, params)
        if parts is None:
            if col is None:
                unassigned.append(candidate)
            else:
                placed.append((candidate, col))
            continue
        if col is not None:
            busy[col] = False
        busy[[part_col for _, part_col in parts]] = True
        placed.extend(parts)
        done = {part for part, _ in parts}
        unassigned.extend(part for part in candidate.parts if part not in done)
    assignments = []
    for candidate, col in placed:
        scored = _scores(candidate, fleet, np.array([col], dtype=np.intp), travel, None, params)
        kept = _holder(candidate) == fleet.couriers[col].courier_id
        hold = None if params.defer_wait_minutes is None else params.defer_wait_minutes + params.round_minutes
        if not kept and hold is not None and scored.wait[0] > hold:
            unassigned.append(candidate)  # its courier can set off later: decide then, on fresher facts
            continue
        made = _assignment(candidate, fleet, col, int(scored.choice[0]), now, travel, params)
        if made is None:
            unassigned.append(candidate)
            continue
        assignments.append(made)
    if params.join_shop_minutes is not None and params.join_limit > 1:
        left = [c for c in unassigned if id(c) in unmatched]
        short = len(candidates) > int(np.count_nonzero(fleet.assignable & (fleet.free_at <= now)))
        reach = params.join_shop_minutes
        assignments, joined = _join(left, assignments, fleet, now, travel, travel_many, params, reach, short)
        unassigned = [c for c in unassigned if id(c) not in joined]
    return RoundResult(tuple(assignments), tuple(unassigned))


def _join(
    left: Sequence[Candidate],
    assignments: list[Assignment],
    fleet: _Fleet,
    now: float,
    travel: Travel,
    travel_many: TravelMany | None,
    params: DispatchParams,
    reach: float,
    short: bool,
) -> tuple[list[Assignment], set[int]]:
    """Candidates joined onto another courier's new route (see "Joining" in the module docstring); returns
    the assignments as they now are and the ids of the left-over candidates that joined one."""
    if not assignments:
        return assignments, set()
    free_at = fleet.free_at.copy()
    points = list(fleet.points)
    for a in assignments:
        col = fleet.index[a.courier_id]
        points[col], free_at[col] = a.timings[-1].stop.location, a.timings[-1].departure
    coords = np.array(points, dtype=np.float64).reshape(len(points), 2)
    ends = dataclasses.replace(fleet, points=points, coords=coords, free_at=free_at)
    half_drop = params.service.dropoff_minutes / 2
    slots: list[Assignment | None] = list(assignments)
    hosted: set[int] = set()
    movers: list[tuple[Candidate, int | None]] = [(c, None) for c in left]
    if short:
        movers += [(a.candidate, i) for i, a in enumerate(assignments)]
    weight = params.join_courier_weight if short else 0.0
    movers.sort(key=lambda m: min(p.ready_at or 0.0 for p in m[0].pickups))
    firsts = np.array([a.candidate.options[0].first_pickup for a in assignments], dtype=np.float64)
    joined: set[int] = set()
    waiting = 0
    for candidate, own_slot in movers:
        if candidate.parts or (own_slot is not None and own_slot in hosted):
            continue
        if own_slot is not None:
            mine = slots[own_slot]
            assert mine is not None
            own = _delivered(_added(mine))
            saves = mine.timings[-1].departure - _start(mine, fleet)
        else:
            scored = _scores(candidate, ends, None, travel, travel_many, params)
            # Each left-over candidate still waiting ahead of this one takes one of the couriers first.
            order = np.argsort(scored.finish, kind="stable")
            best_col = int(order[min(waiting, order.size - 1)])
            if not np.isfinite(scored.finish[best_col]):
                best_col = int(order[0])
                if not np.isfinite(scored.finish[best_col]):
                    continue
            own = float(scored.finish[best_col]) * len(candidate.order_ids)
            saves = float(scored.finish[best_col]) + half_drop - float(ends.free_at[best_col])
        near = travel_from(firsts, candidate.pickups[0].location, travel, travel_many)
        best: tuple[float, int, Assignment] | None = None
        hosts = np.flatnonzero(near <= reach)
        for slot in hosts[np.argsort(near[hosts], kind="stable")][:JOIN_HOSTS]:
            host_a = slots[int(slot)]
            if host_a is None or int(slot) == own_slot:
                continue
            host = host_a.candidate
            if len(host.order_ids) + len(candidate.order_ids) > params.join_limit or host.parts:
                continue
            if any(
                min(travel(p.location, q.location) for p in host.pickups) > reach for q in candidate.pickups
            ):
                continue
            col = fleet.index[host_a.courier_id]
            merged = make_candidate([*host.jobs, *candidate.jobs], params, travel)
            before = _delivered(_added(host_a))
            for option in range(len(merged.options)):
                made = _assignment(merged, fleet, col, option, now, travel, params)
                if made is None:
                    continue
                grows = made.timings[-1].departure - host_a.timings[-1].departure
                gain = before + own - _delivered(_added(made)) + weight * (saves - grows)
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, int(slot), made)
        if best is None:
            if own_slot is None:
                waiting += 1
            continue
        _, slot, made = best
        slots[slot] = made
        hosted.add(slot)
        col = fleet.index[made.courier_id]
        points[col], free_at[col] = made.timings[-1].stop.location, made.timings[-1].departure
        coords[col] = points[col]
        if own_slot is None:
            joined.add(id(candidate))
        else:
            mine = slots[own_slot]
            assert mine is not None
            slots[own_slot] = None  # its courier keeps only its committed stops: free at their end
            col = fleet.index[mine.courier_id]
            points[col], free_at[col] = fleet.points[col], fleet.free_at[col]
            coords[col] = points[col]
    return [a for a in slots if a is not None], joined


def _added(a: Assignment) -> tuple[StopTiming, ...]:
    """The timings of the assignment's candidate (after the courier's committed stops)."""
    return a.timings[len(a.route.stops) - len(a.candidate.options[0].stops) :]


def _start(a: Assignment, fleet: _Fleet) -> float:
    """When the courier is free for the assignment's candidate (the end of its committed stops)."""
    return float(fleet.free_at[fleet.index[a.courier_id]])


def _delivered(timings: Sequence[StopTiming]) -> float:
    """Sum of the minutes at which the drop-offs among `timings` hand over."""
    return sum(t.service_at for t in timings if t.stop.kind == "dropoff")


def _holder(candidate: Candidate) -> str | None:
    """The courier that has every job of the candidate queued, if one has."""
    holders = {job.holder for job in candidate.jobs}
    return holders.pop() if len(holders) == 1 else None


def _finish(candidate: Candidate, fleet: _Fleet, col: int, travel: Travel, params: DispatchParams) -> float:
    return float(_scores(candidate, fleet, np.array([col], dtype=np.intp), travel, None, params).finish[0])


def _split_instead(
    candidate: Candidate,
    joint: float | None,  # when the joint route would deliver, if a courier can take it
    fleet: _Fleet,
    pool: NDArray[np.intp],
    nearby: Nearby | None,
    travel: Travel,
    travel_many: TravelMany | None,
    params: DispatchParams,
) -> list[tuple[Candidate, int]] | None:
    """A split order's parts with their couriers, when they beat the joint route; else None."""
    sub = fleet.subset(pool)
    matched = _match(_cost_matrix(candidate.parts, sub, nearby, travel, travel_many, params))
    parts = [(candidate.parts[row], int(pool[col])) for row, col in matched]
    if joint is None:
        return parts or None
    if len(matched) < len(candidate.parts):
        return None
    arrives = max(_finish(candidate.parts[row], sub, col, travel, params) for row, col in matched)
    return parts if arrives < joint - params.split_slack_minutes else None


def _cost_matrix(
    candidates: Sequence[Candidate],
    fleet: _Fleet,
    nearby: Nearby | None,
    travel: Travel,
    travel_many: TravelMany | None,
    params: DispatchParams,
) -> NDArray[np.float64]:
    """What the matching minimises, candidates x couriers; inf where infeasible or not nearby."""
    cost = np.full((len(candidates), len(fleet.couriers)), np.inf)
    k = params.couriers_per_candidate
    for row, candidate in enumerate(candidates):
        cols: NDArray[np.intp] | None = None
        if nearby is not None:
            found = (fleet.index.get(courier_id) for courier_id in nearby(candidate))
            cols = np.unique(np.array([i for i in found if i is not None], dtype=np.intp))
            if cols.size == 0:
                continue
        holder = fleet.index.get(_holder(candidate) or "")
        if holder is not None and cols is not None and holder not in cols:
            cols = np.append(cols, holder)
        costs = _scores(candidate, fleet, cols, travel, travel_many, params).cost
        if holder is not None:
            # Queued work stays with its courier unless another would do clearly better: no churn on ties.
            costs[holder if cols is None else int(np.flatnonzero(cols == holder)[0])] -= (
                params.move_margin_minutes
            )
        if k is not None and k < costs.size:
            # The k best only: a sparser matrix, and a far courier rarely wins anyway.
            kept = np.argpartition(costs, k - 1)[:k]
            cols = kept if cols is None else cols[kept]
            costs = costs[kept]
        cost[row, slice(None) if cols is None else cols] = costs
    return cost


def _match(cost: NDArray[np.float64]) -> list[tuple[int, int]]:
    """Optimal (row, column) pairs of finite cost: most pairs first, then least total."""
    feasible = np.isfinite(cost)
    rows = np.flatnonzero(feasible.any(axis=1))
    cols = np.flatnonzero(feasible.any(axis=0))
    if rows.size == 0:
        return []
    sub = cost[np.ix_(rows, cols)]
    ok = feasible[np.ix_(rows, cols)]
    sub = sub - sub[ok].min()
    # Above any sum of feasible costs, so one more feasible pair always beats a lower total.
    sub[~ok] = (sub[ok].max() + 1.0) * (min(sub.shape) + 1)
    matched_rows, matched_cols = linear_sum_assignment(sub)
    return [(int(rows[r]), int(cols[c])) for r, c in zip(matched_rows, matched_cols, strict=True) if ok[r, c]]


def _assignment(
    candidate: Candidate,
    fleet: _Fleet,
    col: int,
    option: int,
    now: float,
    travel: Travel,
    params: DispatchParams,
) -> Assignment | None:
    """The courier's new route and its timings; None if they break its shift end or capacity (the scores
    are computed in closed form, possibly with a vectorised travel function: the timings decide)."""
    courier = fleet.couriers[col]
    stops = courier.route + candidate.options[option].stops
    timings = timeline(courier, now, travel, params.service, stops)
    load = courier.load
    for t in timings:
        load += t.stop.items if t.stop.kind == "pickup" else -t.stop.items
        if load > courier.capacity:
            return None
    added = timings[len(courier.route) :]
    if courier.shift_end is not None and any(
        t.stop.kind == "pickup" and t.service_at > courier.shift_end for t in added
    ):
        return None
    route = Route(courier.courier_id, stops)
    return Assignment(courier.courier_id, candidate, route, timings, timings[-1].service_at)


def plan_round(
    jobs: Sequence[Job],
    couriers: Sequence[CourierState],
    now: float,
    travel: Travel,
    params: DispatchParams,
    nearby: Nearby | None = None,
    travel_many: TravelMany | None = None,
) -> RoundResult:
    """Our policy's round over revisable plans (see "Revisable plans" in the module docstring).

    `jobs`: every job waiting for a courier, and every job queued on a courier's route behind what it is
    committed to (`holder` naming that courier; its route still lists them). Returns the round's
    assignments (each courier's committed stops, then at most one candidate), what is left waiting, and the
    queued jobs taken off their holder's plan.
    """
    if not params.assign_busy:
        # The benchmark's rule: only couriers doing nothing get work; nothing queued is touched.
        idle = [c for c in couriers if not c.busy(now)]
        pending = [job for job in jobs if job.holder is None]
        return assign_round(
            route_candidates(pending, params, travel), idle, now, travel, params, nearby, travel_many
        )
    queued: dict[str, tuple[Stop, ...]] = {}
    planned: list[CourierState] = []
    for courier in couriers:
        split = commitments(courier.route)
        queued[courier.courier_id] = split.queued
        planned.append(dataclasses.replace(courier, route=split.committed) if split.queued else courier)
    result = assign_round(
        route_candidates(jobs, params, travel), planned, now, travel, params, nearby, travel_many
    )
    assignments = []
    for a in result.assignments:
        before = queued.get(a.courier_id, ())
        after = a.route.stops[len(a.route.stops) - len(a.candidate.options[0].stops) :]
        same = _holder(a.candidate) == a.courier_id and _shape(before) == _shape(after)
        assignments.append(dataclasses.replace(a, unchanged=True) if same else a)
    kept = {j for a in assignments if a.unchanged for j in a.candidate.job_ids}
    released = tuple(sorted(job.job_id for job in jobs if job.holder is not None and job.job_id not in kept))
    return RoundResult(tuple(assignments), result.unassigned, released)


def _shape(stops: Sequence[Stop]) -> list[tuple[str, Point, frozenset[str]]]:
    """A stop sequence as the courier sees it: kind, place and jobs of each stop, in order."""
    return [(stop.kind, stop.location, frozenset(stop.job_ids)) for stop in stops]


def nearest_idle_round(
    jobs: Sequence[Job],
    couriers: Sequence[CourierState],
    now: float,
    travel: Travel,
    params: DispatchParams,
) -> RoundResult:
    """Baseline policy: each ready job alone, earliest ready first, to the nearest idle courier.

    Idle: assignable, no stops left and not busy. Nearest by travel time to the shop, among those
    for which the job is feasible. Jobs not ready yet wait for a later round and are not reported.
    """
    idle = [c for c in couriers if c.assignable and not c.busy(now)]
    fleet = _Fleet.of(idle, now, travel, params.service)
    free = np.ones(len(idle), dtype=np.bool_)
    assignments: list[Assignment] = []
    unassigned: list[Candidate] = []
    for job in sorted(jobs, key=lambda job: (job.ready_at, job.job_id)):
        if job.ready_at > now:
            continue
        candidate = make_candidate([job], params, travel)
        cols = np.flatnonzero(free)
        feasible = cols[np.isfinite(_scores(candidate, fleet, cols, travel, None, params).finish)]
        if feasible.size == 0:
            unassigned.append(candidate)
            continue
        col = int(feasible[int(np.argmin(_legs(fleet, feasible, job.pickup, travel, None)))])
        made = _assignment(candidate, fleet, col, 0, now, travel, params)
        if made is None:
            unassigned.append(candidate)
            continue
        free[col] = False
        assignments.append(made)
    return RoundResult(tuple(assignments), tuple(unassigned))
