"""A shop's own zone cannot freeze the server: a comb of long thin teeth (little area, a huge boundary) is
refused before any work, a heavy zone within the limits is covered in a worker process while /healthz keeps
answering, and a full queue of zone changes is a 503, not a wait."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.geo.shapes import comb
from tests.hostile.conftest import Server, assert_error_shape, bearer, metrics
from tests.timing import MS

pytestmark = pytest.mark.slow
HEALTHZ_WITHIN_S = 2.0  # a bounded wait for an answer, not a latency threshold


async def _shop(http: aiohttp.ClientSession, server: Server) -> str:
    r = await http.post(
        server.url + "/v1/shops", json={"name": "Comb", "lat": 45.76, "lng": 4.83}, headers=bearer("admin")
    )
    assert r.status == 201, await r.text()
    shop_id: str = (await r.json())["id"]
    return shop_id


async def _healthz_while(http: aiohttp.ClientSession, server: Server, work: asyncio.Task[Any]) -> int:
    """Ask /healthz every 0.1 s until `work` is done; each must answer within HEALTHZ_WITHIN_S."""
    answered = 0
    while not work.done():
        async with http.get(
            server.url + "/healthz", timeout=aiohttp.ClientTimeout(total=HEALTHZ_WITHIN_S)
        ) as r:
            assert r.status == 200
        answered += 1
        await asyncio.sleep(100 * MS)
    return answered


def _pending_zone_changes(server: Server) -> float:
    found = re.search(r"^dispatch_zone_changes_pending ([0-9.e+-]+)$", metrics(server), re.MULTILINE)
    assert found is not None, "the zone-work gauge is exported"
    return float(found[1])


async def test_a_comb_zone_is_refused_without_stalling_the_server(
    server: Server, db: asyncpg.Connection
) -> None:
    """40 teeth 390 km long: 3.6 km² and 163 vertices (within the area and vertex limits), but a 60,000-cell
    cover that took the event loop for tens of seconds."""
    async with aiohttp.ClientSession() as http:
        shop = await _shop(http, server)
        put = asyncio.create_task(
            http.put(f"{server.url}/v1/shops/{shop}/zone", json=comb(40, 3.5), headers=bearer("shop", shop))
        )
        await _healthz_while(http, server, put)
        r = await put
        body = await r.json()
        assert r.status == 422, body
        assert_error_shape(body, "invalid_zone")
        detail = body["error"]["details"][0]
        assert (detail["code"], detail["path"]) == ("zone_too_complex", ["zone", "coordinates"])
    assert await db.fetchval("SELECT zone FROM shops WHERE id = $1", shop) is not None  # the default circle


async def test_a_heavy_zone_is_covered_off_the_event_loop(
    make_server: Callable[..., Server], db: asyncpg.Connection
) -> None:
    """With the cell limit raised, a comb of 120,000 cells is accepted: covering takes seconds of CPU, in a
    worker process, while /healthz answers and a second zone change meets a full queue (503)."""
    server = make_server(DISPATCH_ZONE_MAX_CELLS="300000", DISPATCH_ZONE_WORKERS="1", DISPATCH_ZONE_QUEUE="0")
    async with aiohttp.ClientSession() as http:
        shop, other = await _shop(http, server), await _shop(http, server)
        heavy = asyncio.create_task(
            http.put(f"{server.url}/v1/shops/{shop}/zone", json=comb(40, 7.0), headers=bearer("admin"))
        )
        busy: list[tuple[int, Any, str | None]] = []

        async def second_change() -> None:
            # Only once the heavy change holds the worker: a circle sent first could take it instead.
            while True:
                if heavy.done() or _pending_zone_changes(server) >= 1:
                    break
                await asyncio.sleep(20 * MS)
            while not heavy.done() and not busy:
                circle = {"type": "Circle", "center": [4.83, 45.76], "radius_m": 500}
                r = await http.put(
                    f"{server.url}/v1/shops/{other}/zone", json=circle, headers=bearer("admin")
                )
                if r.status != 200:
                    busy.append((r.status, await r.json(), r.headers.get("Retry-After")))
                await asyncio.sleep(50 * MS)

        answered, _ = await asyncio.gather(_healthz_while(http, server, heavy), second_change())
        r = await heavy
        assert r.status == 200, await r.text()
        assert (await r.json())["cells"] > 100_000
        assert answered >= 1
        assert busy, "the second zone change never met the busy worker"
        status, body, retry_after = busy[0]
        assert status == 503 and retry_after is not None, body
        assert_error_shape(body, "unavailable")
        # The loop-lag gauge is exported, and what it saw stayed within the same bound as /healthz.
        lag = re.search(r"^dispatch_event_loop_lag_seconds ([0-9.e+-]+)$", metrics(server), re.MULTILINE)
        assert lag is not None
        assert float(lag[1]) < HEALTHZ_WITHIN_S
    cells = await db.fetchval(
        "SELECT cardinality(interior) + cardinality(edge) FROM shop_covers WHERE shop_id = $1", shop
    )
    assert cells > 100_000
