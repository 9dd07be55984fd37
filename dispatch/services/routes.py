"""Route and stop progress: the courier's remaining stops and their ETAs, arrivals, pickups (by the courier,
the shop's hand-over or an admin), drop-offs, stops left without work, and who may see the courier's
position. The rules (whose turn, what proves what, the wrong-code lock, when a route closes) are in
`dispatch/core/stops.py`; this module loads what they need, and applies their decisions with compare-and-set
updates, one transaction per decision with its events.

Locks, always in this order: the courier's row, then orders (by id), then jobs. Every change to a courier's
routes or stops holds its row, so one courier's route changes one at a time on any node; the dispatch round
takes the same locks in the same order, so nothing deadlocks.

Times in the pure core are minutes since EPOCH.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from dispatch.core import jobs as job_rules
from dispatch.core import stops as stop_rules
from dispatch.core.courier_state import earliest_arrival
from dispatch.core.errors import TransitionError
from dispatch.core.jobs import JobState
from dispatch.core.routes import Point, ServiceTimes, Stop, StopTiming, Travel, eta_changes, simulate
from dispatch.core.stops import LIVE_ROUTES, OPEN_STOPS, Actor, RouteState, StopAction, StopState
from dispatch.db import Conn, retried, transaction
from dispatch.errors import Conflict, Forbidden, NotFound, ServiceUnavailable
from dispatch.outbox import Event, NewEvent, append_events
from dispatch.services.context import Services
from dispatch.services.locations import Fix, Grant, LiveLocations, Position
from dispatch.services.records import core_job, order_json, refresh_order, shop_job_json

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
Row = asyncpg.Record | Mapping[str, Any]  # a row, or a dict shaped like one

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


def crow_of(svc: Services) -> Travel:
    """Travel minutes at the model's speed, never rounded up: a lower bound of any leg's time."""
    model = dataclasses.replace(svc.travel, round_up=False)

    def crow(a: Point, b: Point) -> float:
        return model.minutes(a[0], a[1], b[0], b[1])

    return crow


def leg_of(courier: Row) -> tuple[Point, float] | None:
    """Where and when the courier set off on its current leg (see migration 0005), in core minutes."""
    if courier["leg_at"] is None or courier["leg_lat"] is None:
        return None
    return (courier["leg_lat"], courier["leg_lng"]), minutes(courier["leg_at"])


def busy_until(courier: Row, now: float) -> float | None:
    """A courier with nothing to do is busy until the service at its last stop ends."""
    leg = leg_of(courier)
    if courier["leg_stop_id"] is not None or leg is None or leg[1] <= now:
        return None
    return leg[1]


def next_arrival(
    svc: Services, courier: Row, first: Row, start: Point, now: float, fix: tuple[Point, float] | None
) -> float | None:
    """When the courier reaches its next stop `first`: when it got there, or the earliest it can from where it
    set off for it (`earliest_arrival`). None: it has not set off for it (timed from `start`, now)."""
    if first["arrived_at"] is not None:
        return minutes(first["arrived_at"])
    leg = leg_of(courier)
    if leg is None or courier["leg_stop_id"] != first["id"]:
        return None
    return earliest_arrival(
        (first["lat"], first["lng"]),
        now,
        travel_of(svc),
        position=start,
        set_off=leg,
        fix=fix,
        crow=crow_of(svc),
    )


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
    rows = await conn.fetch(_OPEN_STOPS_SQL, list(courier_ids), list(LIVE_ROUTES), list(OPEN_STOPS))
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
        "arrival_proof": row["arrival_proof"],
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
    left: Point | None = None  # the stop the courier completed in this change (it sets off from there)
    left_at: datetime | None = None  # when it leaves that stop: the end of the service there
    fix: tuple[Point, float] | None = None  # a fresh position and its minute, if the change has one

    def completed(self, stop: Row) -> None:
        """The courier completed `stop` now: it leaves when the second half of the service there ends."""
        half = service_times(self.svc)
        minutes_there = (half.pickup_minutes if stop["kind"] == "pickup" else half.dropoff_minutes) / 2
        self.left, self.left_at = (stop["lat"], stop["lng"]), self.now + timedelta(minutes=minutes_there)

    async def finish(self, start: Point | None) -> list[Event]:
        """ETAs from `start` (None: its trusted position, else the next stop), route updates, the plan cache,
        then the events."""
        await self.conclude(start)
        return await append_events(self.conn, self.events, self.now)

    async def conclude(self, start: Point | None) -> None:
        """`finish` but for appending the events, for a caller that appends them with others: one append
        per transaction keeps the recipients' counters locked in order."""
        rows = (await open_stops(self.conn, [self.courier_id]))[self.courier_id]
        await close_finished_routes(self, self.touched | self.cancelled)
        if start is None and rows:
            try:
                position = await self.live.position(self.courier_id)
            except ServiceUnavailable:  # Redis away: PostgreSQL decisions go on, timed from the next stop
                position = None
            start = trusted_point(position, self.now, self.svc.settings.courier_stale_s)
        courier = await self._set_off(rows, start)
        if rows:
            await self._refresh_etas(rows, start or (rows[0]["lat"], rows[0]["lng"]), courier)
            first = rows[0]
            if first["kind"] == "pickup" and first["route_state"] == RouteState.ACTIVE:
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

    async def _set_off(self, rows: list[asyncpg.Record], start: Point | None) -> asyncpg.Record:
        """Keep the courier's leg (where and when it set off, for which stop) true to this change: from the
        stop it completed; from where it is when its next stop is a new one (given work while idle, or its
        next stop taken away); none when it has nothing left. The caller holds the courier's row."""
        courier = await self.conn.fetchrow(
            "SELECT leg_lat, leg_lng, leg_at, leg_stop_id FROM couriers WHERE id = $1", self.courier_id
        )
        assert courier is not None
        # Only towards a stop of an accepted route: an offered one is not the courier's to drive to yet.
        next_id = rows[0]["id"] if rows and rows[0]["route_state"] == RouteState.ACTIVE else None
        point: Point | None
        if self.left is not None:
            point, at = self.left, self.left_at
        elif next_id == courier["leg_stop_id"]:
            return courier
        elif next_id is not None and start is not None:
            still_there = courier["leg_at"] is not None and courier["leg_at"] > self.now
            point, at = start, courier["leg_at"] if still_there else self.now
        else:  # nothing left to do, or where it is unknown: on its way to nothing we know of
            if courier["leg_stop_id"] is None:
                return courier
            leg = leg_of(courier)
            point, at, next_id = (None if leg is None else leg[0]), courier["leg_at"], None
        updated = await self.conn.fetchrow(
            """UPDATE couriers SET leg_lat = $2, leg_lng = $3, leg_at = $4, leg_stop_id = $5 WHERE id = $1
               RETURNING leg_lat, leg_lng, leg_at, leg_stop_id""",
            self.courier_id,
            None if point is None else point[0],
            None if point is None else point[1],
            at,
            next_id,
        )
        assert updated is not None
        return updated

    async def _refresh_etas(self, rows: list[asyncpg.Record], start: Point, courier: Row) -> None:
        now = minutes(self.now)
        first = next_arrival(self.svc, courier, rows[0], start, now, self.fix)
        new = simulate(
            start,
            max(now, busy_until(courier, now) or now),
            [core_stop(r) for r in rows],
            travel_of(self.svc),
            service_times(self.svc),
            first_arrival=first,
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
    """Routes with no stop left to do end (the rules: `stop_rules.close_route`)."""
    if not route_ids:
        return
    rows = await change.conn.fetch(
        """SELECT r.id, r.state, array_agg(s.state) AS stop_states FROM routes r
           JOIN stops s ON s.route_id = r.id WHERE r.id = ANY ($1::text[]) GROUP BY r.id ORDER BY r.id""",
        sorted(route_ids),
    )
    for row in rows:
        states = [StopState(s) for s in row["stop_states"]]
        decision = stop_rules.close_route(row["id"], RouteState(row["state"]), states, change.now)
        if decision is None:
            continue
        closed = await change.conn.fetchval(
            """UPDATE routes SET state = $2, closed_at = $3, updated_at = $3
               WHERE id = $1 AND state = ANY ($4::text[]) RETURNING id""",
            decision.route_id,
            decision.to_state.value,
            decision.at,
            list(decision.from_states),
        )
        assert closed is not None  # we hold the courier's row
        if decision.to_state == RouteState.CANCELLED:
            change.cancelled.add(decision.route_id)


# --- stop commands -------------------------------------------------------------------------------------

# Where each stop action records its time and its proof.
_STOP_COLUMNS = {
    StopAction.ARRIVE: ("arrived_at", "arrival_proof"),
    StopAction.COMPLETE: ("completed_at", "proof"),
    StopAction.CANCEL: (None, None),
}


def limits_of(svc: Services) -> stop_rules.Limits:
    s = svc.settings
    return stop_rules.Limits(s.arrival_radius_m, s.proximity_m, s.courier_stale_s)


def _fix(fix: Fix | None) -> stop_rules.Fix | None:
    return (
        None if fix is None else stop_rules.Fix(fix.point, fix.accuracy, datetime.fromtimestamp(fix.at, UTC))
    )


def stop_view(row: Row) -> stop_rules.StopView:
    return stop_rules.StopView(
        row["id"],
        row["kind"],
        StopState(row["state"]),
        RouteState(row["route_state"]),
        (row["lat"], row["lng"]),
        row["locked"],
        row["wrong_codes"],
    )


async def apply_stop(conn: Conn, decision: stop_rules.StopTransition) -> None:
    """The compare-and-set update of a decided stop change (we hold the courier's row, so it must match). A
    locked stop may only be cancelled."""
    at_column, proof_column = _STOP_COLUMNS[decision.action]
    values: dict[str, Any] = {"state": decision.to_state.value}
    if at_column is not None:
        values[at_column] = decision.at
    if proof_column is not None:
        values[proof_column] = None if decision.proof is None else decision.proof.value
    sets = ", ".join(f"{column} = ${n}" for n, column in enumerate(values, start=4))
    changed = await conn.fetchval(
        f"""UPDATE stops SET {sets}
            WHERE id = $1 AND state = ANY ($2::text[]) AND (NOT locked OR $3) RETURNING id""",
        decision.stop_id,
        list(decision.from_states),
        decision.action == StopAction.CANCEL,
        *values.values(),
    )
    assert changed is not None, decision


async def _owner(conn: Conn, stop_id: str, courier_id: str | None) -> str:
    """The courier whose route holds the stop; `courier_id` (None: an admin or a shop) must be it."""
    owner: str | None = await conn.fetchval(
        "SELECT r.courier_id FROM stops s JOIN routes r ON r.id = s.route_id WHERE s.id = $1", stop_id
    )
    if owner is None:
        raise NotFound(f"no stop {stop_id}", code="stop_not_found")
    if courier_id is not None and owner != courier_id:
        raise Forbidden("that stop is on another courier's route", code="not_your_stop")
    return owner


async def _locked_stop(change: CourierChange, stop_id: str) -> tuple[asyncpg.Record, str | None]:
    """The stop, once its courier is locked, and the id of the courier's next stop (they go in order)."""
    conn = change.conn
    await lock_courier(conn, change.courier_id)
    stop = await conn.fetchrow(
        "SELECT s.*, r.state AS route_state FROM stops s JOIN routes r ON r.id = s.route_id WHERE s.id = $1",
        stop_id,
    )
    assert stop is not None
    remaining = (await open_stops(conn, [change.courier_id]))[change.courier_id]
    return stop, remaining[0]["id"] if remaining else None


def _actor(courier_id: str | None) -> Actor:
    return Actor.ADMIN if courier_id is None else Actor.COURIER


@retried
async def arrive(svc: Services, live: LiveLocations, courier_id: str | None, stop_id: str) -> dict[str, Any]:
    """The courier is at its next stop, as its last trusted position shows; `courier_id` None: an admin says
    so for the stop's courier, without that proof."""
    now = svc.clock.now()
    position = None if courier_id is None else await live.position(courier_id)
    async with transaction(svc.pool) as conn:
        change = CourierChange(conn, svc, live, await _owner(conn, stop_id, courier_id), now)
        stop, next_id = await _locked_stop(change, stop_id)
        fix = _fix(position.trusted if position else None)
        decision = stop_rules.arrive(stop_view(stop), next_id, now, _actor(courier_id), fix, limits_of(svc))
        await apply_stop(conn, decision)
        change.touched.add(stop["route_id"])
        events = await change.finish((stop["lat"], stop["lng"]))
        route = (await routes_json(conn, [stop["route_id"]]))[stop["route_id"]]
    await change.published(events)
    return route


@retried
async def complete(
    svc: Services, live: LiveLocations, courier_id: str | None, stop_id: str, code: str | None
) -> dict[str, Any]:
    """Pickup: the stop's jobs are picked up. Drop-off: proven by the code, or by the courier at the door.
    `courier_id` None: an admin completes the stop for its courier, standing in for every proof."""
    now = svc.clock.now()
    position = None if courier_id is None else await live.position(courier_id)
    refusal: TransitionError | None = None
    async with transaction(svc.pool) as conn:
        change = CourierChange(conn, svc, live, await _owner(conn, stop_id, courier_id), now)
        stop, next_id = await _locked_stop(change, stop_id)
        if stop["kind"] == "pickup":
            fix = _fix(position.trusted if position else None)
            await _pick_up(change, stop, next_id, _actor(courier_id), fix=fix)
        else:
            refusal = await _deliver(change, stop, next_id, _actor(courier_id), code, position)
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
    stamp = "ready_at = $3, " if decision.action == job_rules.JobAction.READY else ""
    row = await conn.fetchrow(
        f"""UPDATE jobs SET {stamp}state = $2, updated_at = $3
            WHERE id = $1 AND state = ANY ($4::text[]) RETURNING *""",
        decision.job_id,
        decision.to_state.value,
        decision.at,
        [s.value for s in decision.from_states],
    )
    assert row is not None  # we hold the row lock
    return row


# The shop's event for each job step a stop makes (delivered: the resident is told, through the order).
_SHOP_EVENTS = {
    job_rules.JobAction.READY: "job.ready",
    job_rules.JobAction.PICK_UP: "job.picked_up",
    job_rules.JobAction.COLLECT: "job.collected",
}


async def apply_jobs(
    conn: Conn,
    orders: dict[str, asyncpg.Record],
    decisions: Sequence[job_rules.JobTransition],
    now: datetime,
) -> tuple[list[NewEvent], dict[str, asyncpg.Record]]:
    """Apply job steps in order, each with its shop's event, and each order's update after each kind of step
    (a hand-over's ``ready`` reaches the resident before its ``picked_up``). Returns the events and the
    orders as they end."""
    events: list[NewEvent] = []
    for action in dict.fromkeys(d.action for d in decisions):  # in order of first appearance
        changed: set[str] = set()
        for decision in (d for d in decisions if d.action == action):
            row = await _transition(conn, decision)
            changed.add(row["order_id"])
            if action in _SHOP_EVENTS:
                events.append(
                    NewEvent(
                        row["shop_id"], _SHOP_EVENTS[action], shop_job_json(row, orders[row["order_id"]])
                    )
                )
        for order_id in sorted(changed):
            order, order_jobs = await refresh_order(conn, orders[order_id], now)
            orders[order_id] = order
            body = order_json(order, order_jobs)
            events.append(NewEvent(order["resident_id"], "order.updated", body))
            if order["fulfilment"] == "pickup" and order["state"] == "ready":
                events.append(NewEvent(order["resident_id"], "order.ready_for_pickup", body))
    return events, orders


async def _pick_up(
    change: CourierChange,
    stop: asyncpg.Record,
    next_id: str | None,
    actor: Actor,
    *,
    fix: stop_rules.Fix | None = None,
    handed_over: str | None = None,
) -> None:
    conn, now = change.conn, change.now
    orders, jobs = await lock_jobs(conn, stop["job_ids"])
    mine = [j for j in jobs if j["route_id"] == stop["route_id"]]
    decision = stop_rules.pick_up(
        stop_view(stop),
        next_id,
        [core_job(j) for j in mine],
        now,
        actor,
        fix=fix,
        limits=limits_of(change.svc),
        handed_over=handed_over,
    )
    events, orders = await apply_jobs(conn, orders, decision.jobs, now)
    change.events += events
    if decision.stop is not None:
        await apply_stop(conn, decision.stop)
        change.revokes.append((change.courier_id, stop["id"]))
        if decision.stop.to_state == StopState.COMPLETED:
            change.completed(stop)
    change.touched.add(stop["route_id"])
    drops = {
        r["order_id"]: r
        for r in (await open_stops(conn, [change.courier_id]))[change.courier_id]
        if r["kind"] == "dropoff"
    }
    picked = {d.job_id for d in decision.jobs if d.action == job_rules.JobAction.PICK_UP}
    for order_id in sorted({j["order_id"] for j in mine if j["id"] in picked}):
        drop = drops.get(order_id)
        if drop is not None:  # from the pickup of their order, the resident sees the courier coming
            resident = orders[order_id]["resident_id"]
            change.grants.append(Grant(change.courier_id, drop["id"], resident, {"order_id": order_id}))


async def _deliver(
    change: CourierChange,
    stop: asyncpg.Record,
    next_id: str | None,
    actor: Actor,
    code: str | None,
    position: Position | None,
) -> TransitionError | None:
    """Hand the order over, or return the refusal to raise after commit (a wrong code is counted)."""
    conn, now = change.conn, change.now
    orders, jobs = await lock_jobs(conn, stop["job_ids"])
    order = orders[stop["order_id"]]
    evidence = stop_rules.DoorEvidence(
        code,
        order["delivery_code"],
        order["allow_proximity"],
        latest=_fix(position.latest if position else None),
        latest_flagged=position is not None and position.flagged,
    )
    mine = [core_job(j) for j in jobs if j["route_id"] == stop["route_id"]]
    outcome = stop_rules.drop_off(stop_view(stop), next_id, mine, now, actor, evidence, limits_of(change.svc))
    if isinstance(outcome, stop_rules.WrongCode):
        counted = await conn.fetchval(
            "UPDATE stops SET wrong_codes = $2, locked = $3 WHERE id = $1 AND wrong_codes = $4 RETURNING id",
            outcome.stop_id,
            outcome.wrong_codes,
            outcome.locked,
            outcome.counted_from,
        )
        assert counted is not None  # we hold the courier's row
        return outcome.refusal()
    events, _ = await apply_jobs(conn, orders, outcome.jobs, now)
    change.events += events
    await apply_stop(conn, outcome.stop)
    change.completed(stop)
    change.touched.add(stop["route_id"])
    change.revokes.append((change.courier_id, stop["id"]))  # at delivery, sharing ends at once
    return None


@retried
async def hand_over(svc: Services, live: LiveLocations, shop_id: str, job_id: str) -> dict[str, Any]:
    """The shop confirms the goods left: to the resident (pickup orders), or to the courier. Goods the shop
    had not marked ready are marked ready first."""
    job = await svc.pool.fetchrow(
        "SELECT j.*, o.fulfilment, r.courier_id FROM jobs j JOIN orders o ON o.id = j.order_id "
        "LEFT JOIN routes r ON r.id = j.route_id WHERE j.id = $1",
        job_id,
    )
    if job is None or job["shop_id"] != shop_id:
        raise NotFound(f"no job {job_id}", code="job_not_found")
    if job["fulfilment"] == "pickup":
        return await _collected(svc, shop_id, job_id)
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
        stop, next_id = await _locked_stop(change, stop_id)
        await _pick_up(change, stop, next_id, Actor.SHOP, handed_over=job_id)
        events = await change.finish(None)
        row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        order = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", job["order_id"])
    await change.published(events)
    assert row is not None and order is not None
    return shop_job_json(row, order)


async def _collected(svc: Services, shop_id: str, job_id: str) -> dict[str, Any]:
    """A pickup order: the resident collected the goods, which delivers them."""
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        orders, (job,) = await lock_jobs(conn, [job_id])
        order = orders[job["order_id"]]
        steps = job_rules.hand_over(core_job(job), shop_id, now, job_rules.Fulfilment(order["fulfilment"]))
        new_events, orders = await apply_jobs(conn, orders, steps, now)
        events = await append_events(conn, new_events, now)
        row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    await svc.publish(events)
    assert row is not None
    return shop_job_json(row, orders[row["order_id"]])


async def settle_stops(change: CourierChange, stops: Sequence[Row]) -> None:
    """Open stops some of whose jobs went away (cancelled, or given back: off this route) keep what is left,
    or end (`stop_rules.settle`). The caller holds the courier's row."""
    if not stops:
        return
    rows = await change.conn.fetch(
        "SELECT id, state, route_id, lines FROM jobs WHERE id = ANY ($1::text[])",
        sorted({j for s in stops for j in s["job_ids"]}),
    )
    jobs = {r["id"]: r for r in rows}
    for stop in stops:
        mine = {
            j: JobState(jobs[j]["state"]) for j in stop["job_ids"] if jobs[j]["route_id"] == stop["route_id"]
        }
        settlement = stop_rules.settle(stop["kind"], mine)
        decision = stop_rules.settled(stop["id"], StopState(stop["state"]), settlement, change.now)
        if decision is not None:
            await apply_stop(change.conn, decision)
            change.revokes.append((change.courier_id, stop["id"]))
        elif set(settlement.job_ids) != set(stop["job_ids"]):
            await change.conn.execute(
                "UPDATE stops SET job_ids = $2, items = $3 WHERE id = $1",
                stop["id"],
                list(settlement.job_ids),
                sum(items_of(jobs[j]["lines"]) for j in settlement.job_ids),
            )
        else:
            continue
        change.touched.add(stop["route_id"])


async def courier_open_stops(
    conn: Conn, courier_id: str, job_ids: Iterable[str] | None = None
) -> list[asyncpg.Record]:
    """The courier's open stops on its live routes (those holding any of `job_ids`, if given)."""
    return list(
        await conn.fetch(
            """SELECT s.* FROM stops s JOIN routes r ON r.id = s.route_id
               WHERE r.courier_id = $1 AND r.state = ANY ($2::text[]) AND s.state = ANY ($3::text[])
                 AND ($4::text[] IS NULL OR s.job_ids && $4::text[])
               ORDER BY r.ordinal, s.seq""",
            courier_id,
            list(LIVE_ROUTES),
            list(OPEN_STOPS),
            None if job_ids is None else sorted(job_ids),
        )
    )


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
        change.fix = (start, minutes(now))
        events = await change.finish(start)
    await change.published(events)
