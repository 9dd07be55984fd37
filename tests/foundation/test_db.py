"""The transaction helper and the retry of decisions that did not happen, against real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from dispatch.db import OutcomeUnknown, create_pool, retried, transaction
from dispatch.errors import ServiceUnavailable


@pytest.fixture
async def pool(db: asyncpg.Connection, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await db.execute("CREATE TABLE IF NOT EXISTS tx_probe (id int PRIMARY KEY, n int NOT NULL)")
    await db.execute("TRUNCATE tx_probe")
    await db.execute("INSERT INTO tx_probe VALUES (1, 0), (2, 0)")
    p = await create_pool(database_url, 1, 4)
    try:
        yield p
    finally:
        await p.close()
        await db.execute("DROP TABLE tx_probe")


async def test_a_deadlock_victim_is_run_again_and_both_decisions_happen(pool: asyncpg.Pool) -> None:
    both_hold_one = asyncio.Barrier(2)
    attempts = {"a": 0, "b": 0}

    @retried
    async def bump(name: str, first: int, second: int) -> None:
        attempts[name] += 1
        async with transaction(pool) as conn:
            await conn.execute("UPDATE tx_probe SET n = n + 1 WHERE id = $1", first)
            if attempts[name] == 1:
                await both_hold_one.wait()  # each holds one row and now wants the other's: a deadlock
            await conn.execute("UPDATE tx_probe SET n = n + 1 WHERE id = $1", second)

    await asyncio.gather(bump("a", 1, 2), bump("b", 2, 1))
    assert sorted(attempts.values()) == [1, 2]  # PostgreSQL chose a victim; it ran again
    rows = await pool.fetch("SELECT n FROM tx_probe ORDER BY id")
    assert [r["n"] for r in rows] == [2, 2]  # both decisions, once each


async def test_a_link_lost_before_commit_is_retried(pool: asyncpg.Pool) -> None:
    attempts = 0

    @retried
    async def bump() -> None:
        nonlocal attempts
        attempts += 1
        async with transaction(pool) as conn:
            await conn.execute("UPDATE tx_probe SET n = n + 1 WHERE id = 1")
            if attempts == 1:  # the server drops this session mid-transaction
                await pool.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            await conn.execute("UPDATE tx_probe SET n = n + 1 WHERE id = 2")

    await bump()
    assert attempts == 2
    rows = await pool.fetch("SELECT n FROM tx_probe ORDER BY id")
    assert [r["n"] for r in rows] == [1, 1]  # the first attempt left nothing behind


async def test_a_link_lost_while_committing_is_never_retried(pool: asyncpg.Pool) -> None:
    attempts = 0

    @retried
    async def bump() -> None:
        nonlocal attempts
        attempts += 1
        async with transaction(pool) as conn:
            await conn.execute("UPDATE tx_probe SET n = n + 1 WHERE id = 1")
            await pool.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())

    with pytest.raises(OutcomeUnknown) as caught:
        await bump()
    assert attempts == 1
    assert caught.value.status == 503 and caught.value.code == "outcome_unknown"


async def test_past_the_attempts_a_transient_failure_is_a_503(pool: asyncpg.Pool) -> None:
    attempts = 0

    @retried
    async def always_lost() -> None:
        nonlocal attempts
        attempts += 1
        async with transaction(pool) as conn:
            await pool.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            await conn.execute("SELECT 1")

    with pytest.raises(ServiceUnavailable) as caught:
        await always_lost()
    assert attempts == 3
    assert caught.value.code == "unavailable" and caught.value.retry_after is not None
