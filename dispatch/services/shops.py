"""Shops and their catalogues. A shop's zone and its H3 cover are written together (see zones.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from dispatch.db import Conn, connection, retried, transaction, translated_errors
from dispatch.errors import NotFound
from dispatch.ids import new_id
from dispatch.services import zones
from dispatch.services.context import Services
from dispatch.services.hours import hours_of
from geo import haversine_m

SHOP_COLUMNS = (
    "name",
    "lat",
    "lng",
    "opening_hours",
    "prep_minutes",
    "auto_accept",
    "capacity",
    "active",
)
ITEM_COLUMNS = ("name", "price_cents", "stock", "preorder_only", "lead_minutes")


def render_shop(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", *SHOP_COLUMNS, "zone")}
    out["created_at"] = row["created_at"].isoformat()
    out["updated_at"] = row["updated_at"].isoformat()
    return out


@retried
async def create(
    pool: asyncpg.Pool, fields: dict[str, Any], zone: zones.PreparedZone, now: datetime
) -> dict[str, Any]:
    shop_id = new_id("shop")
    cols = [c for c in SHOP_COLUMNS if c in fields]
    placeholders = "".join(f", ${i + 5}" for i in range(len(cols)))
    async with translated_errors(), transaction(pool) as conn:
        row = await conn.fetchrow(
            f"INSERT INTO shops (id, zone, created_at, updated_at{''.join(', ' + c for c in cols)}) "
            f"VALUES ($1, $2, $3, $4{placeholders}) RETURNING *",
            shop_id,
            zone.geojson,
            now,
            now,
            *(fields[c] for c in cols),
        )
        await zones.write_zone(conn, shop_id, zone)
    assert row is not None
    return render_shop(row)


@retried
async def update(pool: asyncpg.Pool, shop_id: str, fields: dict[str, Any], now: datetime) -> dict[str, Any]:
    cols = [c for c in SHOP_COLUMNS if c in fields]
    sets = "".join(f", {c} = ${i + 3}" for i, c in enumerate(cols))
    async with translated_errors():
        row = await pool.fetchrow(
            f"UPDATE shops SET updated_at = $2{sets} WHERE id = $1 RETURNING *",
            shop_id,
            now,
            *(fields[c] for c in cols),
        )
    if row is None:
        raise NotFound(f"no shop with id {shop_id}", code="shop_not_found")
    return render_shop(row)


@retried
async def get(pool: asyncpg.Pool | Conn, shop_id: str) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM shops WHERE id = $1", shop_id)
    if row is None:
        raise NotFound(f"no shop with id {shop_id}", code="shop_not_found")
    return render_shop(row)


@retried
async def upsert_item(pool: asyncpg.Pool, shop_id: str, sku: str, fields: dict[str, Any]) -> dict[str, Any]:
    async with translated_errors(), transaction(pool) as conn:
        if await conn.fetchval("SELECT 1 FROM shops WHERE id = $1 FOR SHARE", shop_id) is None:
            raise NotFound(f"no shop with id {shop_id}", code="shop_not_found")
        row = await conn.fetchrow(
            """INSERT INTO catalogue_items (shop_id, sku, name, price_cents, stock, preorder_only,
                                            lead_minutes)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (shop_id, sku) DO UPDATE SET name = EXCLUDED.name,
                   price_cents = EXCLUDED.price_cents, stock = EXCLUDED.stock,
                   preorder_only = EXCLUDED.preorder_only, lead_minutes = EXCLUDED.lead_minutes
               RETURNING *""",
            shop_id,
            sku,
            *(fields[c] for c in ITEM_COLUMNS),
        )
    assert row is not None
    return dict(row)


@retried
async def catalogue(pool: asyncpg.Pool, shop_id: str) -> list[dict[str, Any]]:
    async with connection(pool) as conn:
        await get(conn, shop_id)
        rows = await conn.fetch("SELECT * FROM catalogue_items WHERE shop_id = $1 ORDER BY sku", shop_id)
    return [dict(r) for r in rows]


@retried
async def list_shops(pool: asyncpg.Pool, limit: int, offset: int) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM shops ORDER BY created_at, id LIMIT $1 OFFSET $2", limit, offset)
    return [render_shop(r) for r in rows]


@retried
async def set_zone(
    pool: asyncpg.Pool, shop_id: str, zone: zones.PreparedZone, now: datetime
) -> dict[str, Any]:
    async with translated_errors(), transaction(pool) as conn:
        found = await conn.fetchval(
            "UPDATE shops SET updated_at = $2 WHERE id = $1 RETURNING id", shop_id, now
        )
        if found is None:
            raise NotFound(f"no shop with id {shop_id}", code="shop_not_found")
        await zones.write_zone(conn, shop_id, zone)
    return {"shop_id": shop_id, "zone": zone.geojson, "cells": zone.cell_count}


@retried
async def get_zone(pool: asyncpg.Pool, shop_id: str) -> dict[str, Any]:
    row = await pool.fetchrow(
        """SELECT s.id, s.zone, c.resolution,
                  cardinality(c.interior) AS interior, cardinality(c.edge) AS edge
           FROM shops s LEFT JOIN shop_covers c ON c.shop_id = s.id WHERE s.id = $1""",
        shop_id,
    )
    if row is None:
        raise NotFound(f"no shop with id {shop_id}", code="shop_not_found")
    return {
        "shop_id": shop_id,
        "zone": row["zone"],
        "resolution": row["resolution"],
        "cells": (row["interior"] or 0) + (row["edge"] or 0),
        "interior_cells": row["interior"] or 0,
        "edge_cells": row["edge"] or 0,
    }


async def open_shops_at(pool: asyncpg.Pool, shop_ids: list[str], at: datetime) -> dict[str, asyncpg.Record]:
    """The active shops among `shop_ids` that are open at `at`, by id."""
    if not shop_ids:
        return {}
    rows = await pool.fetch(
        "SELECT id, name, lat, lng, opening_hours::text AS hours, prep_minutes FROM shops "
        "WHERE id = ANY($1) AND active",
        shop_ids,
    )
    return {r["id"]: r for r in rows if hours_of(r["id"], r["hours"]).is_open(at)}


async def changed(svc: Services, shop_id: str) -> None:
    """This node sees a shop's change before it answers (read your writes); the others hear it on Redis."""
    await svc.zones.reload_shop(shop_id)
    await zones.announce(svc.redis, shop_id)


@retried
async def nearby(svc: Services, lat: float, lng: float, limit: int) -> list[dict[str, Any]]:
    """Open shops that deliver to a point, nearest first, with distance and travel minutes."""
    delivering = svc.zones.index.shops_delivering_to(lat, lng)
    open_rows = await open_shops_at(svc.pool, delivering, svc.clock.now())
    found: list[dict[str, Any]] = []
    for shop_id, row in open_rows.items():
        distance = haversine_m(lat, lng, row["lat"], row["lng"])
        found.append(
            {
                "shop_id": shop_id,
                "name": row["name"],
                "lat": row["lat"],
                "lng": row["lng"],
                "distance_m": round(distance, 1),
                "travel_minutes": round(svc.travel.minutes_for_distance(distance), 1),
                "prep_minutes": row["prep_minutes"],
            }
        )
    found.sort(key=lambda s: (s["distance_m"], s["shop_id"]))
    return found[:limit]


@retried
async def coverage(svc: Services, lat: float, lng: float) -> dict[str, Any]:
    delivering = svc.zones.index.shops_delivering_to(lat, lng)
    open_rows = await open_shops_at(svc.pool, delivering, svc.clock.now())
    return {
        "lat": lat,
        "lng": lng,
        "covered": bool(delivering),
        "shops_delivering": len(delivering),
        "shops_open_now": len(open_rows),
    }
