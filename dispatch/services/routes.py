"""Route and stop progress: the courier's remaining stops and their ETAs, arrivals, pickups (by the courier or
the shop's hand-over), drop-offs proven by the resident's code or by the courier at the door, and who may see
the courier's position.

Locks, always in this order: the courier's row, then orders (by id), then jobs. Every change to a courier's
routes or stops holds its row, so one courier's route changes one at a time on any node; the dispatch round
takes the same locks in the same order, so nothing deadlocks.

Times in the pure core are minutes since EPOCH.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from dispatch.core import jobs as job_rules
from dispatch.core.errors import TransitionError
from dispatch.core.routes import Point, ServiceTimes, Stop, StopTiming, Travel, eta_changes, simulate
from dispatch.db import Conn, retried, transaction
from dispatch.errors import Conflict, DispatchError, Forbidden, NotFound
from dispatch.outbox import Event, NewEvent, append_events
from dispatch.services.context import Services
from dispatch.services.locations import Grant, LiveLocations, Position
from dispatch.services.records import core_job, order_json, refresh_order, shop_job_json
from geo import haversine_m

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
Row = asyncpg.Record | Mapping[str, Any]  # a row, or a dict shaped like one
MAX_WRONG_CODES = 5
LIVE_ROUTES = ["offered", "active"]
OPEN_STOPS = ["pending", "arrived"]

_OPEN_STOPS_SQL = """
SELECT s.*, r.state AS route_state, r.ordinal, r.courier_id, o.resident_id, o.delivery_code,
       (SELECT max(j.ready_at) FROM jobs j WHERE j.id = ANY (s.job_ids)) AS ready_at
FROM stops s
JOIN routes r ON r.id = s.route_id
LEFT JOIN orders o ON o.id = s.order_id
WHERE r.courier_id = ANY ($1::text[]) AND r.state = ANY ($2::text[]) AND s.state = ANY ($3::text[])
ORDER BY r.courier_id, r.ordinal, s.seq
"""


def minutes(at: datetime) -> float:
    return (at - EPOCH).total_seconds() / 60.0


def instant(minute: float) -> datetime:
    return EPOCH + timedelta(minutes=minute)


def travel_of(svc: Services) -> Travel:
    model = svc.travel

    def travel(a: Point, b: Point) -> float:
        return model.minutes(a[0], a[1], b[0], b[1])

    return travel


def service_times(svc: Services) -> ServiceTimes:
    return ServiceTimes(svc.settings.pickup_service_minutes, svc.settings.dropoff_service_minutes)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def core_stop(row: asyncpg.Record) -> Stop:
    ready = row["ready_at"] if row["kind"] == "pickup" else None
    return Stop(
        row["kind"],
        (row["lat"], row["lng"]),
        tuple(row["job_ids"]),
        order_id=row["order_id"],
        shop_id=row["shop_id"],
        ready_at=None if ready is None else minutes(ready),
        items=row["items"],
    )


async def open_stops(conn: Conn, courier_ids: Sequence[str]) -> dict[str, list[asyncpg.Record]]:
    """Each courier's stops still to do, in the order it does them (its live routes, then stop order)."""
    rows = await conn.fetch(_OPEN_STOPS_SQL, list(courier_ids), LIVE_ROUTES, OPEN_STOPS)
    out: dict[str, list[asyncpg.Record]] = {courier_id: [] for courier_id in courier_ids}
    for row in rows:
        out[row["courier_id"]].append(row)
    return out


def stop_json(row: Row) -> dict[str, Any]:
    """A stop as the courier sees it: where and what, never the resident's code."""
    return {
        "id": row["id"],
        "seq": row["seq"],
        "kind": row["kind"],
        "state": row["state"],
        "location": {"lat": row["lat"], "lng": row["lng"]},
        "shop_id": row["shop_id"],
        "order_id": row["order_id"],
        "job_ids": list(row["job_ids"]),
        "items": row["items"],
        "eta": {"arrival": _iso(row["eta_arrival"]), "service": _iso(row["eta_service"])},
        "arrived_at": _iso(row["arrived_at"]),
        "completed_at": _iso(row["completed_at"]),
        "proof": row["proof"],
        "locked": row["locked"],
    }


def route_json(route: Row, stops: Iterable[Row]) -> dict[str, Any]:
    return {
        "id": route["id"],
        "courier_id": route["courier_id"],
        "state": route["state"],
        "offered_at": _iso(route["offered_at"]),
        "deadline_at": _iso(route["deadline_at"]),
        "accepted_at": _iso(route["accepted_at"]),
        "closed_at": _iso(route["closed_at"]),
        "reason": route["reason"],
        "stops": [stop_json(s) for s in stops],
    }


async def routes_json(conn: Conn | asyncpg.Pool, route_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    routes = await conn.fetch("SELECT * FROM routes WHERE id = ANY ($1::text[])", list(route_ids))
    stops = await conn.fetch(
        "SELECT * FROM stops WHERE route_id = ANY ($1::text[]) ORDER BY route_id, seq", list(route_ids)
    )
    by_route: dict[str, list[asyncpg.Record]] = {}
    for stop in stops:
        by_route.setdefault(stop["route_id"], []).append(stop)
    return {r["id"]: route_json(r, by_route.get(r["id"], [])) for r in routes}


def plan_payload(stop_ids: Sequence[str], timings: Sequence[StopTiming]) -> bytes:
    """What the ping path needs to notice an ETA move without asking PostgreSQL."""
    return orjson.dumps(
        [
            {
                "id": stop_id,
                "kind": t.stop.kind,
                "lat": t.stop.location[0],
                "lng": t.stop.location[1],
                "ready": t.stop.ready_at,
                "items": t.stop.items,
                "arr": t.arrival,
                "svc": t.service_at,
            }
            for stop_id, t in zip(stop_ids, timings, strict=True)
        ]
    )


def etas_moved(plan: bytes, start: Point, now: datetime, travel: Travel, service: ServiceTimes) -> bool:
    """Would ETAs computed from `start` now differ by more than a minute from those last pushed?"""
    entries = orjson.loads(plan)
    if not entries:
        return False
    stops = [
        Stop(e["kind"], (e["lat"], e["lng"]), (e["id"],), ready_at=e["ready"], items=e["items"])
        for e in entries
    ]
    old = [StopTiming(s, e["arr"], e["svc"], e["svc"]) for s, e in zip(stops, entries, strict=True)]
    return bool(eta_changes(old, simulate(start, minutes(now), stops, travel, service)))


def items_of(lines: Iterable[dict[str, Any]]) -> int:
    return sum(int(line["qty"]) for line in lines)


def trusted_point(position: Position | None, now: datetime, stale_s: float) -> Point | None:
    if position is None or position.trusted is None or now.timestamp() - position.trusted.at > stale_s:
        return None
    return position.trusted.point


async def delivery_codes(conn: Conn, order_ids: list[str]) -> dict[str, asyncpg.Record]:
    """Each order's 4-digit code, made at its first dispatch (the caller holds the order locks), and its
    resident."""
    rows = await conn.fetch(
        """UPDATE orders o SET delivery_code = COALESCE(o.delivery_code, t.code)
           FROM unnest($1::text[], $2::text[]) AS t(id, code) WHERE o.id = t.id
           RETURNING o.id, o.delivery_code, o.resident_id""",
        order_ids,
        [f"{secrets.randbelow(10_000):04d}" for _ in order_ids],
    )
    return {r["id"]: r for r in rows}


async def lock_courier(conn: Conn, courier_id: str) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM couriers WHERE id = $1 FOR UPDATE", courier_id)
    if row is None:
        raise NotFound(f"no courier {courier_id}", code="courier_not_found")
    return row


@dataclass
class CourierChange:
    """One transaction's change to a courier's routes: the events it causes, the position shares it opens
    (after commit) and ends (before commit), and the routes whose new state the courier must see."""

    conn: Conn
    svc: Services
    live: LiveLocations
    courier_id: str
    now: datetime
    events: list[NewEvent] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    revokes: list[tuple[str, str]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  # route ids
    cancelled: set[str] = field(default_factory=set)  # route ids the courier loses
    announce: set[str] = field(default_factory=set)  # route ids whose residents get their ETA anyway

    async def finish(self, start: Point | None) -> list[Event]:
        """ETAs from `start` (None: the next stop), route updates, the plan cache, then the events."""
        rows = (await open_stops(self.conn, [self.courier_id]))[self.courier_id]
        await close_finished_routes(self, self.touched | self.cancelled)
        if rows:
            await self._refresh_etas(rows, start or (rows[0]["lat"], rows[0]["lng"]))
            first = rows[0]
            if first["kind"] == "pickup" and first["route_state"] == "active":
                self.grants.append(
                    Grant(self.courier_id, first["id"], first["shop_id"], {"stop_id": first["id"]})
                )
        else:
            await self.live.set_plans({self.courier_id: b"[]"})
        bodies = await routes_json(self.conn, sorted(self.touched | self.cancelled))
        for route_id in sorted(bodies):
            kind = "route.cancelled" if route_id in self.cancelled else "route.updated"
            self.events.append(NewEvent(self.courier_id, kind, bodies[route_id]))
        await self.live.revoke(self.revokes)  # before commit: no position may follow the change
        return await append_events(self.conn, self.events, self.now)

    async def _refresh_etas(self, rows: list[asyncpg.Record], start: Point) -> None:
        new = simulate(
            start,
            minutes(self.now),
            [core_stop(r) for r in rows],
            travel_of(self.svc),
            service_times(self.svc),
        )
        old = [
            StopTiming(core_stop(r), minutes(r["eta_arrival"]), minutes(r["eta_service"]), 0.0)
            for r in rows
            if r["eta_arrival"] is not None and r["eta_service"] is not None
        ]
        changed = set(eta_changes(old, new))
        moved = [(row, t) for row, t in zip(rows, new, strict=True) if t in changed]
        if moved:
            await self.conn.execute(
                """UPDATE stops s SET eta_arrival = t.arrival, eta_service = t.service
                   FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS t(id, arrival, service)
                   WHERE s.id = t.id""",
                [row["id"] for row, _ in moved],
                [instant(t.arrival) for _, t in moved],
                [instant(t.service_at) for _, t in moved],
            )
        self.touched.update(row["route_id"] for row, _ in moved)
        for row, t in zip(rows, new, strict=True):
            if row["kind"] != "dropoff" or row["route_state"] != "active":
                continue
            if t in changed or row["route_id"] in self.announce:
                self.events.append(NewEvent(row["resident_id"], "order.eta", eta_json(row, t)))
        await self.live.set_plans({self.courier_id: plan_payload([r["id"] for r in rows], new)})

    async def published(self, events: Sequence[Event]) -> None:
        """After commit."""
        await self.svc.publish(events)
        await self.live.grant(self.grants)


def eta_body(
    order_id: str, stop_id: str, arrival: str | None, eta: str | None, code: str | None
) -> dict[str, Any]:
    """`order.eta`, the resident's view of its drop-off: when, and the code to give the courier."""
    return {"order_id": order_id, "stop_id": stop_id, "arrival": arrival, "eta": eta, "code": code}


def eta_json(row: asyncpg.Record, timing: StopTiming) -> dict[str, Any]:
    arrival, eta = instant(timing.arrival).isoformat(), instant(timing.service_at).isoformat()
    return eta_body(row["order_id"], row["id"], arrival, eta, row["delivery_code"])


async def close_finished_routes(change: CourierChange, route_ids: set[str]) -> None:
    """Routes with no stop left to do end: completed if any stop was, else cancelled."""
    if not route_ids:
        return
    closed = await change.conn.fetch(
        """UPDATE routes r SET closed_at = $2, updated_at = $2,
               state = CASE WHEN EXISTS (SELECT 1 FROM stops s
                                         WHERE s.route_id = r.id AND s.state = 'completed')
                            THEN 'completed' ELSE 'cancelled' END
           WHERE r.id = ANY ($1::text[]) AND r.state = ANY ($3::text[])
             AND NOT EXISTS (SELECT 1 FROM stops s WHERE s.route_id = r.id AND s.state = ANY ($4::text[]))
           RETURNING r.id, r.state""",
        sorted(route_ids),
        change.now,
        LIVE_ROUTES,
        OPEN_STOPS,
    )
    for row in closed:
        if row["state"] == "cancelled":
            change.cancelled.add(row["id"])


# --- stop commands -------------------------------------------------------------------------------------


async def _locked_stop(change: CourierChange, stop_id: str, *, as_shop: bool = False) -> asyncpg.Record:
    """The stop, once the courier is locked and it is this courier's next stop; else a specific refusal."""
    conn = change.conn
    owner = await conn.fetchval(
        "SELECT r.courier_id FROM stops s JOIN routes r ON r.id = s.route_id WHERE s.id = $1", stop_id
    )
    if owner is None:
        raise NotFound(f"no stop {stop_id}", code="stop_not_found")
    if owner != change.courier_id and not as_shop:
        raise Forbidden("that stop is on another courier's route", code="not_your_stop")
    await lock_courier(conn, change.courier_id)
    stop = await conn.fetchrow(
        "SELECT s.*, r.state AS route_state FROM stops s JOIN routes r ON r.id = s.route_id WHERE s.id = $1",
        stop_id,
    )
    assert stop is not None
    if stop["state"] == "completed":
        raise Conflict("the stop is already completed", code="stop_already_completed")
    if stop["state"] == "cancelled" or stop["route_state"] not in LIVE_ROUTES:
        raise Conflict("the stop is no longer on a live route", code="stop_cancelled")
    if stop["route_state"] == "offered":
        raise Conflict("accept the route first", code="route_not_accepted")
    if stop["locked"]:
        raise Conflict("too many wrong codes: the stop is locked", code="stop_locked")
    (first, *_) = (await open_stops(conn, [change.courier_id]))[change.courier_id]
    if first["id"] != stop_id:
        raise Conflict(
            "stops complete in order; another stop comes first",
            code="stop_out_of_order",
            details={"next_stop_id": first["id"]},
        )
    return stop


@retried
async def arrive(svc: Services, live: LiveLocations, courier_id: str, stop_id: str) -> dict[str, Any]:
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        change = CourierChange(conn, svc, live, courier_id, now)
        stop = await _locked_stop(change, stop_id)
        if stop["state"] == "arrived":
            raise Conflict("already arrived at this stop", code="already_arrived")
        await conn.execute("UPDATE stops SET state = 'arrived', arrived_at = $2 WHERE id = $1", stop_id, now)
        change.touched.add(stop["route_id"])
        events = await change.finish((stop["lat"], stop["lng"]))
        route = (await routes_json(conn, [stop["route_id"]]))[stop["route_id"]]
    await change.published(events)
    return route


@retried
async def complete(
    svc: Services, live: LiveLocations, courier_id: str, stop_id: str, code: str | None
) -> dict[str, Any]:
    """Pickup: the stop's jobs are picked up. Drop-off: proven by the code, or by the courier at the door."""
    now = svc.clock.now()
    position = await live.position(courier_id)
    refusal: DispatchError | None = None
    async with transaction(svc.pool) as conn:
        change = CourierChange(conn, svc, live, courier_id, now)
        stop = await _locked_stop(change, stop_id)
        if stop["kind"] == "pickup":
            await _pick_up(change, stop, set(stop["job_ids"]), "courier")
        else:
            refusal = await _deliver(change, stop, code, position)
        events = [] if refusal else await change.finish((stop["lat"], stop["lng"]))
        route = (await routes_json(conn, [stop["route_id"]]))[stop["route_id"]]
    if refusal is not None:
        raise refusal  # after commit: the wrong-code count must stick
    await change.published(events)
    return route


async def lock_jobs(
    conn: Conn, job_ids: Iterable[str]
) -> tuple[dict[str, asyncpg.Record], list[asyncpg.Record]]:
    ids = sorted(job_ids)
    orders = await conn.fetch(
        """SELECT * FROM orders WHERE id IN (SELECT order_id FROM jobs WHERE id = ANY ($1::text[]))
           ORDER BY id FOR UPDATE""",
        ids,
    )
    jobs = await conn.fetch("SELECT * FROM jobs WHERE id = ANY ($1::text[]) ORDER BY id FOR UPDATE", ids)
    return {o["id"]: o for o in orders}, list(jobs)


async def _transition(conn: Conn, decision: job_rules.JobTransition) -> asyncpg.Record:
    row = await conn.fetchrow(
        "UPDATE jobs SET state = $2, updated_at = $3 WHERE id = $1 AND state = ANY ($4::text[]) RETURNING *",
        decision.job_id,
        decision.to_state.value,
        decision.at,
        [s.value for s in decision.from_states],
    )
    assert row is not None  # we hold the row lock
    return row


async def _pick_up(change: CourierChange, stop: asyncpg.Record, job_ids: set[str], proof: str) -> None:
    conn, now = change.conn, change.now
    orders, jobs = await lock_jobs(conn, stop["job_ids"])
    picked: dict[str, list[asyncpg.Record]] = {}
    for job in jobs:
        if job["id"] in job_ids and job["state"] in ("accepted", "ready"):
            row = await _transition(conn, job_rules.mark_picked_up(core_job(job), now))
            order = orders[row["order_id"]]
            change.events.append(NewEvent(row["shop_id"], "job.picked_up", shop_job_json(row, order)))
            picked.setdefault(row["order_id"], []).append(row)
    if not picked:
        raise Conflict("nothing left to pick up here", code="nothing_to_pick_up")
    waiting = [j for j in jobs if j["id"] not in job_ids and j["state"] in ("accepted", "ready")]
    if not waiting:
        await conn.execute(
            "UPDATE stops SET state = 'completed', completed_at = $2, proof = $3 WHERE id = $1",
            stop["id"],
            now,
            proof,
        )
        change.revokes.append((change.courier_id, stop["id"]))
    change.touched.add(stop["route_id"])
    drops = {
        r["order_id"]: r
        for r in (await open_stops(conn, [change.courier_id]))[change.courier_id]
        if r["kind"] == "dropoff"
    }
    for order_id in sorted(picked):
        order, order_jobs = await refresh_order(conn, orders[order_id], now)
        change.events.append(NewEvent(order["resident_id"], "order.updated", order_json(order, order_jobs)))
        drop = drops.get(order_id)
        if drop is not None:  # from the pickup of their order, the resident sees the courier coming
            change.grants.append(
                Grant(change.courier_id, drop["id"], order["resident_id"], {"order_id": order_id})
            )


async def _deliver(
    change: CourierChange, stop: asyncpg.Record, code: str | None, position: Position | None
) -> DispatchError | None:
    """Hand the order over, or return the refusal to raise after commit (a wrong code is counted)."""
    conn, now = change.conn, change.now
    orders, jobs = await lock_jobs(conn, stop["job_ids"])
    order = orders[stop["order_id"]]
    proof = _proof(change, stop, order, code, position)
    if proof is None:
        row = await conn.fetchrow(
            """UPDATE stops SET wrong_codes = wrong_codes + 1, locked = wrong_codes + 1 >= $2
               WHERE id = $1 RETURNING wrong_codes, locked""",
            stop["id"],
            MAX_WRONG_CODES,
        )
        assert row is not None
        if row["locked"]:
            return Conflict("too many wrong codes: the stop is locked", code="stop_locked")
        left = MAX_WRONG_CODES - row["wrong_codes"]
        return Conflict("that is not the order's code", code="wrong_code", details={"attempts_left": left})
    delivered = [
        await _transition(conn, job_rules.mark_delivered(core_job(job), now))
        for job in jobs
        if job["state"] == "picked_up"
    ]
    if not delivered:
        raise Conflict("nothing on board for this drop-off", code="nothing_to_deliver")
    await conn.execute(
        "UPDATE stops SET state = 'completed', completed_at = $2, proof = $3 WHERE id = $1",
        stop["id"],
        now,
        proof,
    )
    change.touched.add(stop["route_id"])
    order, order_jobs = await refresh_order(conn, order, now)
    change.events.append(NewEvent(order["resident_id"], "order.updated", order_json(order, order_jobs)))
    change.revokes.append((change.courier_id, stop["id"]))  # at delivery, sharing ends at once
    return None


def _proof(
    change: CourierChange,
    stop: asyncpg.Record,
    order: asyncpg.Record,
    code: str | None,
    position: Position | None,
) -> str | None:
    """'code' or 'proximity'; None for a wrong code; raises when no proof was offered at all."""
    if code is not None:
        expected = order["delivery_code"] or ""
        return "code" if hmac.compare_digest(code.encode(), expected.encode()) and expected else None
    if not order["allow_proximity"]:
        raise Conflict("this drop-off needs the resident's code", code="code_required")
    settings = change.svc.settings
    if position is None or position.flagged or position.stale(change.now, settings.courier_stale_s):
        raise Conflict("no recent trusted position proves you are at the door", code="proximity_not_proven")
    fix = position.latest
    distance = haversine_m(fix.lat, fix.lng, stop["lat"], stop["lng"])
    if distance > settings.proximity_m or fix.accuracy > settings.proximity_m:
        raise Conflict(
            "your position does not prove you are at the door",
            code="proximity_not_proven",
            details={
                "distance_m": round(distance, 1),
                "accuracy_m": fix.accuracy,
                "limit_m": settings.proximity_m,
            },
        )
    return "proximity"


@retried
async def hand_over(svc: Services, live: LiveLocations, shop_id: str, job_id: str) -> dict[str, Any]:
    """The shop confirms the goods left: to the resident (pickup orders), or to the courier."""
    job = await svc.pool.fetchrow(
        "SELECT j.*, o.fulfilment, r.courier_id FROM jobs j JOIN orders o ON o.id = j.order_id "
        "LEFT JOIN routes r ON r.id = j.route_id WHERE j.id = $1",
        job_id,
    )
    if job is None or job["shop_id"] != shop_id:
        raise NotFound(f"no job {job_id}", code="job_not_found")
    if job["fulfilment"] == "pickup":
        return await _collected(svc, job_id)
    if job["courier_id"] is None:
        raise Conflict("no courier has this job yet", code="no_courier_yet")
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        change = CourierChange(conn, svc, live, job["courier_id"], now)
        stop_id = await conn.fetchval(
            "SELECT id FROM stops WHERE route_id = $1 AND kind = 'pickup' AND $2 = ANY (job_ids)",
            job["route_id"],
            job_id,
        )
        stop = await _locked_stop(change, stop_id, as_shop=True)
        await _pick_up(change, stop, {job_id}, "shop")
        events = await change.finish(None)
        row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        order = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", job["order_id"])
    await change.published(events)
    assert row is not None and order is not None
    return shop_job_json(row, order)


async def _collected(svc: Services, job_id: str) -> dict[str, Any]:
    """A pickup order: the resident collected the goods (picked up counts as delivered)."""
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        orders, (job,) = await lock_jobs(conn, [job_id])
        try:
            decision = job_rules.mark_picked_up(core_job(job), now)
        except TransitionError as exc:
            raise Conflict(exc.message, code=exc.code) from None
        row = await _transition(conn, decision)
        order, jobs = await refresh_order(conn, orders[row["order_id"]], now)
        events = await append_events(
            conn,
            [
                NewEvent(row["shop_id"], "job.picked_up", shop_job_json(row, order)),
                NewEvent(order["resident_id"], "order.updated", order_json(order, jobs)),
            ],
            now,
        )
    await svc.publish(events)
    return shop_job_json(row, order)


@retried
async def unlock(svc: Services, stop_id: str) -> dict[str, Any]:
    """Admin: a locked drop-off may be tried again (after checking with the resident)."""
    route_id = await svc.pool.fetchval(
        "UPDATE stops SET locked = false, wrong_codes = 0 WHERE id = $1 RETURNING route_id", stop_id
    )
    if route_id is None:
        raise NotFound(f"no stop {stop_id}", code="stop_not_found")
    return (await routes_json(svc.pool, [route_id]))[route_id]


async def push_etas(svc: Services, live: LiveLocations, courier_id: str, start: Point) -> None:
    """The ping path saw ETAs move: recompute them in PostgreSQL (which decides) and tell who needs it."""
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        await lock_courier(conn, courier_id)
        change = CourierChange(conn, svc, live, courier_id, now)
        events = await change.finish(start)
    await change.published(events)
