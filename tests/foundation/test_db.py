"""The transaction helper and the retry of decisions that did not happen, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import asyncpg
import pytest

from dispatch import db
from dispatch.db import NotAnswering, OutcomeUnknown, create_pool, retried, transaction
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


def _thaw(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


async def test_a_statement_postgresql_does_not_answer_is_a_503_while_it_still_does_not(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen backend (as a paused host or a partition looks): the decision is answered 503 without waiting
    for PostgreSQL to come back (the ROLLBACK would wait on the same silent link), and is not run again."""
    monkeypatch.setattr(db, "COMMAND_TIMEOUT_S", 0.5)
    short = await create_pool(database_url, 1, 1)
    attempts = 0
    frozen: list[int] = []

    @retried
    async def bump() -> None:
        nonlocal attempts
        attempts += 1
        async with transaction(short) as conn:
            await conn.execute("UPDATE tx_probe SET n = n + 1 WHERE id = 1")
            frozen.append(conn.get_server_pid())
            os.kill(frozen[-1], signal.SIGSTOP)
            await conn.execute("UPDATE tx_probe SET n = n + 1 WHERE id = 2")

    try:
        decision = asyncio.ensure_future(bump())
        done, _ = await asyncio.wait({decision}, timeout=60)
        assert decision in done, "still waiting for a PostgreSQL that does not answer"
        with pytest.raises(NotAnswering) as caught:
            decision.result()
    finally:
        for pid in frozen:
            _thaw(pid)
    assert attempts == 1 and len(frozen) == 1  # a second wait would only hold the request longer
    assert caught.value.status == 503 and caught.value.code == "unavailable"
    assert caught.value.retry_after is not None and caught.value.details["dependency"] == "postgres"
    # Its connection was dropped: thawed, the backend sees it gone and rolls the transaction back.
    for _ in range(1200):
        if not await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", frozen[0]):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the abandoned backend is still there a minute after it was thawed")
    rows = await pool.fetch("SELECT n FROM tx_probe ORDER BY id")
    assert [r["n"] for r in rows] == [0, 0]
    assert await short.fetchval("SELECT 1") == 1  # the pool connects again
    await short.close()


async def test_no_free_connection_within_the_bound_is_a_503(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "ACQUIRE_TIMEOUT_S", 0.2)
    one = await create_pool(database_url, 1, 1)
    try:
        async with one.acquire():  # every connection busy
            with pytest.raises(NotAnswering) as caught:
                async with transaction(one) as conn:
                    await conn.execute("SELECT 1")
            with pytest.raises(NotAnswering):  # the pool's own one-statement shortcuts too
                await one.fetchval("SELECT 1")
        assert caught.value.code == "unavailable" and caught.value.retry_after is not None
        assert "busy" in caught.value.message  # not blamed on PostgreSQL: it may be this node's own load
        async with transaction(one) as conn:  # and the connection serves once free
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await one.close()


async def test_after_a_statement_without_answer_requests_wait_only_briefly_for_a_connection(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once PostgreSQL is known silent, a request's reads each give up within SILENT_ACQUIRE_S rather than
    each waiting out ACQUIRE_TIMEOUT_S in turn; a long wait for a free connection alone (our own overload)
    does not count as silence."""
    monkeypatch.setattr(db, "COMMAND_TIMEOUT_S", 0.5)
    monkeypatch.setattr(db, "ACQUIRE_TIMEOUT_S", 0.5)
    one = await create_pool(database_url, 1, 1)
    assert isinstance(one, db.BoundedPool)
    try:
        async with one.acquire():  # busy, but PostgreSQL answers
            with pytest.raises(NotAnswering):
                async with db.connection(one):
                    pass
        assert one.acquire_bound() == db.ACQUIRE_TIMEOUT_S  # overload is not silence
        monkeypatch.setattr(db, "ACQUIRE_TIMEOUT_S", 600.0)
        frozen: list[int] = []

        async def unanswered() -> None:
            async with db.connection(one) as conn:
                frozen.append(conn.get_server_pid())
                os.kill(frozen[-1], signal.SIGSTOP)
                await conn.execute("SELECT 1")

        try:
            with pytest.raises(NotAnswering):
                await unanswered()
        finally:
            for pid in frozen:
                _thaw(pid)
        assert one.acquire_bound() == db.SILENT_ACQUIRE_S
        async with one.acquire():  # the one connection busy again: the next request is told at once
            with pytest.raises(NotAnswering) as caught:
                async with db.connection(one):
                    pass
        assert caught.value.details["reason"] == f"no PostgreSQL connection within {db.SILENT_ACQUIRE_S:g} s"
        assert caught.value.message.startswith("PostgreSQL is not answering")
    finally:
        await one.close()


async def test_a_host_that_accepts_but_never_answers_counts_as_silence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db, "CONNECT_TIMEOUT_S", 0.3)
    held: list[asyncio.StreamWriter] = []

    async def say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    mute = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = mute.sockets[0].getsockname()[1]
    pool = await create_pool(f"postgresql://x@127.0.0.1:{port}/x", 0, 1)
    assert isinstance(pool, db.BoundedPool) and pool.acquire_bound() == db.ACQUIRE_TIMEOUT_S
    try:
        with pytest.raises(NotAnswering):
            async with db.connection(pool):
                pass
        assert held  # it did connect, and was kept waiting
        assert pool.acquire_bound() == db.SILENT_ACQUIRE_S
    finally:
        for writer in held:
            writer.close()
        mute.close()
        await pool.close()
