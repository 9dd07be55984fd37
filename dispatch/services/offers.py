"""Turning planned jobs into offers: reserve stock atomically, insert the jobs, and their events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from dispatch.core.matching import PlannedJob
from dispatch.db import Conn
from dispatch.ids import new_id
from dispatch.outbox import NewEvent
from dispatch.services.candidates import ShopInfo
from dispatch.services.records import shop_job_json


class StockRace(Exception):
    """Stock changed between reading it and reserving it; the transaction is retried."""


async def reserve_stock(conn: Conn, planned: Sequence[PlannedJob]) -> None:
    wanted: Counter[tuple[str, str]] = Counter()
    for job in planned:
        for line in job.lines:
            wanted[(job.shop_id, line.sku)] += line.qty
    keys = list(wanted)
    reserved = await conn.fetch(
        """UPDATE catalogue_items c SET stock = c.stock - t.qty
           FROM unnest($1::text[], $2::text[], $3::int[]) AS t(shop_id, sku, qty)
           WHERE c.shop_id = t.shop_id AND c.sku = t.sku AND c.stock >= t.qty
           RETURNING c.shop_id""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [wanted[k] for k in keys],
    )
    if len(reserved) != len(keys):
        raise StockRace()


async def create_jobs(
    conn: Conn,
    order: asyncpg.Record,
    planned: Sequence[PlannedJob],
    shops: dict[str, ShopInfo],
    pinned: Collection[tuple[str, str]],
    now: datetime,
    offer_timeout_s: float,
) -> tuple[list[asyncpg.Record], list[NewEvent]]:
    """Reserve stock for `planned` and insert one job per shop: offered, or accepted at once for shops
    that auto-accept. Raises StockRace when the stock moved (the caller retries the transaction)."""
    await reserve_stock(conn, planned)
    ids: list[str] = []
    shop_ids: list[str] = []
    states: list[str] = []
    lines: list[str] = []
    deadlines: list[datetime | None] = []
    accepted: list[datetime | None] = []
    preps: list[int | None] = []
    ready: list[datetime | None] = []
    for job in planned:
        shop = shops[job.shop_id]
        ids.append(new_id("job"))
        shop_ids.append(job.shop_id)
        lines.append(
            orjson.dumps(
                [
                    {
                        "sku": line.sku,
                        "qty": line.qty,
                        "unit_price_cents": line.unit_price_cents,
                        "pinned": (job.shop_id, line.sku) in pinned,
                    }
                    for line in job.lines
                ]
            ).decode()
        )
        if shop.auto_accept:
            states.append("accepted")
            deadlines.append(None)
            accepted.append(now)
            preps.append(shop.prep_minutes)
            ready.append(now + timedelta(minutes=shop.prep_minutes))
        else:
            states.append("offered")
            deadlines.append(now + timedelta(seconds=offer_timeout_s))
            accepted.append(None)
            preps.append(None)
            ready.append(None)
    rows = await conn.fetch(
        """INSERT INTO jobs (id, order_id, shop_id, state, lines, offered_at, deadline_at, accepted_at,
                             prep_minutes, ready_at, created_at, updated_at)
           SELECT id, $2, shop_id, state, lines::jsonb, $3, deadline_at, accepted_at, prep, ready_at, $3, $3
           FROM unnest($1::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                       $8::timestamptz[], $9::int[], $10::timestamptz[])
                AS t(id, shop_id, state, lines, deadline_at, accepted_at, prep, ready_at)
           RETURNING *""",
        ids,
        order["id"],
        now,
        shop_ids,
        states,
        lines,
        deadlines,
        accepted,
        preps,
        ready,
    )
    events = [
        NewEvent(
            row["shop_id"],
            "job.offered" if row["state"] == "offered" else "job.accepted",
            shop_job_json(row, order),
        )
        for row in rows
    ]
    return list(rows), events


def pinned_pairs(items: Sequence[Any]) -> set[tuple[str, str]]:
    """(shop, sku) pairs the resident picked from a shop's catalogue."""
    return {(i.shop_id, i.sku) for i in items if getattr(i, "shop_id", None)}
