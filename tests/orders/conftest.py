"""Fixtures of the order tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from dispatch import db as dbmod


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the server's pool makes them (its JSON codecs)."""
    conn = await dbmod.connect(database_url)
    yield conn
    await conn.close()
