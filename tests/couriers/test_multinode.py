"""One route per job and one run per round, however many nodes dispatch at once: two app instances sharing
PostgreSQL and Redis in this process, then two real server processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from dispatch.api.keys import RUNTIME
from dispatch.app import create_app
from dispatch.auth import Role, issue_token
from dispatch.clock import ManualClock
from dispatch.config import Settings
from dispatch.core.assignment import plan_round
from dispatch.services import dispatching
from dispatch.services.dispatching import run_round
from dispatch.services.routes import minutes, travel_of
from tests.conftest import SECRET
from tests.couriers.helpers import DOOR, AuthFn, Client, add_resident, add_shop, ping, place, ready_courier
from tests.multinode.conftest import Node
from tests.timing import MS

# Every job on a live route appears on exactly one live route, and jobs.route_id agrees with the stops.
DOUBLE_BOOKED = """
SELECT job_id FROM (
    SELECT DISTINCT unnest(s.job_ids) AS job_id, s.route_id FROM stops s JOIN routes r ON r.id = s.route_id
    WHERE r.state IN ('offered', 'active') AND s.state <> 'cancelled'
) t GROUP BY job_id HAVING count(*) > 1
"""
DISAGREE = """
SELECT j.id FROM jobs j JOIN stops s ON j.id = ANY (s.job_ids) JOIN routes r ON r.id = s.route_id
WHERE r.state IN ('offered', 'active') AND s.state <> 'cancelled' AND j.route_id IS DISTINCT FROM r.id
"""


@pytest.fixture
async def second_node(
    db: asyncpg.Connection,
    redis: Redis,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    clock: ManualClock,
    settings: Settings,
) -> AsyncIterator[Client]:
    """Another app sharing PostgreSQL, Redis and the test's clock, as a second server process would."""
    settings = settings.with_(data_dir=tmp_path / "node2")
    app = create_app(settings, secret=SECRET, database_url=database_url, redis_url=redis_url, clock=clock)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_rounds_racing_on_two_nodes_never_double_book_a_job(
    client: Client, second_node: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    admin = auth("admin")
    await add_shop(
        client, admin, {"bread": 99}, offset_deg=0.002, auto_accept=True, prep_minutes=5, capacity=500
    )
    await add_shop(
        client, admin, {"apples": 99}, offset_deg=0.004, auto_accept=True, prep_minutes=5, capacity=500
    )
    residents = [await add_resident(client, admin) for _ in range(6)]
    spots = [(DOOR[0] + 0.001 * k, DOOR[1] + 0.001 * (k % 3)) for k in range(8)]
    couriers = [await ready_courier(client, auth, clock, spot, capacity=3) for spot in spots]
    nodes = [client, second_node]
    ran = 0
    for step in range(8):
        for n, resident in enumerate(residents[: 2 + step % 3]):
            items = [{"sku": "bread", "qty": 1}] + ([{"sku": "apples", "qty": 1}] if (n + step) % 2 else [])
            status, body = await place(nodes[n % 2], auth("resident", resident), items)
            assert status == 201, body
        clock.advance(5)
        for courier, spot in zip(couriers, spots, strict=True):
            await ping(nodes[step % 2], auth, courier, spot, clock.now())
        results = await asyncio.gather(
            *(
                run_round(node.app[RUNTIME].services, node.app[RUNTIME].services.live)
                for node in nodes
                for _ in range(5)
            )
        )
        done = [r for r in results if r is not None]
        assert len(done) == 1, done  # one round per due time, however many asked
        ran += 1
        assert await db.fetch(DOUBLE_BOOKED) == []
        assert await db.fetch(DISAGREE) == []
    rounds = await db.fetch("SELECT round FROM dispatch_rounds ORDER BY round")
    assert [r["round"] for r in rounds] == list(range(1, ran + 1))
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE route_id IS NOT NULL") > 0


async def test_round_writes_that_overlap_still_place_each_job_once(
    client: Client, second_node: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    """Both nodes compute the same assignment and write it at once (as a round outliving its claim would):
    the write takes the couriers', orders' and jobs' locks and its compare-and-set, so one wins."""
    admin = auth("admin")
    await add_shop(client, admin, {"bread": 9}, offset_deg=0.002, auto_accept=True, prep_minutes=5)
    for k in range(3):
        await ready_courier(client, auth, clock, (DOOR[0] + 0.001 * k, DOOR[1]))
    for _ in range(4):
        resident = await add_resident(client, admin)
        assert (await place(client, auth("resident", resident), [{"sku": "bread", "qty": 1}]))[0] == 201
    both_computed = asyncio.Barrier(2)

    async def compute_and_write(node: Client, number: int) -> int:
        svc, live = node.app[RUNTIME].services, node.app[RUNTIME].services.live
        now = clock.now()
        async with svc.pool.acquire() as conn, conn.transaction():
            jobs, fleet = await dispatching._load(conn, svc, live, now)
            params, travel = dispatching.params_of(svc), travel_of(svc)
            result = plan_round(jobs, fleet.couriers, minutes(now), travel, params, nearby=fleet.nearby)
            assert result.assignments
            await both_computed.wait()
            written = await dispatching._write(conn, svc, live, fleet, result, number, now)
        return len(written.routes)

    placed = await asyncio.gather(compute_and_write(client, 901), compute_and_write(second_node, 902))
    assert sorted(placed)[0] == 0 and sorted(placed)[1] > 0
    assert await db.fetch(DOUBLE_BOOKED) == []
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE route_id IS NULL") == 0


def _token(role: str, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, Role(role), subject, 3600, datetime.now(UTC))}"}


async def _call(
    http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: Any = None
) -> Any:
    async with http.request(method, url, json=body, headers=headers) as r:
        data = await r.json()
        assert r.status < 300, (url, r.status, data)
        return data


@pytest.mark.slow
async def test_two_server_processes_put_each_job_on_one_route(
    start_nodes: Callable[..., list[Node]], db: asyncpg.Connection, redis: Redis
) -> None:
    first, second = start_nodes(2, DISPATCH_ROUND_S="0.1", DISPATCH_TIMER_POLL="0.05")
    urls = [first.url, second.url]
    admin = _token("admin", "ops")
    async with aiohttp.ClientSession() as http:
        for offset, sku in ((0.002, "bread"), (0.004, "apples")):
            shop = await _call(
                http,
                "POST",
                f"{first.url}/v1/shops",
                admin,
                {
                    "name": sku,
                    "lat": DOOR[0] + offset,
                    "lng": DOOR[1],
                    "auto_accept": True,
                    "prep_minutes": 5,
                },
            )
            await _call(
                http,
                "PUT",
                f"{second.url}/v1/shops/{shop['id']}/catalogue/{sku}",
                admin,
                {"name": sku, "price_cents": 100, "stock": 99},
            )
        couriers = []
        # A courier holds what it is doing and at most one candidate queued behind: enough couriers for all.
        for k in range(12):
            courier = (await _call(http, "POST", f"{urls[k % 2]}/v1/couriers", admin, {"name": "Rider"}))[
                "id"
            ]
            me = _token("courier", courier)
            await _call(http, "POST", f"{urls[k % 2]}/v1/couriers/{courier}/shift/start", me)
            couriers.append(courier)
        resident = (await _call(http, "POST", f"{first.url}/v1/residents", admin, {"name": "R"}))["id"]
        orders = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for k, courier in enumerate(couriers):  # keep the couriers fresh, on both nodes
                where = {
                    "lat": DOOR[0] + 0.001 * k,
                    "lng": DOOR[1],
                    "accuracy": 5,
                    "at": datetime.now(UTC).isoformat(),
                }
                await _call(
                    http,
                    "POST",
                    f"{urls[k % 2]}/v1/couriers/{courier}/location",
                    _token("courier", courier),
                    where,
                )
            if orders < 16:
                items = [{"sku": "bread", "qty": 1}] + ([{"sku": "apples", "qty": 1}] if orders % 2 else [])
                body = {"dropoff": {"lat": DOOR[0], "lng": DOOR[1]}, "items": items}
                await _call(http, "POST", f"{urls[orders % 2]}/v1/orders", _token("resident", resident), body)
                orders += 1
            assert await db.fetch(DOUBLE_BOOKED) == []
            waiting = await db.fetchval("SELECT count(*) FROM jobs WHERE route_id IS NULL")
            if orders == 16 and waiting == 0:
                break
            await asyncio.sleep(200 * MS)
        assert waiting == 0, "every job found a courier"
    assert await db.fetch(DOUBLE_BOOKED) == []
    assert await db.fetch(DISAGREE) == []
    rounds = [r["round"] for r in await db.fetch("SELECT round FROM dispatch_rounds ORDER BY round")]
    assert rounds == list(range(1, len(rounds) + 1))  # numbered once each: no round ran twice
    nodes = {r["node"] for r in await db.fetch("SELECT DISTINCT node FROM dispatch_rounds")}
    assert 1 <= len(nodes) <= 2
