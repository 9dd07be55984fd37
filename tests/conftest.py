"""Test fixtures: real PostgreSQL and Redis (embedded, started once per session, or TEST_*_URL)."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from dispatch import events
from dispatch.app import create_app
from dispatch.auth import Role, issue_token
from dispatch.clock import ManualClock
from dispatch.config import Settings
from dispatch.migrate import fresh_database, recreate_database

SECRET = "test-secret-" + "x" * 40
# `dispatch serve` processes the tests start run one process each, unless a test asks for workers.
os.environ.setdefault("DISPATCH_WORKERS", "1")
# Every event written in the tests is checked against its declared payload model (dispatch/events.py).
events.check_payloads(True)
TEST_DB = "dispatch_test"


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(PostgreSQL server URL, Redis URL) for the whole session."""
    from dispatch.embedded import start_embedded

    pg = os.environ.get("TEST_DATABASE_URL")
    redis = os.environ.get("TEST_REDIS_URL")
    embedded = start_embedded(tmp_path_factory.mktemp("embedded"), pg, redis)
    assert embedded.database_url is not None and embedded.redis_url is not None
    try:
        yield embedded.database_url, embedded.redis_url
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def make_database(services: tuple[str, str]) -> Callable[[str], Any]:
    """Create (or recreate) an empty database on the test server; returns its URL."""

    async def make(name: str) -> str:
        return await recreate_database(services[0], name)

    return make


@pytest.fixture(scope="session")
def database_url(services: tuple[str, str]) -> str:
    import asyncio

    return asyncio.run(fresh_database(services[0], TEST_DB))


@pytest.fixture(scope="session")
def redis_url(services: tuple[str, str]) -> str:
    return services[1]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the migrated test database, emptied before the test."""
    conn = await asyncpg.connect(database_url)
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
    )
    if tables:
        names = ", ".join(f'"{t["tablename"]}"' for t in tables)
        # A server process from an earlier test in the module may still be writing (rounds, timers): TRUNCATE
        # locks the tables one by one and can deadlock with its transaction; PostgreSQL aborts one of the two,
        # and the emptying is simply done again (as the server does with its own deadlock victims).
        for attempt in range(5):
            try:
                await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
                break
            except asyncpg.DeadlockDetectedError:
                if attempt == 4:
                    raise
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The test server's settings; a test changes some by `parametrize("settings", [{..}], indirect=True)`."""
    # Timers are fired explicitly by the tests (expire_due) so that they run deterministically. Rounds place
    # work as soon as it is accepted (tests/couriers/test_deferral.py covers holding it until it is due). The
    # check at placement reads the fleet for every order (test_admission.py covers the snapshot).
    return Settings(
        data_dir=tmp_path,
        db_pool_min=1,
        db_pool_max=4,
        max_body_bytes=64 * 1024,
        run_timers=False,
        **{"defer_wait_minutes": math.inf, "admission_refresh_s": 0, **getattr(request, "param", {})},
    )


@pytest.fixture
async def client(
    db: asyncpg.Connection,
    redis: Redis,
    database_url: str,
    redis_url: str,
    settings: Settings,
    clock: ManualClock,
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings, secret=SECRET, database_url=database_url, redis_url=redis_url, clock=clock)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
def token(clock: ManualClock) -> Callable[..., str]:
    def make(role: str, subject: str = "ops", ttl: int = 3600) -> str:
        return issue_token(SECRET, Role(role), subject, ttl, clock.now())

    return make


@pytest.fixture
def auth(token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    def make(role: str, subject: str = "ops") -> dict[str, str]:
        return {"Authorization": f"Bearer {token(role, subject)}"}

    return make
