"""The dispatch round, and each node's loop of courier timers (planned shifts, offer deadlines, rounds).

A round is claimed through PostgreSQL: the `timers` row 'dispatch_round' is locked with SKIP LOCKED while due,
and the same transaction moves it on, numbers the round (`dispatch_rounds` has the number as primary key) and
writes every route. So one node runs a round, however many poll, and a node dying mid-round loses nothing:
its transaction rolls back and the next poll anywhere runs the round again.

A round: jobs waiting for a courier (whole orders) become route candidates; couriers on shift and fresh are
found in H3 rings around each candidate's pickups; `assign_round` (scipy's linear_sum_assignment) matches
them; the routes are written with their stops, ETAs and events.

A job goes on at most one route: routes take their jobs with a compare-and-set
(`UPDATE jobs SET route_id = ... WHERE route_id IS NULL`) whose row count is checked, under the same
courier -> orders -> jobs locks as every other route change (see routes.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
from h3.api import basic_int as h3
from numpy.typing import NDArray

from dispatch.config import Settings
from dispatch.core.admission import Part
from dispatch.core.assignment import (
    Assignment,
    Candidate,
    DispatchParams,
    Job,
    RoundResult,
    nearest_idle_round,
    plan_round,
)
from dispatch.core.courier_state import CourierState, commitments
from dispatch.core.routes import Point, ServiceTimes, StopTiming
from dispatch.db import Conn, transaction
from dispatch.ids import new_id
from dispatch.logs import Throttle
from dispatch.outbox import NewEvent, append_events
from dispatch.services import couriers as courier_service
from dispatch.services.context import Services
from dispatch.services.locations import CELL_RESOLUTION, Grant, LiveLocations, Position
from dispatch.services.route_offers import expire_offers, give_back, release_stranded
from dispatch.services.routes import (
    CourierChange,
    busy_until,
    core_stop,
    delivery_codes,
    eta_body,
    instant,
    items_of,
    minutes,
    next_arrival,
    open_stops,
    plan_payload,
    route_json,
    service_times,
    travel_of,
    trusted_point,
)
from dispatch.translate import translate
from geo import EARTH_RADIUS_M

log = logging.getLogger(__name__)

ROUND_TIMER = "dispatch_round"
NODE = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
SLOT_HORIZON = timedelta(minutes=60)  # slotted orders join rounds this long before their slot
# Widen the H3 rings around a pickup until this many distinct couriers are found... (with 16, replays of
# generated days still missed the courier an unrestricted round would pick, often enough to cost the mean
# click-to-door 0.1-0.2 minutes; from 24 on it matched)
NEARBY_MIN = 24
NEARBY_MAX_RING = 10  # ...or this many rings (~9 km at resolution 8)


class RoundConflict(Exception):
    """A compare-and-set of the round's write missed: roll the round back (never expected under locks)."""


@dataclass(frozen=True)
class RoundReport:
    round: int
    jobs: int
    couriers: int
    routes: int
    released: int
    placed: int  # jobs put on routes, or moved to another (the rest of `jobs` wait, or stay where queued)
    seconds: dict[str, float] = field(default_factory=dict)


def travel_many_of(svc: Services) -> Callable[[NDArray[np.float64], Point], NDArray[np.float64]]:
    factor = svc.travel.detour_factor / svc.travel.speed_m_per_min
    round_up = svc.travel.round_up

    def travel_many(points: NDArray[np.float64], to: Point) -> NDArray[np.float64]:
        lat1, lng1 = np.radians(points[:, 0]), np.radians(points[:, 1])
        lat2, lng2 = np.radians(to[0]), np.radians(to[1])
        h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lng2 - lng1) / 2) ** 2
        metres = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
        minutes = metres * factor
        return np.asarray(np.ceil(minutes) if round_up else minutes, dtype=np.float64)

    return travel_many


def params_of(svc: Services) -> DispatchParams:
    return params_from(svc.settings, service_times(svc))


def params_from(settings: Settings, service: ServiceTimes) -> DispatchParams:
    """The round's parameters from the DISPATCH_* settings (also what `replay offline` runs with)."""
    return DispatchParams(
        service=service,
        split_slack_minutes=settings.split_slack_minutes,
        empty_leg_weight=settings.empty_leg_weight,
        defer_wait_minutes=settings.defer_wait_minutes,
        round_minutes=settings.dispatch_round_s / 60,
        assign_busy=settings.assign_busy,
        join_shop_minutes=settings.join_shop_minutes,
        join_limit=settings.join_limit,
        join_courier_weight=settings.join_courier_weight,
    )


# --- the round -------------------------------------------------------------------------------------------


async def run_round(svc: Services, live: LiveLocations) -> RoundReport | None:
    """Run the dispatch round if it is due and no other node holds it; None otherwise."""
    now = svc.clock.now()
    due = await svc.pool.fetchval(
        """WITH made AS (INSERT INTO timers (name, due_at) VALUES ($1, '-infinity')
                         ON CONFLICT DO NOTHING RETURNING due_at)
           SELECT coalesce((SELECT due_at FROM made), (SELECT due_at FROM timers WHERE name = $1)) <= $2""",
        ROUND_TIMER,
        now,
    )
    if not due:
        return None
    clock = _Stopwatch()
    # Before the claim, in transactions of its own: giving work back is idempotent (each courier's row
    # lock serialises it), so a node that then loses the claim has done no harm.
    released = await release_stranded(svc, live, now)
    clock.lap("release")
    async with transaction(svc.pool) as conn:
        claimed_due = await conn.fetchval(
            "SELECT due_at FROM timers WHERE name = $1 AND due_at <= $2 FOR UPDATE SKIP LOCKED",
            ROUND_TIMER,
            now,
        )
        if claimed_due is None:
            return None
        jobs, fleet = await _load(conn, svc, live, now)
        clock.lap("load")
        result = RoundResult((), ())
        if jobs and fleet.couriers:
            # Seconds of CPU for a city's round: in a thread, so the node's requests, pings and
            # websockets go on meanwhile (the loop gets the interpreter back every few milliseconds)
            # instead of waiting for the whole decision.
            result = await asyncio.to_thread(decide, svc, jobs, fleet, now)
        clock.lap("assign")
        number = await conn.fetchval(
            "UPDATE timers SET due_at = $2, runs = runs + 1 WHERE name = $1 RETURNING runs",
            ROUND_TIMER,
            next_due(claimed_due, now, svc.settings.dispatch_round_s),
        )
        written = await _write(conn, svc, live, fleet, result, number, now)
        await conn.execute(
            """INSERT INTO dispatch_rounds (round, node, at, jobs, couriers, routes, released, placed,
                                            seconds)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            number,
            NODE,
            now,
            len(jobs),
            len(fleet.couriers),
            len(written.routes),
            released,
            written.placed,
            clock.elapsed(),
        )
        events = await append_events(conn, written.events, now)
        clock.lap("write")
    await svc.publish(events)
    await live.grant(written.grants)
    clock.lap("publish")
    svc.metrics.rounds.observe(sum(clock.laps.values()))
    waiting = sum(job.holder is None for job in jobs)
    svc.metrics.round_jobs.labels("placed").inc(written.placed)
    svc.metrics.round_jobs.labels("held").inc(max(0, waiting - (written.placed - written.moved)))
    return RoundReport(
        number, len(jobs), len(fleet.couriers), len(written.routes), released, written.placed, clock.laps
    )


def next_due(due: datetime, now: datetime, interval_s: float) -> datetime:
    """When the round after one due at `due` and run at `now` is due: the next point of the round's grid
    (`due` + k intervals) after now. Timing it from `now` instead would stretch every interval by how late the
    round started (the poll's wait and the round's own time); a round missed altogether is skipped, not run
    back to back. The first round (due at -infinity) starts the grid at now + one interval."""
    step = timedelta(seconds=interval_s)
    if due.year <= 1:  # '-infinity' (asyncpg reads it as a naive datetime.min)
        return now + step
    late = (now - due) // step  # whole intervals since it was due (0 when on time)
    return due + (late + 1) * step


async def round_due(svc: Services) -> datetime | None:
    """When the next dispatch round is due (None: no round has been scheduled yet)."""
    due: datetime | None = await svc.pool.fetchval("SELECT due_at FROM timers WHERE name = $1", ROUND_TIMER)
    return due


def decide(svc: Services, jobs: list[Job], fleet: _Fleet, now: datetime) -> RoundResult:
    """The round's decisions under the configured policy (`DISPATCH_POLICY`): ours (route candidates with
    bundles, matched optimally over revisable plans, `plan_round`) or the `nearest-idle` baseline (each ready
    job alone to the nearest idle courier, no bundling)."""
    if svc.settings.policy == "nearest-idle":
        waiting = [job for job in jobs if job.holder is None]
        return nearest_idle_round(waiting, fleet.couriers, minutes(now), travel_of(svc), params_of(svc))
    # A bundle no courier of the round could carry would block its orders for ever: cap bundles by the
    # largest capacity on shift (a job too big for every courier is refused at placement).
    params = dataclasses.replace(params_of(svc), max_bundle_items=max(c.capacity for c in fleet.couriers))
    return plan_round(
        jobs,
        fleet.couriers,
        minutes(now),
        travel_of(svc),
        params,
        nearby=fleet.nearby,
        travel_many=travel_many_of(svc),
    )


class _Stopwatch:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = asyncio.get_running_loop().time()

    def lap(self, name: str) -> None:
        now = asyncio.get_running_loop().time()
        self.laps[name] = round(now - self._last, 4)
        self._last = now

    def elapsed(self) -> float:
        """Seconds since the start, the current lap included."""
        return round(sum(self.laps.values()) + asyncio.get_running_loop().time() - self._last, 4)


@dataclass
class _Fleet:
    """The round's couriers, their existing stops' ids, and where to look for them (H3 cells)."""

    couriers: list[CourierState]
    stop_ids: dict[str, list[str]]
    cells: dict[int, list[str]]
    refused: dict[str, set[str]]  # job -> couriers who refused it
    held: dict[str, tuple[str, str]] = field(default_factory=dict)  # queued job -> (courier, route)
    positions: dict[str, Point] = field(default_factory=dict)
    _near: dict[int, list[str]] = field(default_factory=dict)

    def nearby(self, candidate: Candidate) -> list[str]:
        """Couriers in H3 rings around the candidate's pickups, minus those who refused its jobs."""
        found: set[str] = set()
        for stop in candidate.pickups:
            found.update(self._around(h3.latlng_to_cell(*stop.location, CELL_RESOLUTION)))
        for job_id in candidate.job_ids:
            found -= self.refused.get(job_id, set())
        return sorted(found)

    def _around(self, origin: int) -> list[str]:
        if origin not in self._near:
            # A courier is filed under where it is and where it will be free: count it once, or the rings
            # stop widening with half as many couriers as they should.
            found: set[str] = set(self.cells.get(origin, ()))
            for k in range(1, NEARBY_MAX_RING + 1):
                if len(found) >= NEARBY_MIN:
                    break
                for cell in _ring(origin, k):
                    found.update(self.cells.get(cell, ()))
            self._near[origin] = sorted(found)
        return self._near[origin]


def _ring(origin: int, k: int) -> list[int]:
    try:
        return list(h3.grid_ring(origin, k))
    except Exception:  # pentagon distortion: fall back to the difference of disks
        return list(set(h3.grid_disk(origin, k)) - set(h3.grid_disk(origin, k - 1)))


_JOBS_SQL = """SELECT j.id, j.order_id, j.shop_id, j.ready_at, j.lines, s.lat AS shop_lat, s.lng AS shop_lng,
                     o.drop_lat, o.drop_lng, o.slot_start
              FROM jobs j JOIN orders o ON o.id = j.order_id JOIN shops s ON s.id = j.shop_id"""


async def _load(conn: Conn, svc: Services, live: LiveLocations, now: datetime) -> tuple[list[Job], _Fleet]:
    """Jobs waiting for a courier (whole orders: none of the order's jobs still offered to a shop), the
    couriers who can take work (on shift, fresh, without an unanswered offer), and, under our policy, the
    jobs queued on those couriers' routes behind what they are committed to (in play again)."""
    rows = await conn.fetch(
        _JOBS_SQL
        + """ WHERE j.route_id IS NULL AND j.state IN ('accepted', 'ready') AND o.fulfilment = 'delivery'
            AND (o.slot_start IS NULL OR o.slot_start <= $1)
            AND NOT EXISTS (SELECT 1 FROM jobs k WHERE k.order_id = j.order_id AND k.state = 'offered')""",
        now + SLOT_HORIZON,
    )
    jobs = [_job(svc, r, now) for r in rows]
    revisable = svc.settings.policy == "ours" and svc.settings.assign_busy
    if not jobs and not (revisable and await _anything_queued(conn)):
        return jobs, _Fleet([], {}, {}, {})  # nothing to place: spare Redis and PostgreSQL the fleet
    fleet = await _fleet(conn, svc, live, now)
    if revisable and fleet.held:
        for r in await conn.fetch(
            _JOBS_SQL + " WHERE j.id = ANY ($1::text[]) AND j.state IN ('accepted', 'ready') ORDER BY j.id",
            sorted(fleet.held),
        ):
            jobs.append(dataclasses.replace(_job(svc, r, now), holder=fleet.held[r["id"]][0]))
    for r in await conn.fetch(
        "SELECT job_id, courier_id FROM route_refusals WHERE job_id = ANY ($1::text[])",
        [j.job_id for j in jobs],
    ):
        fleet.refused.setdefault(r["job_id"], set()).add(r["courier_id"])
    return jobs, fleet


async def fleet_now(conn: Conn, svc: Services, live: LiveLocations, now: datetime) -> list[CourierState]:
    """The couriers a round would consider now, with their routes (for the check at placement)."""
    return (await _fleet(conn, svc, live, now)).couriers


async def waiting_work(conn: Conn, svc: Services, now: datetime, limit: int = 1000) -> list[Part]:
    """Delivery work no courier has yet, wanted now, the oldest `limit` jobs: offered to a shop (ready at
    once, at the earliest) or accepted (ready when the shop said)."""
    rows = await conn.fetch(
        _JOBS_SQL
        + """ WHERE j.route_id IS NULL AND j.state IN ('offered', 'accepted', 'ready')
            AND o.fulfilment = 'delivery' AND o.slot_start IS NULL
            ORDER BY j.created_at LIMIT $1""",
        limit,
    )
    return [
        Part(job.pickup, job.dropoff, job.items, job.ready_at) for job in (_job(svc, r, now) for r in rows)
    ]


async def _anything_queued(conn: Conn) -> bool:
    """Some job is on an active route and not collected yet: maybe queued behind a courier's next stop."""
    queued: bool = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM jobs j JOIN routes r ON r.id = j.route_id
                          WHERE r.state = 'active' AND j.state IN ('accepted', 'ready'))"""
    )
    return queued


def _job(svc: Services, r: asyncpg.Record, now: datetime) -> Job:
    travel, service = travel_of(svc), service_times(svc)
    shop, door = (r["shop_lat"], r["shop_lng"]), (r["drop_lat"], r["drop_lng"])
    ready = minutes(r["ready_at"] or now)
    if r["slot_start"] is not None:  # collect in time to be at the door when the slot opens
        ready = max(ready, minutes(r["slot_start"]) - travel(shop, door) - service.pickup_minutes)
    return Job(r["id"], r["order_id"], r["shop_id"], shop, ready, door, items_of(r["lines"]))


async def _fleet(conn: Conn, svc: Services, live: LiveLocations, now: datetime) -> _Fleet:
    rows = await conn.fetch(
        """SELECT c.id, c.capacity, c.shift_ends_at, c.leg_lat, c.leg_lng, c.leg_at, c.leg_stop_id
           FROM couriers c
           WHERE c.on_shift AND c.active
             AND NOT EXISTS (SELECT 1 FROM routes r WHERE r.courier_id = c.id AND r.state = 'offered')
           ORDER BY c.id"""
    )
    if not rows:  # nobody on shift: nothing to read in Redis or about routes (placement asks this per order)
        return _Fleet([], {}, {}, {})
    positions = await live.positions(r["id"] for r in rows)
    usable = {
        r["id"]: point
        for r in rows
        if (point := trusted_point(positions.get(r["id"]), now, svc.settings.courier_stale_s)) is not None
    }
    if not usable:
        return _Fleet([], {}, {}, {})
    stops = await open_stops(conn, list(usable))
    on_board: dict[str, int] = {}
    for r in await conn.fetch(
        """SELECT r.courier_id, j.lines FROM jobs j JOIN routes r ON r.id = j.route_id
           WHERE r.courier_id = ANY ($1::text[]) AND r.state = 'active' AND j.state = 'picked_up'""",
        list(usable),
    ):
        on_board[r["courier_id"]] = on_board.get(r["courier_id"], 0) + items_of(r["lines"])
    # Thousands of couriers' states to build: in a thread, as the round's decision is (see run_round).
    return await asyncio.to_thread(_fleet_of, svc, rows, positions, usable, stops, on_board, now)


def _fleet_of(
    svc: Services,
    rows: list[asyncpg.Record],
    positions: dict[str, Position],
    usable: dict[str, Point],
    stops: dict[str, list[asyncpg.Record]],
    on_board: dict[str, int],
    now: datetime,
) -> _Fleet:
    """The round's couriers from what `_fleet` read: their states, routes, and H3 cells."""
    couriers: list[CourierState] = []
    cells: dict[int, list[str]] = {}
    held: dict[str, tuple[str, str]] = {}
    clock = minutes(now)
    for r in rows:
        point = usable.get(r["id"])
        if point is None:
            continue
        mine = stops[r["id"]]
        route = tuple(core_stop(s) for s in mine)
        trusted = positions[r["id"]].trusted
        fix = None if trusted is None else (trusted.point, minutes(datetime.fromtimestamp(trusted.at, UTC)))
        couriers.append(
            CourierState(
                r["id"],
                point,
                r["capacity"],
                load=on_board.get(r["id"], 0),
                available_at=None if route else busy_until(r, clock),
                shift_end=None if r["shift_ends_at"] is None else minutes(r["shift_ends_at"]),
                route=route,
                first_arrival=next_arrival(svc, r, mine[0], point, clock, fix) if mine else None,
            )
        )
        # Queued behind what it is committed to, on active routes only (an offered route is the courier's to
        # answer): in play this round.
        queued = commitments(route).queued_jobs
        for stop in mine:
            if stop["route_state"] == "active":
                held.update((j, (r["id"], stop["route_id"])) for j in stop["job_ids"] if j in queued)
        # Found where it is, and where it will be free (once per cell).
        for cell in {
            h3.latlng_to_cell(*where, CELL_RESOLUTION)
            for where in (point, route[-1].location if route else point)
        }:
            cells.setdefault(cell, []).append(r["id"])
    return _Fleet(couriers, {c: [s["id"] for s in stops[c]] for c in usable}, cells, {}, held, dict(usable))


@dataclass
class _Written:
    routes: list[str] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    placed: int = 0  # jobs claimed by a new route
    moved: int = 0  # of those, jobs that were queued on a courier's route before
    released: int = 0  # queued jobs taken off their courier's route


async def _write(
    conn: Conn,
    svc: Services,
    live: LiveLocations,
    fleet: _Fleet,
    result: RoundResult,
    number: int,
    now: datetime,
) -> _Written:
    """Lock what the decisions touch, keep those still valid, and write them with their events: queued jobs
    taken off their courier's route (it and their residents are told), then the new routes claiming their
    jobs, then each courier's ETAs from its new plan."""
    out = _Written()
    changing = [a for a in result.assignments if not a.unchanged]
    releasing: dict[str, set[str]] = {}
    for job_id in result.released:
        if job_id in fleet.held:
            releasing.setdefault(fleet.held[job_id][0], set()).add(job_id)
    if not changing and not releasing:
        return out
    kept, releasing = await _lock_and_check(conn, fleet, changing, releasing)
    # Couriers losing queued work go through a CourierChange (stops settled, ETAs and legs refreshed, the
    # courier and residents told); the others only gain, written in bulk with the timings the round computed.
    changes = {
        courier_id: CourierChange(conn, svc, live, courier_id, now) for courier_id in sorted(releasing)
    }
    # Queued work re-planned onto the same courier (its queue took another order, say) is not news to its
    # resident beyond the new ETA; unless the courier must accept the new route again.
    staying = {
        j
        for a in kept
        for j in a.candidate.job_ids
        if svc.settings.courier_auto_accept and fleet.held.get(j, ("",))[0] == a.courier_id
    }
    for courier_id, job_ids in sorted(releasing.items()):
        for route_id in sorted({fleet.held[j][1] for j in job_ids}):
            route = await conn.fetchrow("SELECT * FROM routes WHERE id = $1", route_id)
            assert route is not None
            out.released += await give_back(
                changes[courier_id], route, refuse=False, why="replanned", only=job_ids, staying=staying
            )
    if kept:
        await _claim(conn, svc, live, fleet, kept, set(releasing), number, now, out)
    news: list[NewEvent] = []
    for courier_id, change in changes.items():
        await change.conclude(fleet.positions.get(courier_id))
        news += change.events
        out.grants += change.grants
    out.events[:0] = news  # the old routes' news before the new routes
    return out


async def _lock_and_check(
    conn: Conn, fleet: _Fleet, changing: list[Assignment], releasing: dict[str, set[str]]
) -> tuple[list[Assignment], dict[str, set[str]]]:
    """Lock couriers, orders, then jobs (the global order). A courier whose open stops changed since the
    round read them (a stop done meanwhile) is left alone this round: its new assignment and its releases
    are dropped, and so is an assignment needing a job it held. An assignment also needs its courier still
    on shift without an open offer, and each of its jobs still waiting for a courier or still on the route
    it was queued on."""
    involved = sorted({a.courier_id for a in changing} | set(releasing))
    ready = {
        r["id"]
        for r in await conn.fetch(
            """SELECT id FROM couriers c WHERE id = ANY ($1::text[]) AND on_shift AND active
                 AND NOT EXISTS (SELECT 1 FROM routes r WHERE r.courier_id = c.id AND r.state = 'offered')
               ORDER BY id FOR UPDATE""",
            involved,
        )
    }
    now_open = await open_stops(conn, involved)
    moved_on = {c for c in involved if [s["id"] for s in now_open[c]] != fleet.stop_ids.get(c)}
    job_ids = sorted(
        {j for a in changing for j in a.candidate.job_ids} | {j for js in releasing.values() for j in js}
    )
    await conn.execute(
        """SELECT 1 FROM orders WHERE id IN (SELECT order_id FROM jobs WHERE id = ANY ($1::text[]))
           ORDER BY id FOR UPDATE""",
        job_ids,
    )
    where = {
        r["id"]: r["route_id"]
        for r in await conn.fetch(
            """SELECT id, route_id FROM jobs WHERE id = ANY ($1::text[]) AND state IN ('accepted', 'ready')
               ORDER BY id FOR UPDATE""",
            job_ids,
        )
    }

    def still(job_id: str) -> bool:
        if job_id not in where:
            return False
        if job_id in fleet.held:
            holder, route_id = fleet.held[job_id]
            return where[job_id] == route_id and holder not in moved_on
        return where[job_id] is None

    kept = [
        a
        for a in changing
        if a.courier_id in ready and a.courier_id not in moved_on and all(map(still, a.candidate.job_ids))
    ]
    return kept, {
        c: {j for j in js if still(j)}
        for c, js in releasing.items()
        if c not in moved_on and any(map(still, js))
    }


async def _claim(
    conn: Conn,
    svc: Services,
    live: LiveLocations,
    fleet: _Fleet,
    kept: list[Assignment],
    concluded: set[str],
    number: int,
    now: datetime,
    out: _Written,
) -> None:
    """The new routes, their stops, the one-route-per-job compare-and-set, and their events; for couriers
    not `concluded` elsewhere, their legs (an idle courier sets off now, or when its last service ends),
    plan caches and position shares."""
    auto = svc.settings.courier_auto_accept
    routes: list[dict[str, Any]] = []
    stops: list[dict[str, Any]] = []
    plans: dict[str, bytes] = {}
    legs: list[tuple[str, Point, datetime, str]] = []
    states = {c.courier_id: c for c in fleet.couriers}
    for a in kept:
        route = _route_row(a.courier_id, auto, now, svc.settings.route_offer_s)
        committed = len(a.route.stops) - len(a.candidate.options[0].stops)
        new = [(new_id("stp"), t) for t in a.timings[committed:]]
        route["stops"] = [_stop_row(stop_id, route["id"], seq, t) for seq, (stop_id, t) in enumerate(new)]
        routes.append(route)
        stops += route["stops"]
        if a.courier_id in concluded:
            continue
        ids = fleet.stop_ids[a.courier_id][:committed] + [stop_id for stop_id, _ in new]
        plans[a.courier_id] = plan_payload(ids, a.timings)
        first = a.timings[0].stop
        if first.kind == "pickup" and first.shop_id is not None and (auto or committed):
            out.grants.append(Grant(a.courier_id, ids[0], first.shop_id, {"stop_id": ids[0]}))
        state = states[a.courier_id]
        if not committed and auto:
            set_off = now if state.available_at is None else max(now, instant(state.available_at))
            legs.append((a.courier_id, state.position, set_off, ids[0]))
    await conn.execute(
        """INSERT INTO routes (id, courier_id, state, round, offered_at, deadline_at, accepted_at, updated_at)
           SELECT id, courier_id, $3, $4, $5, $6, $7, $5
           FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(id, courier_id, n) ORDER BY n""",
        [r["id"] for r in routes],
        [r["courier_id"] for r in routes],
        routes[0]["state"],
        number,
        now,
        routes[0]["deadline_at"],
        routes[0]["accepted_at"],
    )
    await conn.execute(
        """INSERT INTO stops (id, route_id, seq, kind, shop_id, order_id, job_ids, lat, lng, items,
                              eta_arrival, eta_service)
           SELECT id, route_id, seq, kind, shop_id, order_id, string_to_array(job_ids, ','), lat, lng, items,
                  arrival, service
           FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::float8[], $9::float8[], $10::int[], $11::timestamptz[], $12::timestamptz[])
                AS t(id, route_id, seq, kind, shop_id, order_id, job_ids, lat, lng, items,
                     arrival, service)""",
        *([s[column] for s in stops] for column in _STOP_COLUMNS[:6]),
        [",".join(s["job_ids"]) for s in stops],
        *([s[column] for s in stops] for column in _STOP_COLUMNS[7:]),
    )
    # The one-route-per-job compare-and-set: every job must be free (queued ones were just given back), or
    # the round rolls back.
    claims = [
        (job_id, route["id"]) for route, a in zip(routes, kept, strict=True) for job_id in a.candidate.job_ids
    ]
    status = await conn.execute(
        """UPDATE jobs j SET route_id = t.route_id, updated_at = $3
           FROM unnest($1::text[], $2::text[]) AS t(job_id, route_id)
           WHERE j.id = t.job_id AND j.route_id IS NULL AND j.state IN ('accepted', 'ready')""",
        [job_id for job_id, _ in claims],
        [route_id for _, route_id in claims],
        now,
    )
    if int(status.split()[-1]) != len(claims):
        raise RoundConflict(f"{len(claims)} jobs to place, {status}")
    if legs:
        await conn.execute(
            """UPDATE couriers c SET leg_lat = t.lat, leg_lng = t.lng, leg_at = t.at, leg_stop_id = t.stop_id
               FROM unnest($1::text[], $2::float8[], $3::float8[], $4::timestamptz[], $5::text[])
                    AS t(id, lat, lng, at, stop_id)
               WHERE c.id = t.id""",
            *(
                list(column)
                for column in zip(*((c, p[0], p[1], at, stop) for c, p, at, stop in legs), strict=True)
            ),
        )
    await live.set_plans(plans)
    orders = await delivery_codes(conn, sorted({o for a in kept for o in a.candidate.order_ids}))
    for route in routes:
        body = route_json(route, route["stops"])
        out.events.append(NewEvent(route["courier_id"], "route.offered", body))
        if auto:
            out.events += etas_of(body, orders)
    out.routes = [r["id"] for r in routes]
    out.placed += len(claims)
    out.moved += sum(job_id in fleet.held for job_id, _ in claims)


_STOP_COLUMNS = (
    *("id", "route_id", "seq", "kind", "shop_id", "order_id", "job_ids"),
    *("lat", "lng", "items", "eta_arrival", "eta_service"),
)


def _route_row(courier_id: str, auto: bool, now: datetime, offer_s: float) -> dict[str, Any]:
    """A new route as its row will read (the courier is sent it without reading it back)."""
    return {
        "id": new_id("rte"),
        "courier_id": courier_id,
        "state": "active" if auto else "offered",
        "offered_at": now,
        "deadline_at": None if auto else now + timedelta(seconds=offer_s),
        "accepted_at": now if auto else None,
        "closed_at": None,
        "reason": None,
    }


def _stop_row(stop_id: str, route_id: str, seq: int, timing: StopTiming) -> dict[str, Any]:
    s = timing.stop
    return {
        "id": stop_id,
        "route_id": route_id,
        "seq": seq,
        "kind": s.kind,
        "shop_id": s.shop_id,
        "order_id": s.order_id,
        "job_ids": list(s.job_ids),
        "lat": s.location[0],
        "lng": s.location[1],
        "items": s.items,
        "eta_arrival": instant(timing.arrival),
        "eta_service": instant(timing.service_at),
        "state": "pending",
        "arrived_at": None,
        "arrival_proof": None,
        "completed_at": None,
        "proof": None,
        "locked": False,
    }


def etas_of(route: dict[str, Any], orders: dict[str, asyncpg.Record]) -> list[NewEvent]:
    """order.eta for each drop-off of a route the courier has taken: the resident's ETA and code."""
    events = []
    for stop in route["stops"]:
        if stop["kind"] == "dropoff" and stop["state"] != "cancelled":
            order = orders[stop["order_id"]]
            body = eta_body(
                order["id"],
                stop["id"],
                stop["eta"]["arrival"],
                stop["eta"]["service"],
                order["delivery_code"],
            )
            events.append(NewEvent(order["resident_id"], "order.eta", body))
    return events


async def run_dispatch(svc: Services, live: LiveLocations) -> None:
    """This node's share of the courier timers: planned shifts, offer deadlines, and the dispatch round.
    Every node runs it; each due item is claimed in PostgreSQL, so each fires once."""
    outage = Throttle(5.0)
    while True:
        try:
            await courier_service.fire_due_shifts(svc)
            await expire_offers(svc, live)
            report = await run_round(svc, live)
            if report is not None and (report.routes or report.released):
                log.info("dispatch round", extra={"round": report.round, "routes": report.routes})
        except asyncio.CancelledError:
            raise
        except RoundConflict as exc:
            log.warning("dispatch round rolled back: %s", exc)
        except Exception as exc:
            if translate(exc) is None:
                log.exception("dispatch loop failed")
            elif outage.ready():  # a dependency away: one line now and then, the loop goes on
                log.warning("dispatch loop: %s: %s", type(exc).__name__, exc)
        await svc.clock.sleep(await _until_next_look(svc))


async def _until_next_look(svc: Services) -> float:
    """Clock seconds to sleep before looking again: a poll, but no longer than until the round is due, so
    rounds start on time rather than up to a poll late (at a replay's clock speed a poll can be a third of
    a round)."""
    wait = min(svc.settings.timer_poll_s, svc.settings.dispatch_round_s)
    try:
        due = await round_due(svc)
    except Exception:  # PostgreSQL away: the loop above reports it; just poll
        return wait
    if due is None or due.year <= 1:
        return wait
    return max(0.0, min(wait, (due - svc.clock.now()).total_seconds()))
