"""The migration runner: order, one transaction each, checksums, and two processes at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dispatch.errors import MigrationError
from dispatch.migrate import discover, migrate_url


def _write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql)


async def test_applies_in_order_and_records_checksums(
    tmp_path: Path, make_database: Callable[[str], Any]
) -> None:
    url = await make_database("mig_order")
    _write(tmp_path, "0002_b.sql", "INSERT INTO t VALUES (2);")
    _write(tmp_path, "0001_a.sql", "CREATE TABLE t (v int);")
    assert await migrate_url(url, tmp_path) == ["0001_a.sql", "0002_b.sql"]
    assert await migrate_url(url, tmp_path) == []  # idempotent
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
        assert [(r["version"], r["name"]) for r in rows] == [(1, "0001_a.sql"), (2, "0002_b.sql")]
        assert rows[0]["checksum"] == discover(tmp_path)[0].checksum
    finally:
        await conn.close()


async def test_failed_migration_rolls_back_whole_file(
    tmp_path: Path, make_database: Callable[[str], Any]
) -> None:
    url = await make_database("mig_fail")
    _write(tmp_path, "0001_a.sql", "CREATE TABLE t (v int); INSERT INTO t VALUES ('not an int');")
    with pytest.raises(asyncpg.PostgresError):
        await migrate_url(url, tmp_path)
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('t')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()


async def test_changed_applied_file_is_an_error_naming_it(
    tmp_path: Path, make_database: Callable[[str], Any]
) -> None:
    url = await make_database("mig_checksum")
    _write(tmp_path, "0001_a.sql", "CREATE TABLE t (v int);")
    await migrate_url(url, tmp_path)
    _write(tmp_path, "0001_a.sql", "CREATE TABLE t (v bigint);")
    with pytest.raises(MigrationError, match=r"0001_a\.sql"):
        await migrate_url(url, tmp_path)


async def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "1_oops.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=r"1_oops\.sql"):
        discover(tmp_path)


async def test_concurrent_runners_apply_each_migration_once(
    tmp_path: Path, make_database: Callable[[str], Any]
) -> None:
    url = await make_database("mig_race")
    # Not idempotent on purpose: a second application would fail on the duplicate table.
    _write(tmp_path, "0001_a.sql", "CREATE TABLE t (v int); SELECT pg_sleep(0.2);")
    _write(tmp_path, "0002_b.sql", "CREATE TABLE u (v int);")
    results = await asyncio.gather(*(migrate_url(url, tmp_path) for _ in range(5)))
    applied = [name for r in results for name in r]
    assert sorted(applied) == ["0001_a.sql", "0002_b.sql"]


def test_real_migrations_are_well_named() -> None:
    names = [m.name for m in discover()]
    assert names and names[0].startswith("0001_")


async def test_two_processes_migrate_at_once(tmp_path: Path, make_database: Callable[[str], Any]) -> None:
    """Two separate OS processes racing on the same empty database apply the schema once."""
    import os
    import sys

    url = await make_database("mig_procs")
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": "unix:///nonexistent"}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dispatch",
            "migrate",
            "--data-dir",
            str(tmp_path / str(n)),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(2)
    ]
    outputs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    conn = await asyncpg.connect(url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(discover())
    finally:
        await conn.close()
