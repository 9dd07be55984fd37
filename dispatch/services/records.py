"""Orders and jobs as rows and as the JSON clients see; the order's state refreshed from its jobs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from dispatch.core.jobs import Fulfilment, JobState, order_summary
from dispatch.core.jobs import Job as CoreJob
from dispatch.db import Conn


class Row(Protocol):
    """A row read by asyncpg, or one built before it is written (a dict of every column)."""

    def __getitem__(self, column: str, /) -> Any: ...


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def core_job(row: asyncpg.Record) -> CoreJob:
    deadline = row["deadline_at"] or row["created_at"]
    return CoreJob(row["id"], row["shop_id"], JobState(row["state"]), deadline)


def job_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "order_id": row["order_id"],
        "shop_id": row["shop_id"],
        "state": row["state"],
        "lines": row["lines"],
        "offered_at": _iso(row["offered_at"]),
        "deadline_at": _iso(row["deadline_at"]),
        "accepted_at": _iso(row["accepted_at"]),
        "prep_minutes": row["prep_minutes"],
        "ready_at": _iso(row["ready_at"]),
        "reason": row["reason"],
        "unfulfilled_lines": row["unfulfilled_lines"],
    }


def shop_job_json(job: Row, order: Row) -> dict[str, Any]:
    """What a shop sees of a job: its own lines and the timing, not the resident's address."""
    out = job_json(job)
    out["fulfilment"] = order["fulfilment"]
    out["slot"] = _slot(order)
    out["note"] = order["note"]
    return out


def _slot(order: Row) -> dict[str, str | None] | None:
    if order["slot_start"] is None:
        return None
    return {"start": _iso(order["slot_start"]), "end": _iso(order["slot_end"])}


def order_json(order: Row, jobs: Sequence[Row]) -> dict[str, Any]:
    unfulfilled = [line for j in jobs if j["state"] == "unfulfilled" for line in j["unfulfilled_lines"] or []]
    return {
        "id": order["id"],
        "resident_id": order["resident_id"],
        "state": order["state"],
        "fulfilment": order["fulfilment"],
        "dropoff": {"lat": order["drop_lat"], "lng": order["drop_lng"]},
        "slot": _slot(order),
        "note": order["note"],
        "items": order["items"],
        "total_cents": order["total_cents"],
        "jobs": [job_json(j) for j in jobs],
        "unfulfilled": unfulfilled,
        "created_at": _iso(order["created_at"]),
        "updated_at": _iso(order["updated_at"]),
        "warning": order["warning"],
    }


async def order_jobs(conn: Conn | asyncpg.Pool, order_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM jobs WHERE order_id = $1 ORDER BY created_at, id", order_id)


async def refresh_order(conn: Conn, order: asyncpg.Record, now: datetime) -> tuple[asyncpg.Record, list[Any]]:
    """Recompute the order's state and total from its jobs (caller holds the order's row lock)."""
    jobs = await order_jobs(conn, order["id"])
    return await save_order_state(conn, order, jobs, now), jobs


def order_state_of(jobs: Sequence[Row], fulfilment: str) -> tuple[str, int]:
    """The order's (state, total cents) from its jobs' rows."""
    state, total = order_summary(
        [
            (JobState(j["state"]), [(line["qty"], line["unit_price_cents"]) for line in j["lines"]])
            for j in jobs
        ],
        Fulfilment(fulfilment),
    )
    return state.value, total


async def save_order_state(
    conn: Conn, order: asyncpg.Record, jobs: list[asyncpg.Record], now: datetime
) -> asyncpg.Record:
    """Like refresh_order, for a caller that already holds every job row of the order (locked)."""
    state, total = order_state_of(jobs, order["fulfilment"])
    updated = await conn.fetchrow(
        "UPDATE orders SET state = $2, total_cents = $3, updated_at = $4 WHERE id = $1 RETURNING *",
        order["id"],
        state,
        total,
        now,
    )
    assert updated is not None
    return updated


async def lock_order_of_job(conn: Conn, job_id: str) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    """Lock a job's order, then all its jobs (always in that order, so decisions never deadlock)."""
    order = await conn.fetchrow(
        "SELECT * FROM orders WHERE id = (SELECT order_id FROM jobs WHERE id = $1) FOR UPDATE", job_id
    )
    if order is None:
        return None
    jobs = await conn.fetch(
        "SELECT * FROM jobs WHERE order_id = $1 ORDER BY created_at, id FOR UPDATE", order["id"]
    )
    return order, list(jobs)


def replace_job(jobs: list[asyncpg.Record], row: asyncpg.Record) -> list[asyncpg.Record]:
    return [row if j["id"] == row["id"] else j for j in jobs]
