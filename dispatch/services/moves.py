"""An operator moves work to another courier: one job, or what a route still has to collect.

One transaction: lock the couriers involved (by id: the courier's row comes first in every lock order),
then the orders and jobs; the rules (`dispatch.core.moves`) decide; the jobs leave their routes (whose
stops are settled as when work is given back: the courier is told, sharing its position ends) and go on a
new active route at the end of the chosen courier's work, by a compare-and-set on `route_id`. An operator's
move is an assignment, not an offer: the courier is told (`route.offered`, active) and the residents get
their ETA and code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from dispatch.core import moves as rules
from dispatch.core.jobs import JobState
from dispatch.core.routes import Point, Stop, StopTiming, simulate
from dispatch.core.stops import LIVE_ROUTES
from dispatch.db import Conn, retried, transaction
from dispatch.errors import Conflict, NotFound
from dispatch.ids import new_id
from dispatch.outbox import NewEvent, append_events
from dispatch.services.context import Services
from dispatch.services.locations import LiveLocations
from dispatch.services.routes import (
    CourierChange,
    core_stop,
    courier_open_stops,
    delivery_codes,
    instant,
    items_of,
    lock_courier,
    lock_jobs,
    minutes,
    open_stops,
    routes_json,
    service_times,
    settle_stops,
    travel_of,
    trusted_point,
)

ATTEMPTS = 3


class _Moved(Exception):
    """A job changed route between reading its courier and locking it: read again."""


async def jobs_of_route(svc: Services, route_id: str) -> list[str]:
    """The jobs still to collect on a live route (an empty list lets the rules say why nothing moves)."""
    route = await svc.pool.fetchrow("SELECT state FROM routes WHERE id = $1", route_id)
    if route is None:
        raise NotFound(f"no route {route_id}", code="route_not_found")
    if route["state"] not in LIVE_ROUTES:
        raise Conflict(f"the route is {route['state']}", code="route_closed")
    rows = await svc.pool.fetch(
        "SELECT id FROM jobs WHERE route_id = $1 AND state IN ('accepted', 'ready') ORDER BY id", route_id
    )
    return [r["id"] for r in rows]


@retried
async def move_jobs(
    svc: Services, live: LiveLocations, job_ids: list[str], courier_id: str
) -> dict[str, Any]:
    """Move the jobs to `courier_id`; returns the courier's new route."""
    for _ in range(ATTEMPTS):
        try:
            return await _move_once(svc, live, job_ids, courier_id)
        except _Moved:
            continue
    raise Conflict("the work was being dispatched; try again", code="work_busy")


async def _holders(conn: Conn | asyncpg.Pool, job_ids: list[str]) -> dict[str, str]:
    """job id -> the courier whose live route holds it."""
    rows = await conn.fetch(
        """SELECT j.id, r.courier_id FROM jobs j JOIN routes r ON r.id = j.route_id
           WHERE j.id = ANY ($1::text[]) AND r.state = ANY ($2::text[])""",
        job_ids,
        list(LIVE_ROUTES),
    )
    return {r["id"]: r["courier_id"] for r in rows}


async def _move_once(
    svc: Services, live: LiveLocations, job_ids: list[str], courier_id: str
) -> dict[str, Any]:
    now = svc.clock.now()
    position = await live.position(courier_id)
    async with transaction(svc.pool) as conn:
        holders = await _holders(conn, job_ids)
        couriers = sorted({courier_id, *holders.values()})
        rows = {c: await lock_courier(conn, c) for c in couriers}
        orders, jobs = await lock_jobs(conn, job_ids)
        if len(jobs) != len(set(job_ids)):
            raise NotFound("no such job", code="job_not_found")
        if await _holders(conn, job_ids) != holders:
            raise _Moved()
        shops = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, lat, lng FROM shops WHERE id = ANY ($1::text[])", [j["shop_id"] for j in jobs]
            )
        }
        moved = [
            rules.MovedJob(
                j["id"],
                j["order_id"],
                j["shop_id"],
                JobState(j["state"]),
                orders[j["order_id"]]["fulfilment"] == "delivery",
                holders.get(j["id"]),
                (shops[j["shop_id"]]["lat"], shops[j["shop_id"]]["lng"]),
                (orders[j["order_id"]]["drop_lat"], orders[j["order_id"]]["drop_lng"]),
                None if j["ready_at"] is None else minutes(j["ready_at"]),
                items_of(j["lines"]),
            )
            for j in jobs
        ]
        target = rows[courier_id]
        rules.check_move(moved, rules.Target(courier_id, target["active"], target["on_shift"]))

        # Off their routes first, as when work is given back.
        changes = {c: CourierChange(conn, svc, live, c, now) for c in couriers}
        for holder in sorted(set(holders.values())):
            theirs = sorted(j for j, c in holders.items() if c == holder)
            await conn.execute(
                "UPDATE jobs SET route_id = NULL, updated_at = $2 WHERE id = ANY ($1::text[])", theirs, now
            )
            await settle_stops(changes[holder], await courier_open_stops(conn, holder, theirs))

        # Then onto a new route, after what the courier already has to do.
        mine = changes[courier_id]
        existing = (await open_stops(conn, [courier_id]))[courier_id]
        stops = rules.new_stops(moved)
        start: Point = trusted_point(position, now, svc.settings.courier_stale_s) or (
            (existing[0]["lat"], existing[0]["lng"]) if existing else stops[0].location
        )
        timings = simulate(
            start, minutes(now), [*map(core_stop, existing), *stops], travel_of(svc), service_times(svc)
        )[len(existing) :]
        route_id = await _write_route(conn, courier_id, now, stops, timings)
        claimed = await conn.execute(
            """UPDATE jobs SET route_id = $2, updated_at = $3
               WHERE id = ANY ($1::text[]) AND route_id IS NULL AND state IN ('accepted', 'ready')""",
            [j.job_id for j in moved],
            route_id,
            now,
        )
        if int(claimed.split()[-1]) != len(moved):
            raise _Moved()  # never expected under the locks; roll back and read again
        await delivery_codes(conn, sorted({j.order_id for j in moved}))
        body = (await routes_json(conn, [route_id]))[route_id]
        mine.events.append(NewEvent(courier_id, "route.offered", body))
        mine.announce.add(route_id)
        new_events: list[NewEvent] = []
        for c in couriers:
            await changes[c].conclude(start if c == courier_id else None)
            new_events += changes[c].events
        events = await append_events(conn, new_events, now)
    await svc.publish(events)
    for change in changes.values():
        await live.grant(change.grants)
    return body


async def _write_route(
    conn: Conn, courier_id: str, now: datetime, stops: Sequence[Stop], timings: Sequence[StopTiming]
) -> str:
    route_id = new_id("rte")
    await conn.execute(
        """INSERT INTO routes (id, courier_id, state, offered_at, accepted_at, updated_at)
           VALUES ($1, $2, 'active', $3, $3, $3)""",
        route_id,
        courier_id,
        now,
    )
    await conn.executemany(
        """INSERT INTO stops (id, route_id, seq, kind, shop_id, order_id, job_ids, lat, lng, items,
                              eta_arrival, eta_service)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        [
            (
                new_id("stp"),
                route_id,
                seq,
                s.kind,
                s.shop_id,
                s.order_id,
                list(s.job_ids),
                s.location[0],
                s.location[1],
                s.items,
                instant(t.arrival),
                instant(t.service_at),
            )
            for seq, (s, t) in enumerate(zip(stops, timings, strict=True))
        ],
    )
    return route_id
