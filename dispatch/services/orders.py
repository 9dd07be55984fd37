"""Placing, reading and cancelling orders. One transaction per decision, events in the same transaction."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from dispatch.core import jobs as job_rules
from dispatch.core.admission import Part
from dispatch.core.matching import (
    CandidateShop,
    OrderTiming,
    RequestedItem,
    SplitPlan,
    Unavailable,
    plan_order,
)
from dispatch.core.stops import LIVE_ROUTES
from dispatch.db import Conn, connection, retried, transaction
from dispatch.errors import Conflict, DispatchError, NotFound, ValidationFailed
from dispatch.ids import new_id
from dispatch.outbox import Event, NewEvent, append_events
from dispatch.services import admission, pages, placing
from dispatch.services.candidates import ShopInfo, load_candidates, nearby_shop_ids
from dispatch.services.context import Services
from dispatch.services.offers import (
    StockKey,
    adjust_stock,
    job_lines,
    job_rows,
    offer_events,
    pinned_pairs,
    stock_of,
    stock_wanted,
)
from dispatch.services.records import (
    core_job,
    order_jobs,
    order_json,
    refresh_order,
    shop_job_json,
)
from dispatch.services.routes import (
    CourierChange,
    courier_open_stops,
    instant,
    lock_courier,
    minutes,
    settle_stops,
)
from geo import haversine_m

RETRIES = 3
OPEN_STATES = ("placed", "accepted", "preparing", "ready", "in_delivery")  # orders still in progress


@dataclass(frozen=True)
class OrderRequest:
    resident_id: str
    lat: float
    lng: float
    fulfilment: str
    slot_start: datetime | None
    slot_end: datetime | None
    note: str | None
    items: tuple[RequestedItem, ...]

    def items_json(self) -> list[dict[str, Any]]:
        return [{"sku": i.sku, "qty": i.qty, "shop_id": i.shop_id} for i in self.items]

    def columns(self, warning: dict[str, Any] | None) -> dict[str, Any]:
        """The order row's columns that come from the request (and the warning it was placed with)."""
        return {
            "fulfilment": self.fulfilment,
            "drop_lat": self.lat,
            "drop_lng": self.lng,
            # As PostgreSQL reads them back, in UTC, so the answer matches a later read of the order.
            "slot_start": None if self.slot_start is None else self.slot_start.astimezone(UTC),
            "slot_end": None if self.slot_end is None else self.slot_end.astimezone(UTC),
            "note": self.note,
            "items": self.items_json(),
            "warning": warning,
        }


def request_hash(body: Any) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@retried
async def place_order(
    svc: Services, req: OrderRequest, idempotency: tuple[str, str] | None
) -> tuple[int, dict[str, Any]]:
    """Returns (status, order). `idempotency` is (key, request hash): a retry returns the first answer."""
    try:
        for _ in range(RETRIES):
            placed = await _place_once(svc, req, idempotency)
            if placed is None:
                continue
            status, body, events = placed
            svc.metrics.orders.labels("placed" if status == 201 else "repeated").inc()
            await svc.publish(events)
            return status, body
        raise Conflict("stock changed while placing the order; try again", code="stock_contention")
    except DispatchError as exc:
        svc.metrics.orders.labels(exc.code).inc()
        raise


async def _place_once(
    svc: Services, req: OrderRequest, idempotency: tuple[str, str] | None
) -> tuple[int, dict[str, Any], list[Event]] | None:
    """Plan the order and write it in one statement (`placing`); None when the stock moved meanwhile.

    With an Idempotency-Key, the answer already given under it is looked for only when this request
    cannot be placed (a retry finds its stock taken by its own first attempt) or when the key is taken
    by the write itself: a first attempt, the common case, costs no extra round trip."""
    now = svc.clock.now()
    # Read before taking a connection: a refresh takes a pool connection of its own.
    fleet = await admission.snapshot(svc, now) if req.fulfilment == "delivery" else None
    async with connection(svc.pool) as conn:
        try:
            plan, shops, _ = await _plan(conn, svc, req, now)
            warning = None
            if req.fulfilment == "delivery":
                warning = await _deliverable(conn, svc, req, plan, shops, now, fleet)
        except DispatchError:
            if idempotency is not None and (previous := await _answered(conn, req.resident_id, idempotency)):
                return 200, previous, []
            raise
        # The order's state and total follow from the plan, so the order row is written once.
        state, total = job_rules.order_summary(
            [
                (
                    job_rules.initial_state(shops[j.shop_id].auto_accept),
                    [(line.qty, line.unit_price_cents) for line in j.lines],
                )
                for j in plan.jobs
            ],
            job_rules.Fulfilment(req.fulfilment),
        )
        order = placing.order_row(
            new_id("ord"), req.resident_id, req.columns(warning), state.value, total, now
        )
        jobs = job_rows(
            order["id"], plan.jobs, shops, pinned_pairs(req.items), now, svc.settings.offer_timeout_s
        )
        body = order_json(order, jobs)
        new_events = [*offer_events(jobs, order), NewEvent(req.resident_id, "order.placed", body)]
        claim = None if idempotency is None else placing.Claim(idempotency[0], idempotency[1], body)
        written = await placing.write_placement(conn, order, jobs, stock_wanted(plan.jobs), new_events, claim)
        if isinstance(written, placing.Short):
            return None
        if isinstance(written, placing.KeyTaken):
            assert idempotency is not None
            previous = await _answered(conn, req.resident_id, idempotency)
            return None if previous is None else (200, previous, [])
    return 201, body, written.events


async def _deliverable(
    conn: Conn,
    svc: Services,
    req: OrderRequest,
    plan: SplitPlan,
    shops: Mapping[str, ShopInfo],
    now: datetime,
    fleet: admission.Snapshot | None,
) -> dict[str, Any] | None:
    """Refuse a job heavier than any courier can carry; then, for an order wanted now, whether a courier can
    collect every part before its shift ends (`core.admission`, weighed against the node's `fleet`
    snapshot): None if so (or if where couriers are cannot be read), else refuse it or return the warning to
    place it with (`DISPATCH_UNDELIVERABLE`), offering pick-up and a later slot when possible."""
    door = (req.lat, req.lng)
    if fleet is not None:
        largest = fleet.largest
    else:
        largest = await conn.fetchval("SELECT max(capacity) FROM couriers WHERE active")
    walkable = all(
        haversine_m(shops[j.shop_id].lat, shops[j.shop_id].lng, *door) <= svc.settings.pickup_walk_m
        for j in plan.jobs
    )
    pickup = [{"fulfilment": "pickup"}] if walkable else []
    for job in plan.jobs:
        items = sum(line.qty for line in job.lines)
        if largest is not None and items > largest:
            raise Conflict(
                f"{items} items from one shop are more than any courier can carry ({largest})",
                code="exceeds_courier_capacity",
                details={
                    "shop_id": job.shop_id,
                    "items": items,
                    "max_items": largest,
                    "alternatives": pickup,
                },
            )
    if req.slot_start is not None or fleet is None:
        return None  # a slot: the couriers then are not known yet; no fleet: Redis away, orders go on
    minute = minutes(now)
    parts = [
        Part((shops[j.shop_id].lat, shops[j.shop_id].lng), door, sum(line.qty for line in j.lines), minute)
        for j in plan.jobs
    ]
    verdict = fleet.capacity.admit(parts, minute)
    if verdict.deliverable:
        return None
    alternatives: list[dict[str, Any]] = list(pickup)
    if verdict.later_slot is not None:
        start, end = (instant(m).isoformat() for m in verdict.later_slot)
        alternatives.append({"timing": {"start": start, "end": end}})
    message = "no courier on shift can collect this order before their shift ends"
    if svc.settings.undeliverable == "refuse":
        raise Conflict(message, code="no_courier_available", details={"alternatives": alternatives})
    return {"code": "no_courier_available", "message": message, "alternatives": alternatives}


async def _plan(
    conn: Conn, svc: Services, req: OrderRequest, now: datetime
) -> tuple[SplitPlan, Mapping[str, ShopInfo], list[CandidateShop]]:
    """The split: the shops near the point that have the items, chosen by the matching rules; or the 422
    that says precisely what is missing."""
    pinned = {i.shop_id for i in req.items if i.shop_id}
    nearby = nearby_shop_ids(svc, req.lat, req.lng, req.fulfilment, keep=pinned)
    if not nearby:
        what = "delivers to" if req.fulfilment == "delivery" else "is within walking distance of"
        raise ValidationFailed(
            f"no shop {what} that point",
            code="outside_delivery_area",
            details=[{"path": ["dropoff"], "message": f"no shop {what} this point", "code": "outside"}],
        )
    candidates, shops = await load_candidates(
        conn,
        svc,
        shop_ids=nearby,
        lat=req.lat,
        lng=req.lng,
        fulfilment=req.fulfilment,
        skus={i.sku for i in req.items},
        at=req.slot_start or now,
    )
    plan = plan_order(req.items, candidates, OrderTiming(now, req.slot_start))
    if isinstance(plan, Unavailable):
        raise await _unavailable(conn, req, plan)
    return plan, shops, candidates


@retried
async def quote_order(svc: Services, req: OrderRequest) -> dict[str, Any]:
    """How the order would be split now, without writing anything (stock is not reserved)."""
    now = svc.clock.now()
    async with connection(svc.pool) as conn:
        plan, _, candidates = await _plan(conn, svc, req, now)
        rows = await conn.fetch(
            "SELECT id, name FROM shops WHERE id = ANY ($1::text[])", [j.shop_id for j in plan.jobs]
        )
    names: dict[str, str] = {r["id"]: r["name"] for r in rows}
    ready_minutes = {c.shop_id: c.ready_and_travel_minutes for c in candidates}
    pins = pinned_pairs(req.items)
    jobs = [
        {
            "shop_id": j.shop_id,
            "shop_name": names[j.shop_id],
            "lines": job_lines(j, pins),
            "subtotal_cents": sum(line.qty * line.unit_price_cents for line in j.lines),
            "ready_and_travel_minutes": round(ready_minutes[j.shop_id], 1),
        }
        for j in plan.jobs
    ]
    return {"jobs": jobs, "total_cents": sum(j["subtotal_cents"] for j in jobs)}


async def _answered(conn: Conn, subject: str, idempotency: tuple[str, str]) -> dict[str, Any] | None:
    """The answer already given under this Idempotency-Key, if any; a 409 if the key was used for
    another request body."""
    key, digest = idempotency
    row = await conn.fetchrow(
        "SELECT request_hash, response FROM idempotency_keys WHERE subject = $1 AND key = $2", subject, key
    )
    if row is None:
        return None
    if row["request_hash"] != digest:
        raise Conflict(
            "this Idempotency-Key was already used with a different request body",
            code="idempotency_key_reused",
        )
    response: dict[str, Any] = row["response"]
    return response


async def _unavailable(conn: Conn, req: OrderRequest, plan: Unavailable) -> ValidationFailed:
    """Say precisely why: unknown SKUs, unknown shops, or not enough stock near that point."""
    skus = sorted({i.sku for i in req.items})
    known_skus = {
        r["sku"]
        for r in await conn.fetch("SELECT DISTINCT sku FROM catalogue_items WHERE sku = ANY($1)", skus)
    }
    pinned = sorted({i.shop_id for i in req.items if i.shop_id})
    known_shops = {r["id"] for r in await conn.fetch("SELECT id FROM shops WHERE id = ANY($1)", pinned)}
    details: list[dict[str, Any]] = []
    for n, item in enumerate(req.items):
        if item.sku not in known_skus:
            details.append(
                {"path": ["items", n, "sku"], "code": "unknown_sku", "message": f"no shop sells {item.sku!r}"}
            )
        elif item.shop_id and item.shop_id not in known_shops:
            details.append(
                {
                    "path": ["items", n, "shop_id"],
                    "code": "unknown_shop",
                    "message": f"no shop {item.shop_id}",
                }
            )
    if details:
        code = details[0]["code"]
        return ValidationFailed("some items name things that do not exist", code=code, details=details)
    for missing in plan.items:
        n = next(
            (k for k, i in enumerate(req.items) if i.sku == missing.sku and i.shop_id == missing.shop_id), 0
        )
        details.append(
            {
                "path": ["items", n],
                "code": "unavailable",
                "sku": missing.sku,
                "shop_id": missing.shop_id,
                "qty_requested": missing.qty_requested,
                "qty_available": missing.qty_coverable,
                "message": f"{missing.sku}: {missing.qty_coverable} of {missing.qty_requested} available "
                "from open shops near that point",
            }
        )
    return ValidationFailed(
        "some items are not available near that point; nothing was ordered",
        code="items_unavailable",
        details=details,
    )


@retried
async def get_order(svc: Services, order_id: str, resident_id: str | None) -> dict[str, Any]:
    """`resident_id` None: an admin. Another resident's order is a 404, revealing nothing."""
    order = await svc.pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    if order is None or (resident_id is not None and order["resident_id"] != resident_id):
        raise NotFound(f"no order {order_id}", code="order_not_found")
    return order_json(order, await order_jobs(svc.pool, order_id))


class _CouriersMoved(Exception):
    """A dispatch round put the order's jobs on a route between reading the couriers and locking the order."""


@retried
async def cancel_order(svc: Services, order_id: str, resident_id: str | None) -> dict[str, Any]:
    """Cancel what is not picked up yet; a courier with the order's stops has its route freed at once."""
    for _ in range(RETRIES):
        try:
            return await _cancel_once(svc, order_id, resident_id)
        except _CouriersMoved:
            continue
    raise Conflict("the order was being dispatched; try again", code="order_busy")


async def _cancel_once(svc: Services, order_id: str, resident_id: str | None) -> dict[str, Any]:
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        # The couriers first: every change to a courier's route holds its row before any order's.
        couriers = await _couriers_of(conn, order_id)
        for courier_id in couriers:
            await lock_courier(conn, courier_id)
        order = await conn.fetchrow("SELECT * FROM orders WHERE id = $1 FOR UPDATE", order_id)
        if order is None or (resident_id is not None and order["resident_id"] != resident_id):
            raise NotFound(f"no order {order_id}", code="order_not_found")
        jobs = await conn.fetch("SELECT * FROM jobs WHERE order_id = $1 ORDER BY id FOR UPDATE", order_id)
        if not set(await _couriers_of(conn, order_id)) <= set(couriers):
            raise _CouriersMoved()
        if order["state"] == "cancelled":
            raise Conflict("the order is already cancelled", code="already_cancelled")
        decisions = []
        for job in jobs:
            if job["state"] in ("picked_up", "delivered"):
                raise Conflict(
                    "part of the order has been picked up; it can no longer be cancelled",
                    code="already_picked_up",
                )
            if job["state"] in ("offered", "accepted", "ready"):
                decisions.append((job, job_rules.cancel(core_job(job), now)))
        if not decisions:
            raise Conflict("nothing left to cancel", code="nothing_to_cancel")
        new_events: list[NewEvent] = []
        released: Counter[StockKey] = Counter()
        for job, decision in decisions:
            row = await conn.fetchrow(
                """UPDATE jobs SET state = $2, closed_at = $3, updated_at = $3
                   WHERE id = $1 AND state = ANY($4) RETURNING *""",
                job["id"],
                decision.to_state.value,
                now,
                [s.value for s in decision.from_states],
            )
            assert row is not None  # we hold the row lock
            released += stock_of(job["shop_id"], job["lines"])
            new_events.append(NewEvent(job["shop_id"], "job.cancelled", shop_job_json(row, order)))
        await adjust_stock(conn, release=released)
        order, jobs = await refresh_order(conn, order, now)
        body = order_json(order, jobs)
        new_events.append(NewEvent(order["resident_id"], "order.updated", body))
        freed = [CourierChange(conn, svc, svc.live, courier_id, now) for courier_id in couriers]
        for change in freed:
            await settle_stops(
                change, await courier_open_stops(conn, change.courier_id, [j["id"] for j in jobs])
            )
            await change.conclude(None)
            new_events += change.events
        events = await append_events(conn, new_events, now)
    await svc.publish(events)
    for change in freed:
        await svc.live.grant(change.grants)
    return body


async def _couriers_of(conn: Conn, order_id: str) -> list[str]:
    """The couriers whose live routes hold the order's jobs."""
    rows = await conn.fetch(
        """SELECT DISTINCT r.courier_id FROM jobs j JOIN routes r ON r.id = j.route_id
           WHERE j.order_id = $1 AND r.state = ANY ($2::text[]) ORDER BY r.courier_id""",
        order_id,
        list(LIVE_ROUTES),
    )
    return [r["courier_id"] for r in rows]


@dataclass(frozen=True)
class OrderFilter:
    """An operator's view of orders: any combination, newest first."""

    state: str | None = None
    shop_id: str | None = None
    courier_id: str | None = None
    resident_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    open: bool = False  # only orders still in progress


@retried
async def find_orders(
    svc: Services, where: OrderFilter, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Orders matching `where`, newest first, a page at a time (the next page's cursor, or None)."""
    after = pages.decode(cursor)
    rows = await svc.pool.fetch(
        """SELECT * FROM orders o
           WHERE ($1::text IS NULL OR o.state = $1)
             AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM jobs j
                                            WHERE j.order_id = o.id AND j.shop_id = $2))
             AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM jobs j JOIN routes r ON r.id = j.route_id
                                            WHERE j.order_id = o.id AND r.courier_id = $3))
             AND ($4::text IS NULL OR o.resident_id = $4)
             AND ($5::timestamptz IS NULL OR o.created_at >= $5)
             AND ($6::timestamptz IS NULL OR o.created_at < $6)
             AND ($7::timestamptz IS NULL OR (o.created_at, o.id) < ($7, $8))
             AND (NOT $10 OR o.state = ANY ($11::text[]))
           ORDER BY o.created_at DESC, o.id DESC LIMIT $9""",
        where.state,
        where.shop_id,
        where.courier_id,
        where.resident_id,
        where.since,
        where.until,
        None if after is None else after.created_at,
        None if after is None else after.id,
        limit + 1,
        where.open,
        list(OPEN_STATES),
    )
    rows, next_cursor = pages.page(list(rows), limit)
    return await _with_jobs(svc, rows), next_cursor


async def _with_jobs(svc: Services, orders: list[asyncpg.Record]) -> list[dict[str, Any]]:
    if not orders:
        return []
    jobs = await svc.pool.fetch(
        "SELECT * FROM jobs WHERE order_id = ANY($1) ORDER BY created_at, id", [o["id"] for o in orders]
    )
    by_order: dict[str, list[asyncpg.Record]] = {}
    for j in jobs:
        by_order.setdefault(j["order_id"], []).append(j)
    return [order_json(o, by_order.get(o["id"], [])) for o in orders]
