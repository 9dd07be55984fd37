"""Turning planned jobs into offers: reserve stock atomically, insert the jobs, and their events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from dispatch.core.jobs import JobState, initial_state
from dispatch.core.matching import PlannedJob
from dispatch.db import Conn
from dispatch.ids import new_id
from dispatch.outbox import NewEvent
from dispatch.services.candidates import ShopInfo
from dispatch.services.records import Row, shop_job_json


class StockRace(Exception):
    """Stock changed between reading it and reserving it; the transaction is retried."""


StockKey = tuple[str, str]  # (shop id, sku)


def stock_of(shop_id: str, lines: Iterable[Mapping[str, Any]]) -> Counter[StockKey]:
    """The quantities a job's lines hold of its shop's stock."""
    held: Counter[StockKey] = Counter()
    for line in lines:
        held[(shop_id, line["sku"])] += int(line["qty"])
    return held


async def adjust_stock(
    conn: Conn, *, reserve: Mapping[StockKey, int] = {}, release: Mapping[StockKey, int] = {}
) -> None:
    """Give back `release` and take `reserve` in one statement, every row locked in (shop, sku) order first
    (the subquery's ORDER BY ... FOR UPDATE), so transactions touching the same lines in any order never
    deadlock. Raises StockRace when a reservation lacks stock; the caller's transaction is rolled back."""
    delta: Counter[StockKey] = Counter()
    for key, qty in release.items():
        delta[key] += qty
    for key, qty in reserve.items():
        delta[key] -= qty
    keys = sorted(k for k, v in delta.items() if v)
    if not keys:
        return
    changed = await conn.fetch(
        """UPDATE catalogue_items c SET stock = c.stock + l.delta
           FROM (SELECT i.shop_id, i.sku, t.delta
                 FROM catalogue_items i
                 JOIN unnest($1::text[], $2::text[], $3::int[]) AS t(shop_id, sku, delta)
                   ON i.shop_id = t.shop_id AND i.sku = t.sku
                 ORDER BY i.shop_id, i.sku
                 FOR UPDATE OF i) AS l
           WHERE c.shop_id = l.shop_id AND c.sku = l.sku AND c.stock + l.delta >= 0
           RETURNING c.shop_id, c.sku""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [delta[k] for k in keys],
    )
    done = {(r["shop_id"], r["sku"]) for r in changed}
    # A line released to an item since deleted from the catalogue has nowhere to go: that is fine.
    if any(delta[k] < 0 and k not in done for k in keys):
        raise StockRace()


def stock_wanted(planned: Iterable[PlannedJob]) -> Counter[StockKey]:
    """The stock planned jobs take, by (shop, sku)."""
    wanted: Counter[StockKey] = Counter()
    for job in planned:
        for line in job.lines:
            wanted[(job.shop_id, line.sku)] += line.qty
    return wanted


def job_lines(job: PlannedJob, pinned: Collection[tuple[str, str]]) -> list[dict[str, Any]]:
    """A planned job's lines as a job row and the API show them."""
    return [
        {
            "sku": line.sku,
            "qty": line.qty,
            "unit_price_cents": line.unit_price_cents,
            "pinned": (job.shop_id, line.sku) in pinned,
        }
        for line in job.lines
    ]


def job_rows(
    order_id: str,
    planned: Sequence[PlannedJob],
    shops: Mapping[str, ShopInfo],
    pinned: Collection[tuple[str, str]],
    now: datetime,
    offer_timeout_s: float,
) -> list[dict[str, Any]]:
    """One job per planned shop, in its initial state: offered with a deadline, or accepted at once by a
    shop that auto-accepts. In the order a read of the order's jobs gives (created together: by id)."""
    at = now.astimezone(UTC)
    rows: list[dict[str, Any]] = []
    for job in planned:
        shop = shops[job.shop_id]
        state = initial_state(shop.auto_accept)
        accepted = state == JobState.ACCEPTED
        rows.append(
            {
                "id": new_id("job"),
                "order_id": order_id,
                "shop_id": job.shop_id,
                "state": state.value,
                "lines": job_lines(job, pinned),
                "offered_at": at,
                "deadline_at": None if accepted else at + timedelta(seconds=offer_timeout_s),
                "accepted_at": at if accepted else None,
                "prep_minutes": shop.prep_minutes if accepted else None,
                "ready_at": at + timedelta(minutes=shop.prep_minutes) if accepted else None,
                "created_at": at,
                "updated_at": at,
                "reason": None,
                "unfulfilled_lines": None,
                "closed_at": None,
                "route_id": None,
            }
        )
    return sorted(rows, key=lambda row: str(row["id"]))


def new_jobs_from(first: int) -> str:
    """A FROM item of new job rows, parameters `$first` to `$first+7` being `job_arrays(...)`."""
    p = [f"${first + n}" for n in range(8)]
    return (
        f"unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::text[], {p[3]}::text[], {p[4]}::timestamptz[], "
        f"{p[5]}::timestamptz[], {p[6]}::int[], {p[7]}::timestamptz[]) "
        "AS t(id, shop_id, state, lines, deadline_at, accepted_at, prep, ready_at)"
    )


def job_arrays(jobs: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The columns of new job rows (`job_rows`) as the arrays `new_jobs_from` unnests."""
    return [
        [j["id"] for j in jobs],
        [j["shop_id"] for j in jobs],
        [j["state"] for j in jobs],
        # jsonb in an array travels as text: asyncpg's array codec does not use the jsonb codec.
        [orjson.dumps(j["lines"]).decode() for j in jobs],
        [j["deadline_at"] for j in jobs],
        [j["accepted_at"] for j in jobs],
        [j["prep_minutes"] for j in jobs],
        [j["ready_at"] for j in jobs],
    ]


async def create_jobs(
    conn: Conn,
    order: Row,
    planned: Sequence[PlannedJob],
    shops: Mapping[str, ShopInfo],
    pinned: Collection[tuple[str, str]],
    now: datetime,
    offer_timeout_s: float,
    release: Mapping[StockKey, int] = {},
) -> tuple[list[asyncpg.Record], list[NewEvent]]:
    """Reserve stock for `planned` (giving back `release` in the same locked statement) and insert one job
    per shop (`job_rows`). Raises StockRace when the stock moved (the caller retries the transaction)."""
    await adjust_stock(conn, reserve=stock_wanted(planned), release=release)
    new = job_rows(order["id"], planned, shops, pinned, now, offer_timeout_s)
    rows = await conn.fetch(
        f"""INSERT INTO jobs (id, order_id, shop_id, state, lines, offered_at, deadline_at, accepted_at,
                              prep_minutes, ready_at, created_at, updated_at)
            SELECT t.id, $1, t.shop_id, t.state, t.lines::jsonb, $2, t.deadline_at, t.accepted_at, t.prep,
                   t.ready_at, $2, $2
            FROM {new_jobs_from(3)}
            RETURNING *""",
        order["id"],
        now,
        *job_arrays(new),
    )
    return list(rows), offer_events(rows, order)


def offer_events(jobs: Iterable[Row], order: Row) -> list[NewEvent]:
    """Each new job's event to its shop: offered, or accepted already."""
    return [
        NewEvent(
            j["shop_id"],
            "job.offered" if j["state"] == "offered" else "job.accepted",
            shop_job_json(j, order),
        )
        for j in jobs
    ]


def pinned_pairs(items: Sequence[Any]) -> set[tuple[str, str]]:
    """(shop, sku) pairs the resident picked from a shop's catalogue."""
    return {(i.shop_id, i.sku) for i in items if getattr(i, "shop_id", None)}
