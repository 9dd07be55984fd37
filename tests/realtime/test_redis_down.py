"""Redis is only the fast path: with Redis gone, orders still commit and clients resume from PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dispatch.api.keys import METRICS
from dispatch.app import create_app
from dispatch.clock import ManualClock
from dispatch.config import Settings
from dispatch.embedded import start_redis
from tests.conftest import SECRET
from tests.couriers.helpers import add_courier, on_shift, ping, post, routes_of, trip
from tests.orders.helpers import AuthFn, add_resident, add_shop, place, recv
from tests.timing import SECOND


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    url, server = start_redis(tmp_path / "redis")
    try:
        yield url, server
    finally:
        with contextlib.suppress(Exception):  # already shut down by the test
            server._cleanup()


def _served(
    database_url: str, redis_url: str, tmp_path: Path, clock: ManualClock | None = None
) -> TestClient[Any, Any]:
    """A node on the test's own Redis (which the test shuts down), timers off."""
    # Rounds place work as soon as it is accepted, as in the other tests (see tests/conftest.py).
    settings = Settings(
        data_dir=tmp_path,
        db_pool_min=1,
        db_pool_max=3,
        run_timers=False,
        defer_wait_minutes=math.inf,
        admission_refresh_s=0,
    )
    app = create_app(
        settings, secret=SECRET, database_url=database_url, redis_url=redis_url, clock=clock or ManualClock()
    )
    return TestClient(TestServer(app))


async def test_event_committed_while_redis_is_down_reaches_the_client_on_resume(
    db: asyncpg.Connection, database_url: str, own_redis: tuple[str, Any], tmp_path: Path, auth: AuthFn
) -> None:
    redis_url, server = own_redis
    async with _served(database_url, redis_url, tmp_path) as client:
        admin = auth("admin")
        await add_shop(client, admin, {"milk": 5})
        resident = await add_resident(client, admin)

        server.shutdown(nosave=True)  # Redis goes away

        r = await client.get("/readyz")
        assert r.status == 503
        body = await r.json()
        assert body["error"]["code"] == "not_ready"
        assert "redis" in body["error"]["details"]

        status, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 1}])
        assert status == 201, order  # committed with its events; only the publish failed
        async with client.ws_connect("/v1/ws", headers=auth("resident", resident)) as ws:
            hello = await recv(ws)
            assert hello["last_seq"] == 1
            await ws.send_json({"type": "resume", "after_seq": 0, "id": "r"})
            event = await recv(ws)
            assert event["seq"] == 1
            assert event["type"] == "order.placed"
            assert event["data"]["id"] == order["id"]
            assert (await recv(ws))["data"] == {"last_seq": 1}


async def test_metrics_answer_with_redis_down_and_keep_the_fleets_last_counts(
    db: asyncpg.Connection, database_url: str, own_redis: tuple[str, Any], tmp_path: Path, auth: AuthFn
) -> None:
    redis_url, server = own_redis
    async with _served(database_url, redis_url, tmp_path) as client:
        courier = await add_courier(client, auth("admin"))
        await on_shift(client, auth, courier)
        assert await _fleet_gauge(client) == {"on_shift": 1, "busy": 0, "stale": 0}

        server.shutdown(nosave=True)  # Redis goes away
        client.app[METRICS].fleet_counted_at = -1e9  # the next scrape counts again, and needs Redis for it
        await on_shift(client, auth, await add_courier(client, auth("admin")))
        # Counted with PostgreSQL alone the gauge would say 2 on shift: it keeps what it last knew whole.
        assert await _fleet_gauge(client) == {"on_shift": 1, "busy": 0, "stale": 0}


async def test_writes_answer_while_redis_hangs_and_their_events_arrive_after(
    db: asyncpg.Connection, database_url: str, own_redis: tuple[str, Any], tmp_path: Path, auth: AuthFn
) -> None:
    """A Redis that stops answering (not refusing: a partition, a paused VM) must not hold writes: the
    events are committed, and what was not published reaches the clients from PostgreSQL."""
    redis_url, server = own_redis
    async with _served(database_url, redis_url, tmp_path) as client:
        admin = auth("admin")
        await add_shop(client, admin, {"milk": 5})
        resident = await add_resident(client, admin)
        headers = auth("resident", resident)
        async with client.ws_connect("/v1/ws", headers=headers) as ws:
            assert (await recv(ws))["type"] == "hello"
            os.kill(server.pid, signal.SIGSTOP)
            try:
                # Bounds on a hang, not measures: before, each write waited until Redis answered again.
                status, order = await asyncio.wait_for(
                    place(client, headers, [{"sku": "milk", "qty": 1}]), 10 * SECOND
                )
                assert status == 201, order
                r = await asyncio.wait_for(
                    client.post(f"/v1/orders/{order['id']}/cancel", headers=headers), 10 * SECOND
                )
                assert r.status == 200, await r.text()
            finally:
                os.kill(server.pid, signal.SIGCONT)
            # This node's own client had them at once, in order, each once.
            placed, cancelled = await recv(ws), await recv(ws)
            assert (placed["seq"], placed["type"]) == (1, "order.placed")
            assert (cancelled["seq"], cancelled["data"]["state"]) == (2, "cancelled")
        async with client.ws_connect("/v1/ws", headers=headers) as again:
            assert (await recv(again))["last_seq"] == 2


async def test_a_ping_while_redis_hangs_is_answered_503_and_pings_work_again_after(
    db: asyncpg.Connection, database_url: str, own_redis: tuple[str, Any], tmp_path: Path, auth: AuthFn
) -> None:
    redis_url, server = own_redis
    clock = ManualClock()
    async with _served(database_url, redis_url, tmp_path, clock) as client:
        courier = await add_courier(client, auth("admin"))
        await on_shift(client, auth, courier)
        await ping(client, auth, courier, (45.764, 4.8357), clock.now())
        body = {"lat": 45.764, "lng": 4.8357, "accuracy": 5.0, "at": clock.now().isoformat()}
        os.kill(server.pid, signal.SIGSTOP)
        try:
            # A bound on a hang, not a measure: before, the ping waited through the client's timeouts.
            r = await asyncio.wait_for(
                client.post(f"/v1/couriers/{courier}/location", json=body, headers=auth("courier", courier)),
                10 * SECOND,
            )
            assert r.status == 503, await r.text()
            assert r.headers["Retry-After"]
            assert (await r.json())["error"]["code"] == "unavailable"
        finally:
            os.kill(server.pid, signal.SIGCONT)
        clock.advance(seconds=5)
        assert (await ping(client, auth, courier, (45.765, 4.8357), clock.now()))["status"] == "stored"


async def test_reads_of_positions_and_a_stop_while_redis_hangs_answer_503_and_change_nothing(
    db: asyncpg.Connection, database_url: str, own_redis: tuple[str, Any], tmp_path: Path, auth: AuthFn
) -> None:
    """Completing a pickup reads the courier's position and ends the shop's view of it inside its
    transaction: with Redis hung it must give up (rolled back, locks released), not wait for a minute."""
    redis_url, server = own_redis
    clock = ManualClock()
    async with _served(database_url, redis_url, tmp_path, clock) as client:
        t = await trip(client, auth, clock)
        me = auth("courier", t.courier)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            # Bounds on a hang, not measures: before, each waited through the client's timeouts (~70 s).
            r = await asyncio.wait_for(client.get("/v1/fleet", headers=auth("admin")), 10 * SECOND)
            assert r.status == 503, await r.text()
            assert r.headers["Retry-After"]
            assert (await r.json())["error"]["code"] == "unavailable"
            # Two bounded calls (its position, then ending the shop's view): 2 x CALL_WAIT_S.
            status, body = await asyncio.wait_for(
                post(client, f"/v1/stops/{t.pickup['id']}/completed", me), 20 * SECOND
            )
            assert (status, body["error"]["code"]) == (503, "unavailable")
            # Its transaction rolled back and let go of the courier's row: another change is not held.
            assert (
                await asyncio.wait_for(
                    db.fetchval("SELECT state FROM stops WHERE id = $1 FOR UPDATE NOWAIT", t.pickup["id"]),
                    10 * SECOND,
                )
                == "pending"
            )
        finally:
            os.kill(server.pid, signal.SIGCONT)
        (route,) = await routes_of(client, auth, t.courier)
        assert route["stops"][0]["state"] == "pending"
        assert (await post(client, f"/v1/stops/{t.pickup['id']}/completed", me))[0] == 200
        (route,) = await routes_of(client, auth, t.courier)
        assert route["stops"][0]["state"] == "completed"
        r = await client.get("/v1/fleet", headers=auth("admin"))
        assert r.status == 200, await r.text()
        assert [c["id"] for c in (await r.json())["items"]] == [t.courier]


async def _fleet_gauge(client: TestClient[Any, Any]) -> dict[str, float]:
    r = await client.get("/metrics")
    assert r.status == 200
    return {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in (await r.text()).splitlines()
        if line.startswith("dispatch_couriers{")
    }
