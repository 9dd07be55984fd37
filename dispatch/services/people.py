"""Residents and couriers: created and updated by admins, read by themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from dispatch.db import retried, translated_errors
from dispatch.errors import NotFound
from dispatch.ids import new_id
from dispatch.services import pages

_TABLES = {"resident": ("residents", "res"), "courier": ("couriers", "cou")}
_COLUMNS = {
    "resident": ("name", "phone"),
    "courier": ("name", "phone", "capacity", "active"),
}
# What a record shows: the tables also hold working state (a courier's current leg) that is nobody's API.
_SHOWN = {
    "resident": ("id", "name", "phone", "created_at", "updated_at"),
    "courier": (
        "id", "name", "phone", "capacity", "active", "on_shift", "shift_started_at", "shift_ends_at",
        "created_at", "updated_at",
    ),
}  # fmt: skip


def _render(kind: str, row: asyncpg.Record) -> dict[str, Any]:
    out = {key: row[key] for key in _SHOWN[kind]}
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    return out


@retried
async def create(pool: asyncpg.Pool, kind: str, fields: dict[str, Any], now: datetime) -> dict[str, Any]:
    table, prefix = _TABLES[kind]
    cols = [c for c in _COLUMNS[kind] if c in fields]
    values = [fields[c] for c in cols]
    placeholders = ", ".join(f"${i + 4}" for i in range(len(cols)))
    sql = (
        f"INSERT INTO {table} (id, created_at, updated_at{''.join(', ' + c for c in cols)}) "
        f"VALUES ($1, $2, $3{', ' + placeholders if cols else ''}) RETURNING *"
    )
    async with translated_errors():
        row = await pool.fetchrow(sql, new_id(prefix), now, now, *values)
    assert row is not None
    return _render(kind, row)


@retried
async def update(
    pool: asyncpg.Pool, kind: str, entity_id: str, fields: dict[str, Any], now: datetime
) -> dict[str, Any]:
    table, _ = _TABLES[kind]
    cols = [c for c in _COLUMNS[kind] if c in fields]
    sets = "".join(f", {c} = ${i + 3}" for i, c in enumerate(cols))
    sql = f"UPDATE {table} SET updated_at = $2{sets} WHERE id = $1 RETURNING *"
    async with translated_errors():
        row = await pool.fetchrow(sql, entity_id, now, *(fields[c] for c in cols))
    if row is None:
        raise NotFound(f"no {kind} with id {entity_id}", code=f"{kind}_not_found")
    return _render(kind, row)


@retried
async def get(pool: asyncpg.Pool, kind: str, entity_id: str) -> dict[str, Any]:
    table, _ = _TABLES[kind]
    row = await pool.fetchrow(f"SELECT * FROM {table} WHERE id = $1", entity_id)
    if row is None:
        raise NotFound(f"no {kind} with id {entity_id}", code=f"{kind}_not_found")
    return _render(kind, row)


@retried
async def page_of(
    pool: asyncpg.Pool, kind: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Couriers or residents, oldest first, a page at a time (the next page's cursor, or None)."""
    table, _ = _TABLES[kind]
    after = pages.decode(cursor)
    rows = await pool.fetch(
        f"""SELECT * FROM {table}
            WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2))
            ORDER BY created_at, id LIMIT $3""",
        None if after is None else after.created_at,
        None if after is None else after.id,
        limit + 1,
    )
    found, next_cursor = pages.page(list(rows), limit)
    return [_render(kind, r) for r in found], next_cursor
