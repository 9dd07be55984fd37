"""Websocket connections that come and go leave nothing behind in the server: its memory stays flat over
10,000 authenticated connect/disconnect cycles.

aiohttp leaves each closed websocket's objects (its zlib state among them, some 300 KB with the compression
browsers ask for) in a reference cycle; with connections held long enough to reach the collector's oldest
generation, they piled up until a full collection (measured here: +70 MB over these 10,000 connections; the
more long-lived objects the server holds, the later the collection and the higher the pile). Freed by
reference counting, the server stays flat (measured: +1 MB)."""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp
import asyncpg
import pytest

from tests.hostile.conftest import Server, bearer
from tests.timing import MS, SECOND

pytestmark = pytest.mark.slow
AT_ONCE = 100
WARM_UP, ROUNDS = 20, 100  # 2,000 connections to settle, 10,000 measured
GROWTH_KIB = 8 * 1024  # a bound on what a leak may keep (under 1 KiB a connection), not on speed


async def _rounds(server: Server, resident: str, rounds: int) -> list[int]:
    """`rounds` times: AT_ONCE clients connect, all stay while each pings a few times, then all leave.
    Held together, their objects live long enough to reach the collector's oldest generation. Returns the
    server's RSS after each round."""
    headers = bearer("resident", resident)
    rss = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for _ in range(rounds):
            sockets = await asyncio.gather(
                *(
                    # permessage-deflate, as browsers ask for it: zlib state per connection on the server
                    http.ws_connect(server.url + "/v1/ws", headers=headers, compress=15)
                    for _ in range(AT_ONCE)
                )
            )
            for ws in sockets:
                assert (await ws.receive_json(timeout=10 * SECOND))["type"] == "hello"
            for n in range(3):
                for ws in sockets:
                    await ws.send_json({"type": "ping", "id": n})
                for ws in sockets:
                    assert (await ws.receive_json(timeout=10 * SECOND))["ok"] is True
            await asyncio.gather(*(ws.close() for ws in sockets))
            rss.append(server.rss_kib())
    return rss


async def test_memory_stays_flat_over_10000_websocket_cycles(server: Server, db: asyncpg.Connection) -> None:
    resident = await db.fetchval(
        "INSERT INTO residents (id, name) VALUES ('res_memorymemorymem1', 'R') RETURNING id"
    )
    fds = server.open_fds()
    # Warm-up: caches, pools and the allocator's arenas (zlib's buffers come and go) reach their size.
    warm = await _rounds(server, resident, WARM_UP)
    measured = await _rounds(server, resident, ROUNDS)
    # Medians of the last rounds of each phase: one sample catches the allocator mid-way.
    before, after = statistics.median(warm[-5:]), statistics.median(measured[-5:])
    assert after - before <= GROWTH_KIB, f"RSS grew {after - before} KiB over {ROUNDS * AT_ONCE} cycles"
    deadline = time.monotonic() + 10
    while server.open_fds() > fds + 5:  # the last closes are being finished
        assert time.monotonic() < deadline, (server.open_fds(), fds)
        await asyncio.sleep(100 * MS)
