"""A shop answering its job (accept, reject, ready), offer deadlines, and re-offers to the next shop.

Every decision locks the order row, then the job row (always in that order, so two decisions on one
order never deadlock), asks the pure core, applies the answer with a compare-and-set update, and writes
its events, all in one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from dispatch.core import jobs as rules
from dispatch.core.errors import CoreValidationError, TransitionError
from dispatch.core.matching import OrderTiming, RequestedItem, rematch
from dispatch.db import Conn, retried, transaction
from dispatch.errors import Conflict, NotFound, ValidationFailed, field_error
from dispatch.outbox import Event, NewEvent, append_events
from dispatch.services import changes
from dispatch.services.candidates import load_candidates, nearby_shop_ids
from dispatch.services.context import Services
from dispatch.services.offers import StockRace, adjust_stock, create_jobs, stock_of
from dispatch.services.records import (
    Row,
    core_job,
    job_json,
    lock_order_of_job,
    order_json,
    order_state_of,
    replace_job,
    save_order_state,
    shop_job_json,
)

RETRIES = 3


def _translate(exc: TransitionError | CoreValidationError) -> Exception:
    if isinstance(exc, TransitionError):
        return Conflict(exc.message, code=exc.code)
    return ValidationFailed(exc.message, details=[field_error(list(exc.path), exc.message)])


async def _lock(conn: Conn, job_id: str) -> tuple[asyncpg.Record, asyncpg.Record, list[asyncpg.Record]]:
    """(order, job, all the order's jobs), locked order first."""
    locked = await lock_order_of_job(conn, job_id)
    if locked is None:
        raise NotFound(f"no job {job_id}", code="job_not_found")
    order, jobs = locked
    job = next(j for j in jobs if j["id"] == job_id)
    return order, job, jobs


async def _apply(conn: Conn, decision: rules.JobTransition, **columns: Any) -> asyncpg.Record:
    """The compare-and-set update of a decided transition (we hold the lock, so it must match)."""
    sets = "".join(f", {name} = ${n + 6}" for n, name in enumerate(columns))
    row = await conn.fetchrow(
        f"""UPDATE jobs SET state = $2, updated_at = $3{sets}
            WHERE id = $1 AND state = ANY($4)
              AND ($5::timestamptz IS NULL OR deadline_at > $5)
            RETURNING *""",
        decision.job_id,
        decision.to_state.value,
        decision.at,
        [s.value for s in decision.from_states],
        decision.deadline_after,
        *columns.values(),
    )
    if row is None:
        raise Conflict("the job changed meanwhile; nothing was done", code="job_changed")
    return row


@retried
async def accept(svc: Services, job_id: str, shop_id: str, prep_minutes: int) -> dict[str, Any]:
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        order, job, jobs = await _lock(conn, job_id)
        try:
            decision = rules.accept(core_job(job), shop_id, now, prep_minutes)
        except (TransitionError, CoreValidationError) as exc:
            raise _translate(exc) from None
        changed, events = await _job_changed(
            conn,
            order,
            jobs,
            decision,
            "job.accepted",
            now,
            accepted_at=now,
            prep_minutes=decision.prep_minutes,
            ready_at=decision.ready_by,
        )
    _answered(svc, changed, "accepted", now)
    await svc.publish(events)
    return job_json(changed)


@retried
async def mark_ready(svc: Services, job_id: str, shop_id: str) -> dict[str, Any]:
    now = svc.clock.now()
    async with transaction(svc.pool) as conn:
        order, job, jobs = await _lock(conn, job_id)
        try:
            decision = rules.mark_ready(core_job(job), shop_id, now)
        except TransitionError as exc:
            raise _translate(exc) from None
        changed, events = await _job_changed(conn, order, jobs, decision, "job.ready", now, ready_at=now)
    await svc.publish(events)
    return job_json(changed)


@retried
async def reject(svc: Services, job_id: str, shop_id: str, reason: str) -> dict[str, Any]:
    for _ in range(RETRIES):
        now = svc.clock.now()
        try:
            async with transaction(svc.pool) as conn:
                order, job, jobs = await _lock(conn, job_id)
                try:
                    decision = rules.reject(core_job(job), shop_id, now, reason)
                except (TransitionError, CoreValidationError) as exc:
                    raise _translate(exc) from None
                job = await _apply(conn, decision, reason=decision.reason, closed_at=now)
                refused = job
                job, events = await _reoffer(conn, svc, order, job, replace_job(jobs, job), now)
        except StockRace:
            continue
        _answered(svc, refused, "rejected", now)
        await svc.publish(events)
        return job_json(job)
    raise Conflict("stock changed while re-offering; try again", code="stock_contention")


async def expire_due(svc: Services, limit: int = 100) -> int:
    """Fire due offer deadlines, each once however many nodes run this: a due job is claimed with its
    order by FOR UPDATE SKIP LOCKED, so no two nodes (and no accept in flight) touch the same one."""
    fired = 0
    while fired < limit:
        now = svc.clock.now()
        try:
            async with transaction(svc.pool) as conn:
                claimed = await conn.fetchrow(
                    """SELECT j.id FROM jobs j JOIN orders o ON o.id = j.order_id
                       WHERE j.state = 'offered' AND j.deadline_at <= $1
                       ORDER BY j.deadline_at LIMIT 1
                       FOR UPDATE OF j, o SKIP LOCKED""",
                    now,
                )
                if claimed is None:
                    return fired
                order, job, jobs = await _lock(conn, claimed["id"])
                decision = rules.expire(core_job(job), now)
                job = await _apply(conn, decision, closed_at=now)
                _, events = await _reoffer(conn, svc, order, job, replace_job(jobs, job), now)
        except StockRace:
            continue
        _answered(svc, job, "expired", now)
        await svc.publish(events)
        fired += 1
    return fired


def _answered(svc: Services, job: Row, answer: str, now: datetime) -> None:
    """How long the shop took (an expired offer: its whole deadline), for /metrics."""
    if job["offered_at"] is not None:
        svc.metrics.offer_answers.labels(answer).observe((now - job["offered_at"]).total_seconds())


async def _reoffer(
    conn: Conn,
    svc: Services,
    order: asyncpg.Record,
    job: asyncpg.Record,
    jobs: list[asyncpg.Record],
    now: datetime,
) -> tuple[asyncpg.Record, list[Event]]:
    """The refused job's stock goes back; its lines go to the next best shops not yet in this order.

    Shops already holding a job of this order (any state, refusers included) are skipped: a shop refuses
    an order once, and an order has at most one job per shop. Lines no shop can take make the refused job
    `unfulfilled`, and the resident is told which items will not come."""
    shop_event = "job.rejected" if job["state"] == "rejected" else "job.expired"
    # Given back in the same statement that reserves the next shops' stock (never before the match: the
    # refuser is excluded from it, so its stock cannot change the outcome).
    released = stock_of(job["shop_id"], job["lines"])
    involved = {j["shop_id"] for j in jobs}
    lines = [
        RequestedItem(line["sku"], line["qty"], job["shop_id"] if line.get("pinned") else None)
        for line in job["lines"]
    ]
    nearby = [
        s
        for s in nearby_shop_ids(svc, order["drop_lat"], order["drop_lng"], order["fulfilment"])
        if s not in involved
    ]
    candidates, shops = await load_candidates(
        conn,
        svc,
        shop_ids=nearby,
        lat=order["drop_lat"],
        lng=order["drop_lng"],
        fulfilment=order["fulfilment"],
        skus={line.sku for line in lines},
        at=order["slot_start"] or now,
    )
    outcome = rematch(lines, candidates, OrderTiming(order["created_at"], order["slot_start"]), involved)
    new_events: list[NewEvent] = [NewEvent(job["shop_id"], shop_event, shop_job_json(job, order))]
    if outcome.jobs:
        new_jobs, offer_events = await create_jobs(
            conn, order, outcome.jobs, shops, set(), now, svc.settings.offer_timeout_s, release=released
        )
        new_events += offer_events
        jobs = jobs + new_jobs
    else:
        await adjust_stock(conn, release=released)
    if outcome.unplaced:
        decision = rules.mark_unfulfilled(core_job(job), now)
        unplaced = [{"sku": u.sku, "qty": u.qty_requested, "shop_id": u.shop_id} for u in outcome.unplaced]
        job = await _apply(conn, decision, unfulfilled_lines=unplaced)
        jobs = replace_job(jobs, job)
        new_events.append(
            NewEvent(
                order["resident_id"], "order.items_unfulfilled", {"order_id": order["id"], "items": unplaced}
            )
        )
    order = await save_order_state(conn, order, jobs, now)
    new_events.append(NewEvent(order["resident_id"], "order.updated", order_json(order, jobs)))
    return job, await append_events(conn, new_events, now)


async def _job_changed(
    conn: Conn,
    order: asyncpg.Record,
    jobs: list[asyncpg.Record],
    decision: rules.JobTransition,
    shop_event: str,
    now: datetime,
    **columns: Any,
) -> tuple[dict[str, Any], list[Event]]:
    """Apply a decided transition, the order's new state and their events in one statement (`changes`):
    the job's new row is known before it is written, since we hold its lock. Returns that row."""
    job = next(j for j in jobs if j["id"] == decision.job_id)
    changed = changes.row_after(job, state=decision.to_state.value, updated_at=decision.at, **columns)
    after: list[Row] = [changed if j["id"] == changed["id"] else j for j in jobs]
    state, total = order_state_of(after, order["fulfilment"])
    order_after = changes.row_after(order, state=state, total_cents=total, updated_at=now)
    body = order_json(order_after, after)
    resident = order["resident_id"]
    new_events = [
        NewEvent(changed["shop_id"], shop_event, shop_job_json(changed, order_after)),
        NewEvent(resident, "order.updated", body),
    ]
    if order["fulfilment"] == "pickup" and state == "ready":
        new_events.append(NewEvent(resident, "order.ready_for_pickup", body))
    events = await changes.apply_transition(conn, decision, columns, order_after, new_events, now)
    if events is None:
        raise Conflict("the job changed meanwhile; nothing was done", code="job_changed")
    return changed, events


@retried
async def get_job(svc: Services, job_id: str, shop_id: str | None) -> dict[str, Any]:
    job = await svc.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    if job is None or (shop_id is not None and job["shop_id"] != shop_id):
        raise NotFound(f"no job {job_id}", code="job_not_found")
    order = await svc.pool.fetchrow("SELECT * FROM orders WHERE id = $1", job["order_id"])
    assert order is not None
    return shop_job_json(job, order)


@retried
async def shop_jobs(svc: Services, shop_id: str, state: str | None, limit: int) -> list[dict[str, Any]]:
    rows = await svc.pool.fetch(
        """SELECT j.*, o.fulfilment, o.slot_start, o.slot_end, o.note FROM jobs j
           JOIN orders o ON o.id = j.order_id
           WHERE j.shop_id = $1 AND ($2::text IS NULL OR j.state = $2)
           ORDER BY j.created_at DESC, j.id LIMIT $3""",
        shop_id,
        state,
        limit,
    )
    return [shop_job_json(r, r) for r in rows]
