"""Route offers and work given back.

A courier answers an offered route (accept, decline) before its deadline; unanswered, the offer expires by
a timer that any node may fire (compare-and-set on the route's state after locking its courier, so once).
Declined and expired jobs, and the not-yet-picked-up jobs of couriers gone stale or off shift, go back to
the dispatch round; what is already on board stays with the courier. Locks as in routes.py: the courier's
row, then orders, then jobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from dispatch.db import Conn, retried, transaction
from dispatch.errors import Conflict, Forbidden, NotFound
from dispatch.outbox import NewEvent
from dispatch.services.context import Services
from dispatch.services.locations import LiveLocations
from dispatch.services.records import order_jobs, order_json
from dispatch.services.routes import (
    CourierChange,
    delivery_codes,
    items_of,
    lock_courier,
    lock_jobs,
    routes_json,
    trusted_point,
)


async def _own_route(conn: Conn, courier_id: str, route_id: str) -> None:
    owner = await conn.fetchval("SELECT courier_id FROM routes WHERE id = $1", route_id)
    if owner is None:
        raise NotFound(f"no route {route_id}", code="route_not_found")
    if owner != courier_id:
        raise Forbidden("that route is another courier's", code="not_your_route")
    await lock_courier(conn, courier_id)


def _closed(route: asyncpg.Record | None) -> Conflict:
    state = None if route is None else route["state"]
    if state in ("offered", "expired"):
        return Conflict("the offer has expired", code="offer_expired")
    if state == "active":
        return Conflict("the route is already accepted", code="already_accepted")
    return Conflict(f"the route is {state}", code=f"route_{state}")


@retried
async def accept(svc: Services, live: LiveLocations, courier_id: str, route_id: str) -> dict[str, Any]:
    now = svc.clock.now()
    position = await live.position(courier_id)
    async with transaction(svc.pool) as conn:
        await _own_route(conn, courier_id, route_id)
        route = await conn.fetchrow(
            """UPDATE routes SET state = 'active', accepted_at = $2, updated_at = $2
               WHERE id = $1 AND state = 'offered' AND deadline_at > $2 RETURNING *""",
            route_id,
            now,
        )
        if route is None:
            raise _closed(await conn.fetchrow("SELECT * FROM routes WHERE id = $1", route_id))
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
        route = await conn.fetchrow(
            """UPDATE routes SET state = 'declined', closed_at = $2, updated_at = $2, reason = $3
               WHERE id = $1 AND state = 'offered' RETURNING *""",
            route_id,
            now,
            reason,
        )
        if route is None:
            current = await conn.fetchrow("SELECT * FROM routes WHERE id = $1", route_id)
            if current is not None and current["state"] == "active":
                raise Conflict("an accepted route cannot be declined", code="route_not_offered")
            raise _closed(current)
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
            route = await conn.fetchrow(
                """UPDATE routes SET state = 'expired', closed_at = $2, updated_at = $2,
                          reason = 'no answer in time'
                   WHERE id = $1 AND state = 'offered' AND deadline_at <= $2 RETURNING *""",
                due["id"],
                now,
            )
            if route is None:
                continue  # answered meanwhile, or another node fired it
            change = CourierChange(conn, svc, live, due["courier_id"], now)
            await give_back(change, route, refuse=True, why="offer_expired")
            events = await change.finish(None)
        await change.published(events)
        fired += 1
    return fired


async def give_back(change: CourierChange, route: asyncpg.Record, *, refuse: bool, why: str) -> int:
    """Jobs on `route` not yet picked up go back to the dispatch round; goods already on board stay with the
    courier (their drop-off keeps only them); stops left with nothing to do are cancelled."""
    conn, now = change.conn, change.now
    stops = await conn.fetch(
        "SELECT * FROM stops WHERE route_id = $1 AND state IN ('pending', 'arrived') ORDER BY seq",
        route["id"],
    )
    orders, jobs = await lock_jobs(conn, {j for s in stops for j in s["job_ids"]})
    freed = sorted(
        j["id"] for j in jobs if j["route_id"] == route["id"] and j["state"] in ("accepted", "ready")
    )
    aboard = {j["id"]: items_of(j["lines"]) for j in jobs if j["state"] == "picked_up"}
    await conn.execute(
        "UPDATE jobs SET route_id = NULL, updated_at = $3 WHERE id = ANY ($1::text[]) AND route_id = $2",
        freed,
        route["id"],
        now,
    )
    if refuse:
        await conn.execute(
            """INSERT INTO route_refusals (job_id, courier_id, at) SELECT unnest($1::text[]), $2, $3
               ON CONFLICT DO NOTHING""",
            freed,
            route["courier_id"],
            now,
        )
    for stop in stops:
        kept = [j for j in stop["job_ids"] if j in aboard]
        if stop["kind"] == "dropoff" and kept:
            await conn.execute(
                "UPDATE stops SET job_ids = $2, items = $3 WHERE id = $1",
                stop["id"],
                kept,
                sum(aboard[j] for j in kept),
            )
            continue
        await conn.execute(
            """UPDATE stops SET state = $2::text,
                   completed_at = CASE WHEN $2::text = 'completed' THEN $3::timestamptz END
               WHERE id = $1""",
            stop["id"],
            "completed" if kept else "cancelled",  # a pickup partly handed over is done
            now,
        )
        change.revokes.append((route["courier_id"], stop["id"]))
    change.touched.add(route["id"])
    if route["accepted_at"] is not None:  # the residents were told a courier was coming
        for order_id in sorted({j["order_id"] for j in jobs if j["id"] in freed}):
            body = order_json(orders[order_id], await order_jobs(conn, order_id))
            body["courier"] = {"state": "reassigning", "reason": why}
            change.events.append(NewEvent(orders[order_id]["resident_id"], "order.updated", body))
    return len(freed)


async def release_stranded(svc: Services, live: LiveLocations, now: datetime) -> int:
    """Give back the not-yet-picked-up work of couriers off shift or stale, and drop stops whose jobs were all
    cancelled meanwhile. Returns the number of jobs given back."""
    rows = await svc.pool.fetch(
        """SELECT c.id, bool_and(c.on_shift AND c.active) AS working,
                  coalesce(bool_or(j.state IN ('accepted', 'ready')), false) AS unpicked,
                  bool_or(NOT EXISTS (SELECT 1 FROM jobs k WHERE k.id = ANY (s.job_ids)
                                      AND k.state IN ('accepted', 'ready', 'picked_up'))) AS dead_stops
           FROM routes r
           JOIN couriers c ON c.id = r.courier_id
           JOIN stops s ON s.route_id = r.id AND s.state IN ('pending', 'arrived')
           LEFT JOIN jobs j ON j.id = ANY (s.job_ids)
           WHERE r.state IN ('offered', 'active')
           GROUP BY c.id
           HAVING bool_or(j.state IN ('accepted', 'ready'))
               OR bool_or(NOT EXISTS (SELECT 1 FROM jobs k WHERE k.id = ANY (s.job_ids)
                                      AND k.state IN ('accepted', 'ready', 'picked_up')))
           ORDER BY c.id"""
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
        dead = await conn.fetch(
            """UPDATE stops s SET state = 'cancelled' FROM routes r
               WHERE r.id = s.route_id AND r.courier_id = $1 AND r.state IN ('offered', 'active')
                 AND s.state IN ('pending', 'arrived')
                 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = ANY (s.job_ids)
                                 AND j.state IN ('accepted', 'ready', 'picked_up'))
               RETURNING s.id, s.route_id""",
            courier_id,
        )
        for stop in dead:
            change.touched.add(stop["route_id"])
            change.revokes.append((courier_id, stop["id"]))
        if why is not None:
            for route in await conn.fetch(
                """SELECT * FROM routes WHERE courier_id = $1 AND state IN ('offered', 'active')
                   ORDER BY ordinal""",
                courier_id,
            ):
                if route["state"] == "offered":
                    await conn.execute(
                        "UPDATE routes SET state = 'cancelled', reason = $2, closed_at = $3, updated_at = $3 "
                        "WHERE id = $1",
                        route["id"],
                        why,
                        now,
                    )
                    change.cancelled.add(route["id"])
                released += await give_back(change, route, refuse=False, why=why)
        events = await change.finish(None)
    await change.published(events)
    return released
