"""Couriers: shifts (on and off, and planned shifts fired as timers), location pings, and what others may
see of a courier (its status, and for a resident only while it brings their order, its position)."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from dispatch.db import Conn, retried, transaction
from dispatch.errors import Conflict, DispatchError, Forbidden, NotFound, ValidationFailed, field_error
from dispatch.outbox import NewEvent, append_events
from dispatch.services import routes
from dispatch.services.context import Services
from dispatch.services.locations import LiveLocations, Ping
from dispatch.translate import translate

log = logging.getLogger(__name__)

ETA_CHECK_S = 10.0  # a courier's ETAs are re-checked against its pings at most this often (per node)
MAX_SHIFT = timedelta(hours=24)
MAX_PLAN_AHEAD = timedelta(days=30)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def courier_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "capacity": row["capacity"],
        "active": row["active"],
        "on_shift": row["on_shift"],
        "shift_started_at": _iso(row["shift_started_at"]),
        "shift_ends_at": _iso(row["shift_ends_at"]),
    }


def shift_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "courier_id": row["courier_id"],
        "start": row["start_at"].isoformat(),
        "end": row["end_at"].isoformat(),
        "state": row["state"],
    }


# --- shifts --------------------------------------------------------------------------------------------


@retried
async def start_shift(svc: Services, courier_id: str) -> dict[str, Any]:
    """On shift now; a planned shift covering now lends its end (no pickup after it)."""
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        courier = await routes.lock_courier(conn, courier_id)
        if not courier["active"]:
            raise Conflict("this courier is deactivated", code="courier_inactive")
        if courier["on_shift"]:
            raise Conflict("already on shift", code="already_on_shift")
        planned = await conn.fetchrow(
            """UPDATE shifts SET state = 'started'
               WHERE id = (SELECT id FROM shifts WHERE courier_id = $1 AND state = 'planned'
                             AND start_at <= $2 AND end_at > $2 ORDER BY start_at LIMIT 1)
               RETURNING end_at""",
            courier_id,
            now,
        )
        row = await _set_shift(conn, courier_id, True, now, None if planned is None else planned["end_at"])
        event = NewEvent(courier_id, "courier.shift_started", courier_json(row))
        events = await append_events(conn, [event], now)
    await svc.publish(events)
    return courier_json(row)


@retried
async def end_shift(svc: Services, courier_id: str) -> dict[str, Any]:
    """Off shift: no new work. Work not yet picked up is given back at the next dispatch round."""
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        courier = await routes.lock_courier(conn, courier_id)
        if not courier["on_shift"]:
            raise Conflict("not on shift", code="not_on_shift")
        await conn.execute(
            "UPDATE shifts SET state = 'ended' WHERE courier_id = $1 AND state = 'started'", courier_id
        )
        row = await _set_shift(conn, courier_id, False, now, None)
        event = NewEvent(courier_id, "courier.shift_ended", courier_json(row))
        events = await append_events(conn, [event], now)
    await svc.publish(events)
    return courier_json(row)


async def _set_shift(
    conn: Conn, courier_id: str, on: bool, now: datetime, ends_at: datetime | None
) -> asyncpg.Record:
    row = await conn.fetchrow(
        """UPDATE couriers SET on_shift = $2::boolean,
                  shift_started_at = CASE WHEN $2::boolean THEN $3::timestamptz END,
                  shift_ends_at = $4, updated_at = $3
           WHERE id = $1 RETURNING *""",
        courier_id,
        on,
        now,
        ends_at,
    )
    assert row is not None
    return row


@retried
async def plan_shift(svc: Services, courier_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    now = svc.clock.now()
    errors = []
    if end <= start:
        errors.append(field_error(["end"], "the shift ends before it starts", "shift_ends_first"))
    elif end - start > MAX_SHIFT:
        errors.append(field_error(["end"], "a shift lasts at most 24 hours", "shift_too_long"))
    if end <= now:
        errors.append(field_error(["end"], "the shift is over already", "shift_in_past"))
    if start > now + MAX_PLAN_AHEAD:
        errors.append(field_error(["start"], "at most 30 days ahead", "shift_too_far"))
    if errors:
        raise ValidationFailed(f"{len(errors)} field(s) are not valid", details=errors)
    async with transaction(svc.pool) as conn:
        await routes.lock_courier(conn, courier_id)
        overlap = await conn.fetchval(
            """SELECT id FROM shifts WHERE courier_id = $1 AND state IN ('planned', 'started')
                 AND start_at < $3 AND end_at > $2 LIMIT 1""",
            courier_id,
            start,
            end,
        )
        if overlap is not None:
            raise Conflict(
                "the courier has a shift then already", code="shift_overlap", details={"shift": overlap}
            )
        row = await conn.fetchrow(
            """INSERT INTO shifts (courier_id, start_at, end_at, created_at) VALUES ($1, $2, $3, $4)
               RETURNING *""",
            courier_id,
            start,
            end,
            now,
        )
    assert row is not None
    return shift_json(row)


@retried
async def list_shifts(svc: Services, courier_id: str) -> list[dict[str, Any]]:
    rows = await svc.pool.fetch(
        "SELECT * FROM shifts WHERE courier_id = $1 ORDER BY start_at DESC LIMIT 100", courier_id
    )
    return [shift_json(r) for r in rows]


async def fire_due_shifts(svc: Services, limit: int = 100) -> int:
    """Planned shifts whose start or end is due. Each is claimed by a compare-and-set on its state after
    locking the courier (the courier's row comes first in every lock order), so each fires once."""
    fired = 0
    for due_sql, claim_sql in (_STARTS, _ENDS):
        while fired < limit:
            now = svc.clock.now()
            due = await svc.pool.fetchrow(due_sql, now)
            if due is None:
                break
            async with transaction(svc.pool) as conn:
                await routes.lock_courier(conn, due["courier_id"])
                shift = await conn.fetchrow(claim_sql, due["id"], now)
                if shift is None:
                    continue  # another node fired it, or the courier changed it meanwhile
                events = await _shift_fired(conn, shift, now)
            await svc.publish(events)
            fired += 1
    return fired


_STARTS = (
    "SELECT id, courier_id FROM shifts WHERE state = 'planned' AND start_at <= $1 ORDER BY start_at LIMIT 1",
    """UPDATE shifts SET state = CASE WHEN end_at <= $2 THEN 'ended' ELSE 'started' END
       WHERE id = $1 AND state = 'planned' AND start_at <= $2 RETURNING *""",
)
_ENDS = (
    "SELECT id, courier_id FROM shifts WHERE state = 'started' AND end_at <= $1 ORDER BY end_at LIMIT 1",
    "UPDATE shifts SET state = 'ended' WHERE id = $1 AND state = 'started' AND end_at <= $2 RETURNING *",
)


async def _shift_fired(conn: Conn, shift: asyncpg.Record, now: datetime) -> list[Any]:
    courier = await conn.fetchrow("SELECT * FROM couriers WHERE id = $1", shift["courier_id"])
    assert courier is not None
    if shift["state"] == "started":
        if not courier["active"]:
            return []
        row = await _set_shift(conn, courier["id"], True, courier["shift_started_at"] or now, shift["end_at"])
        kind = "courier.shift_started"
    else:
        if not courier["on_shift"]:
            return []
        row = await _set_shift(conn, courier["id"], False, now, None)
        kind = "courier.shift_ended"
    return await append_events(conn, [NewEvent(courier["id"], kind, courier_json(row))], now)


# --- pings and status ------------------------------------------------------------------------------------


async def record_location(
    svc: Services, live: LiveLocations, courier_id: str, lat: float, lng: float, accuracy: float, at: datetime
) -> dict[str, Any]:
    """Store a ping in Redis (flagged if it jumps implausibly) and share it with who may see it. Now and then,
    check whether the courier's ETAs moved by more than a minute, and push them if so."""
    now = svc.clock.now()
    skew = svc.settings.location_skew_s
    if at > now + timedelta(seconds=skew):
        svc.metrics.pings.labels("refused").inc()
        raise ValidationFailed(
            "the location's time is in the future",
            code="location_in_future",
            details=[field_error(["at"], f"more than {skew:g} s ahead of the server's clock", "in_future")],
        )
    now_s = now.timestamp()
    checked = live.eta_checked.get(courier_id)
    want_plan = checked is None or now_s - checked >= ETA_CHECK_S
    if want_plan:
        live.eta_checked[courier_id] = now_s
    try:
        outcome = await live.ping(Ping(courier_id, lat, lng, accuracy, at), want_plan)
    except DispatchError:
        svc.metrics.pings.labels("refused").inc()
        raise
    svc.metrics.pings.labels(outcome.status).inc()
    if (
        outcome.plan
        and outcome.status == "stored"
        and routes.etas_moved(outcome.plan, (lat, lng), now, routes.travel_of(svc), routes.service_times(svc))
    ):
        try:
            await routes.push_etas(svc, live, courier_id, (lat, lng))
        except Exception as exc:
            if translate(exc) is None:
                raise
            # The ping itself is stored; the ETAs are pushed again at the next check.
            live.eta_checked.pop(courier_id, None)
            log.warning("could not push ETAs for %s: %s", courier_id, exc)
    return {"status": outcome.status, "flagged": outcome.status == "flagged"}


@retried
async def status(svc: Services, live: LiveLocations, courier_id: str) -> dict[str, Any]:
    row = await svc.pool.fetchrow("SELECT * FROM couriers WHERE id = $1", courier_id)
    if row is None:
        raise NotFound(f"no courier {courier_id}", code="courier_not_found")
    now = svc.clock.now()
    position = await live.position(courier_id)
    route_ids = await svc.pool.fetch(
        "SELECT id FROM routes WHERE courier_id = $1 AND state IN ('offered', 'active') ORDER BY ordinal",
        courier_id,
    )
    bodies = await routes.routes_json(svc.pool, [r["id"] for r in route_ids])
    return {
        **courier_json(row),
        "position": None if position is None else position.json(now, svc.settings.courier_stale_s),
        "stale": position is None or position.stale(now, svc.settings.courier_stale_s),
        "routes": [bodies[r["id"]] for r in route_ids],
    }


@retried
async def fleet(svc: Services, live: LiveLocations) -> list[dict[str, Any]]:
    """Admin: couriers on shift, where they are, and whether they are stale (not assignable)."""
    rows = await svc.pool.fetch("SELECT * FROM couriers WHERE on_shift ORDER BY id LIMIT 10000")
    positions = await live.positions(r["id"] for r in rows)
    now, stale_s = svc.clock.now(), svc.settings.courier_stale_s
    out = []
    for row in rows:
        position = positions.get(row["id"])
        out.append(
            {
                **courier_json(row),
                "position": None if position is None else position.json(now, stale_s),
                "stale": position is None or position.stale(now, stale_s),
            }
        )
    return out


# --- what a resident may see --------------------------------------------------------------------------


async def _resident_order(svc: Services, order_id: str, resident_id: str | None) -> asyncpg.Record:
    order = await svc.pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    if order is None or (resident_id is not None and order["resident_id"] != resident_id):
        raise NotFound(f"no order {order_id}", code="order_not_found")
    return order


@retried
async def courier_location(
    svc: Services, live: LiveLocations, order_id: str, resident_id: str | None
) -> dict[str, Any]:
    """The position of the courier(s) bringing the order: only between the pickup and the delivery."""
    await _resident_order(svc, order_id, resident_id)
    carriers = await svc.pool.fetch(
        """SELECT DISTINCT r.courier_id FROM stops s JOIN routes r ON r.id = s.route_id
           WHERE s.order_id = $1 AND s.kind = 'dropoff' AND s.state IN ('pending', 'arrived')
             AND r.state = 'active'
             AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = ANY (s.job_ids) AND j.state = 'picked_up')
           ORDER BY r.courier_id""",
        order_id,
    )
    if not carriers:
        raise Forbidden(
            "the courier's position is shared only from the pickup of your order until its delivery",
            code="location_not_shared",
        )
    now, stale_s = svc.clock.now(), svc.settings.courier_stale_s
    positions = await live.positions(r["courier_id"] for r in carriers)
    shown = []
    for r in carriers:
        position = positions.get(r["courier_id"])
        fix = None if position is None else position.trusted
        shown.append(
            None
            if fix is None
            else {
                "lat": fix.lat,
                "lng": fix.lng,
                "accuracy": fix.accuracy,
                "at": datetime.fromtimestamp(fix.at, now.tzinfo).isoformat(),
                "stale": now.timestamp() - fix.at > stale_s,
            }
        )
    return {"order_id": order_id, "couriers": shown}


@retried
async def delivery(svc: Services, order_id: str, resident_id: str | None) -> dict[str, Any]:
    """The resident's view of the delivery: the code to give the courier (made on first asking if the first
    dispatch has not made it yet), whether the courier at the door is proof enough, the drop-offs' ETAs."""
    order = await _resident_order(svc, order_id, resident_id)
    if order["fulfilment"] == "delivery" and order["delivery_code"] is None:
        coded = await svc.pool.fetchrow(
            "UPDATE orders SET delivery_code = COALESCE(delivery_code, $2) WHERE id = $1 RETURNING *",
            order_id,
            f"{secrets.randbelow(10_000):04d}",
        )
        assert coded is not None
        order = coded
    stops = await svc.pool.fetch(
        """SELECT s.* FROM stops s JOIN routes r ON r.id = s.route_id
           WHERE s.order_id = $1 AND s.kind = 'dropoff' AND s.state <> 'cancelled'
             AND r.state IN ('active', 'completed')
           ORDER BY s.completed_at NULLS LAST, s.id""",
        order_id,
    )
    return {
        "order_id": order_id,
        "state": order["state"],
        "fulfilment": order["fulfilment"],
        "code": order["delivery_code"],
        "allow_proximity": order["allow_proximity"],
        "drop_offs": [
            {
                "stop_id": s["id"],
                "state": s["state"],
                "arrival": _iso(s["eta_arrival"]),
                "eta": _iso(s["eta_service"]),
                "completed_at": _iso(s["completed_at"]),
                "proof": s["proof"],
            }
            for s in stops
        ],
    }


@retried
async def set_delivery_options(
    svc: Services, order_id: str, resident_id: str | None, allow_proximity: bool
) -> dict[str, Any]:
    await _resident_order(svc, order_id, resident_id)
    await svc.pool.execute("UPDATE orders SET allow_proximity = $2 WHERE id = $1", order_id, allow_proximity)
    return await delivery(svc, order_id, resident_id)
