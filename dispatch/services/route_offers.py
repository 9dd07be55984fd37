"""Route offers and work given back.

A courier answers an offered route (accept, decline) before its deadline; unanswered, the offer expires by
a timer that any node may fire (compare-and-set on the route's state after locking its courier, so once).
Declined and expired jobs, and the not-yet-picked-up jobs of couriers gone stale or off shift, go back to
the dispatch round; what is already on board stays with the courier. Locks as in routes.py: the courier's
row, then orders, then jobs.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import asyncpg

from dispatch.core import stops as stop_rules
from dispatch.core.errors import TransitionError
from dispatch.core.jobs import JobState
from dispatch.core.stops import LIVE_ROUTES, OPEN_STOPS, ROUTE_TRANSITIONS, WAITING, RouteAction, RouteState
from dispatch.db import Conn, retried, transaction
from dispatch.errors import Forbidden, NotFound
from dispatch.outbox import NewEvent
from dispatch.services.context import Services
from dispatch.services.locations import LiveLocations
from dispatch.services.records import order_jobs, order_json
from dispatch.services.routes import (
    CourierChange,
    courier_open_stops,
    delivery_codes,
    lock_courier,
    lock_jobs,
    routes_json,
    settle_stops,
    trusted_point,
)


async def _own_route(conn: Conn, courier_id: str, route_id: str) -> None:
    owner = await conn.fetchval("SELECT courier_id FROM routes WHERE id = $1", route_id)
    if owner is None:
        raise NotFound(f"no route {route_id}", code="route_not_found")
    if owner != courier_id:
        raise Forbidden("that route is another courier's", code="not_your_route")
    await lock_courier(conn, courier_id)


async def _refused(conn: Conn, action: RouteAction, route_id: str) -> TransitionError:
    """Why the compare-and-set of an answer to an offer missed."""
    state = await conn.fetchval("SELECT state FROM routes WHERE id = $1", route_id)
    return stop_rules.refuse_answer(action, RouteState(state))


async def _answer(
    conn: Conn, action: RouteAction, route_id: str, now: datetime, **columns: Any
) -> asyncpg.Record | None:
    """The compare-and-set of a route change, `columns` set too (accepting also needs the deadline not passed,
    expiring it passed). A courier's answer that misses is refused; otherwise None says it missed."""
    rule = ROUTE_TRANSITIONS[action]
    sets = "".join(f", {name} = ${n + 5}" for n, name in enumerate(columns))
    deadline = {RouteAction.ACCEPT: "AND deadline_at > $2", RouteAction.EXPIRE: "AND deadline_at <= $2"}
    route = await conn.fetchrow(
        f"""UPDATE routes SET state = $3, updated_at = $2{sets}
            WHERE id = $1 AND state = ANY ($4::text[]) {deadline.get(action, "")} RETURNING *""",
        route_id,
        now,
        rule.to_state,
        list(rule.from_states),
        *columns.values(),
    )
    if route is None and action in (RouteAction.ACCEPT, RouteAction.DECLINE):
        raise await _refused(conn, action, route_id)
    return route


@retried
async def accept(svc: Services, live: LiveLocations, courier_id: str, route_id: str) -> dict[str, Any]:
    now = svc.clock.now()
    position = await live.position(courier_id)
    async with transaction(svc.pool) as conn:
        await _own_route(conn, courier_id, route_id)
        await _answer(conn, RouteAction.ACCEPT, route_id, now, accepted_at=now)
        change = CourierChange(conn, svc, live, courier_id, now)
        change.touched.add(route_id)
        change.announce.add(route_id)
        await delivery_codes(conn, await _route_orders(conn, route_id))
        events = await change.finish(trusted_point(position, now, svc.settings.courier_stale_s))
        body = (await routes_json(conn, [route_id]))[route_id]
    await change.published(events)
    return body


async def _route_orders(conn: Conn, route_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT order_id FROM stops WHERE route_id = $1 AND order_id IS NOT NULL ORDER BY order_id",
        route_id,
    )
    return [r["order_id"] for r in rows]


@retried
async def decline(
    svc: Services, live: LiveLocations, courier_id: str, route_id: str, reason: str | None
) -> dict[str, Any]:
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        await _own_route(conn, courier_id, route_id)
        route = await _answer(conn, RouteAction.DECLINE, route_id, now, closed_at=now, reason=reason)
        assert route is not None  # a courier's answer that misses is refused
        change = CourierChange(conn, svc, live, courier_id, now)
        await give_back(change, route, refuse=True, why="declined")
        events = await change.finish(None)
        body = (await routes_json(conn, [route_id]))[route_id]
    await change.published(events)
    return body


async def expire_offers(svc: Services, live: LiveLocations, limit: int = 100) -> int:
    """Offers unanswered by their deadline: the jobs go back to the next round (to another courier).
    Claimed by compare-and-set on the route's state after locking its courier, so each fires once."""
    fired = 0
    while fired < limit:
        now = svc.clock.now()
        due = await svc.pool.fetchrow(
            """SELECT id, courier_id FROM routes WHERE state = 'offered' AND deadline_at <= $1
               ORDER BY deadline_at LIMIT 1""",
            now,
        )
        if due is None:
            return fired
        async with transaction(svc.pool) as conn:
            await lock_courier(conn, due["courier_id"])
            route = await _answer(
                conn, RouteAction.EXPIRE, due["id"], now, closed_at=now, reason="no answer in time"
            )
            if route is None:
                continue  # answered meanwhile, or another node fired it
            change = CourierChange(conn, svc, live, due["courier_id"], now)
            await give_back(change, route, refuse=True, why="offer_expired")
            events = await change.finish(None)
        await change.published(events)
        fired += 1
    return fired


async def give_back(
    change: CourierChange,
    route: asyncpg.Record,
    *,
    refuse: bool,
    why: str,
    only: Collection[str] | None = None,
    staying: Collection[str] = (),
) -> int:
    """Jobs on `route` not yet picked up (of `only`, if given) go back to the dispatch round; goods already on
    board stay with the courier (their drop-off keeps only them); stops left with nothing to do end
    (`settle_stops`). Residents are told a courier is being found again, unless all their order's jobs given
    back are `staying` (the caller gives them to the same courier again: its new ETA is the news). The
    caller holds the courier's row, orders and jobs are locked here."""
    conn, now = change.conn, change.now
    stops = await conn.fetch(
        "SELECT * FROM stops WHERE route_id = $1 AND state = ANY ($2::text[]) ORDER BY seq",
        route["id"],
        list(OPEN_STOPS),
    )
    orders, jobs = await lock_jobs(conn, {j for s in stops for j in s["job_ids"]})
    freed = sorted(
        j["id"]
        for j in jobs
        if j["route_id"] == route["id"]
        and JobState(j["state"]) in WAITING
        and (only is None or j["id"] in only)
    )
    status = await conn.execute(
        "UPDATE jobs SET route_id = NULL, updated_at = $3 WHERE id = ANY ($1::text[]) AND route_id = $2",
        freed,
        route["id"],
        now,
    )
    assert int(status.split()[-1]) == len(freed)  # we hold the jobs' rows
    if refuse:
        await conn.execute(
            """INSERT INTO route_refusals (job_id, courier_id, at) SELECT unnest($1::text[]), $2, $3
               ON CONFLICT DO NOTHING""",
            freed,
            route["courier_id"],
            now,
        )
    await settle_stops(change, stops)
    change.touched.add(route["id"])
    if route["accepted_at"] is not None:  # the residents were told a courier was coming
        for order_id in sorted({j["order_id"] for j in jobs if j["id"] in freed and j["id"] not in staying}):
            body = order_json(orders[order_id], await order_jobs(conn, order_id))
            body["courier"] = {"state": "reassigning", "reason": why}
            change.events.append(NewEvent(orders[order_id]["resident_id"], "order.updated", body))
    return len(freed)


async def release_stranded(svc: Services, live: LiveLocations, now: datetime) -> int:
    """Give back the not-yet-picked-up work of couriers off shift or stale, and drop stops whose jobs were all
    cancelled meanwhile. Returns the number of jobs given back."""
    waiting = sorted(WAITING)
    rows = await svc.pool.fetch(
        """SELECT c.id, bool_and(c.on_shift AND c.active) AS working,
                  coalesce(bool_or(j.state = ANY ($1::text[])), false) AS unpicked,
                  bool_or(NOT EXISTS (SELECT 1 FROM jobs k WHERE k.id = ANY (s.job_ids)
                                      AND k.state = ANY ($2::text[]))) AS dead_stops
           FROM routes r
           JOIN couriers c ON c.id = r.courier_id
           JOIN stops s ON s.route_id = r.id AND s.state = ANY ($3::text[])
           LEFT JOIN jobs j ON j.id = ANY (s.job_ids)
           WHERE r.state = ANY ($4::text[])
           GROUP BY c.id
           HAVING bool_or(j.state = ANY ($1::text[]))
               OR bool_or(NOT EXISTS (SELECT 1 FROM jobs k WHERE k.id = ANY (s.job_ids)
                                      AND k.state = ANY ($2::text[])))
           ORDER BY c.id""",
        waiting,
        [*waiting, JobState.PICKED_UP],
        list(OPEN_STOPS),
        list(LIVE_ROUTES),
    )
    positions = await live.positions(r["id"] for r in rows if r["working"] and r["unpicked"])
    released = 0
    for r in rows:
        why = None
        if r["unpicked"] and not r["working"]:
            why = "off_shift"
        elif r["unpicked"] and positions.silent(r["id"], now, svc.settings.courier_stale_s):
            why = "courier_stale"
        if why is not None or r["dead_stops"]:
            released += await _tidy(svc, live, r["id"], why, now)
    return released


async def _tidy(svc: Services, live: LiveLocations, courier_id: str, why: str | None, now: datetime) -> int:
    released = 0
    async with transaction(svc.pool) as conn:
        await lock_courier(conn, courier_id)
        change = CourierChange(conn, svc, live, courier_id, now)
        await settle_stops(change, await courier_open_stops(conn, courier_id))
        if why is not None:
            for route in await conn.fetch(
                "SELECT * FROM routes WHERE courier_id = $1 AND state = ANY ($2::text[]) ORDER BY ordinal",
                courier_id,
                list(LIVE_ROUTES),
            ):
                if route["state"] == RouteState.OFFERED:
                    await _answer(conn, RouteAction.WITHDRAW, route["id"], now, reason=why, closed_at=now)
                    change.cancelled.add(route["id"])
                released += await give_back(change, route, refuse=False, why=why)
        events = await change.finish(None)
    await change.published(events)
    return released
