"""PostgreSQL access: the pool, and translation of asyncpg errors into our own at the boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from dispatch.errors import Conflict, ServiceUnavailable, ValidationFailed

Pool = asyncpg.Pool
# A plain connection or one borrowed from a pool: both run queries the same way.
Conn = asyncpg.Connection | PoolConnectionProxy


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def connect(url: str) -> asyncpg.Connection:
    """A single connection with the same codecs as the pool's (scripts, benchmarks, the CLI)."""
    conn = await asyncpg.connect(url)
    await _init_connection(conn)
    return conn


async def create_pool(url: str, min_size: int, max_size: int) -> Pool:
    try:
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """Turn constraint violations that reach the edge into 409/422 instead of 500s."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise Conflict("that already exists", code="already_exists", details=_detail(exc)) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise ValidationFailed(
            "refers to something that does not exist",
            code="unknown_reference",
            details=_detail(exc),
        ) from exc
    except asyncpg.CheckViolationError as exc:
        raise ValidationFailed("a value is out of its allowed range", details=_detail(exc)) from exc
    except (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError) as exc:
        raise ServiceUnavailable(f"PostgreSQL is unavailable: {exc}") from exc


def _detail(exc: asyncpg.PostgresError) -> dict[str, Any]:
    return {"constraint": getattr(exc, "constraint_name", None)}
