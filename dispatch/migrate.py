"""A small migration runner of our own: plain SQL files, in order, each in its own transaction.

Why not a tool (yoyo, alembic, dbmate)? We need exactly four things: ordered plain-SQL files, one transaction
each, a checksum check, and a PostgreSQL advisory lock so that two processes starting at once never both apply
a migration. That is ~80 lines on asyncpg, with no second driver and no migration DSL to learn.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

from dispatch.db import Conn
from dispatch.errors import MigrationError

log = logging.getLogger(__name__)

_SOURCE_TREE = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant: every dispatch process takes this lock before touching the schema.
_LOCK_KEY = 0x64697370  # "disp"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Traversable:
    """The SQL files this code ships with: the top-level migrations/ directory, which the wheel carries as
    the package data `dispatch.migrations` (see pyproject.toml).

    Imported from a source tree (an editable install, or a checkout on PYTHONPATH), that tree's own
    directory: the installed package's resources could belong to another checkout."""
    if (_SOURCE_TREE / "pyproject.toml").is_file():
        return _SOURCE_TREE / "migrations"
    return files("dispatch.migrations")


def discover(directory: Traversable | None = None) -> list[Migration]:
    directory = migrations_dir() if directory is None else directory
    found: list[Migration] = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if not match:
            raise MigrationError(f"migration file {entry.name} is not named NNNN_description.sql")
        found.append(Migration(int(match[1]), entry.name, entry.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number in {directory}")
    return found


async def migrate(conn: Conn, directory: Traversable | None = None) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to call from many processes at once."""
    migrations = discover(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {r["version"]: r for r in rows}
        done: list[str] = []
        for m in migrations:
            row = applied.get(m.version)
            if row is not None:
                if row["checksum"] != m.checksum:
                    raise MigrationError(
                        f"migration {m.name} was changed after it was applied "
                        f"(recorded as {row['name']}); add a new migration instead of editing it",
                        details={"file": m.name},
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            log.info("applied migration %s", m.name)
            done.append(m.name)
        known = {m.version for m in migrations}
        unknown = sorted(v for v in applied if v not in known)
        if unknown:
            names = ", ".join(applied[v]["name"] for v in unknown)
            raise MigrationError(
                f"the database has migrations this code does not know ({names}); "
                "is an older server version running against a newer database?"
            )
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def migrate_url(url: str, directory: Traversable | None = None) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn, directory)
    finally:
        await conn.close()


async def recreate_database(server_url: str, name: str) -> str:
    """Drop and create the empty database `name` on the server of `server_url`; returns its URL (the same
    server URL with that database, for socket and TCP URLs alike)."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = server_url.partition("?")
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{rest.partition('/')[0]}/{name}" + (f"?{query}" if query else "")


async def fresh_database(server_url: str, name: str) -> str:
    """`recreate_database`, migrated: for tests, benchmarks and replays that want a clean database beside
    others on one server."""
    url = await recreate_database(server_url, name)
    await migrate_url(url)
    return url
