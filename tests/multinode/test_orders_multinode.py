"""Orders across real server processes: one winner under racing accepts and deadlines, events that cross
nodes, and a client that loses its node and resumes on another."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatch.auth import Role, issue_token
from dispatch.clock import SystemClock
from tests.conftest import SECRET
from tests.multinode.conftest import Node
from tests.orders.helpers import DOOR, order_body, square
from tests.timing import MS, SECOND

pytestmark = pytest.mark.slow


def bearer(role: str, subject: str = "ops") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, Role(role), subject, 3600, SystemClock().now())}


async def _json(resp: aiohttp.ClientResponse) -> Any:
    return await resp.json(content_type=None)


async def _setup(http: aiohttp.ClientSession, nodes: list[Node], stock: int) -> tuple[str, str]:
    admin = bearer("admin")
    r = await http.post(
        nodes[0].url + "/v1/shops",
        json={"name": "Racer", "lat": DOOR[0] + 0.002, "lng": DOOR[1], "zone": square(*DOOR, 0.02)},
        headers=admin,
    )
    assert r.status == 201, await r.text()
    shop = (await _json(r))["id"]
    r = await http.put(
        f"{nodes[0].url}/v1/shops/{shop}/catalogue/milk",
        json={"name": "Milk", "price_cents": 100, "stock": stock},
        headers=admin,
    )
    assert r.status == 200
    r = await http.post(nodes[0].url + "/v1/residents", json={"name": "R"}, headers=admin)
    resident = (await _json(r))["id"]
    # Every node learns the new zone through Redis.
    for node in nodes:
        for _ in range(100):
            r = await http.get(f"{node.url}/v1/coverage?lat={DOOR[0]}&lng={DOOR[1]}", headers=admin)
            if (await _json(r))["shops_delivering"] >= 1:
                break
            await asyncio.sleep(50 * MS)
        else:
            raise AssertionError("zone not propagated")
    return shop, resident


async def test_accepts_racing_the_deadline_on_two_processes_have_one_outcome(
    start_nodes: Callable[..., list[Node]], db: asyncpg.Connection
) -> None:
    nodes = start_nodes(2, DISPATCH_OFFER_TIMEOUT="1", DISPATCH_TIMER_POLL="0.02")
    rng = random.Random(7)
    async with aiohttp.ClientSession() as http:
        shop, resident = await _setup(http, nodes, stock=1000)
        outcomes: list[str] = []
        for _ in range(8):
            r = await http.post(
                nodes[0].url + "/v1/orders",
                json=order_body([{"sku": "milk", "qty": 1}]),
                headers=bearer("resident", resident),
            )
            assert r.status == 201, await r.text()
            job_id = (await _json(r))["jobs"][0]["id"]
            await asyncio.sleep(rng.uniform(0.85, 1.1))  # straddle the 1 s deadline
            results = await asyncio.gather(
                *(
                    http.post(
                        f"{nodes[k % 2].url}/v1/jobs/{job_id}/accept",
                        json={"prep_minutes": 5},
                        headers=bearer("shop", shop),
                    )
                    for k in range(12)
                )
            )
            wins = [r for r in results if r.status == 200]
            losses = {(await _json(r))["error"]["code"] for r in results if r.status != 200}
            assert len(wins) <= 1
            assert losses <= {"already_accepted", "offer_expired"}
            await asyncio.sleep(300 * MS)  # let a timer fire if nobody won
            state = await db.fetchval("SELECT state FROM jobs WHERE id = $1", job_id)
            assert state == ("accepted" if wins else "unfulfilled"), (state, len(wins))
            outcome_events = await db.fetchval(
                """SELECT count(*) FROM events WHERE recipient = $1
                   AND type IN ('job.accepted', 'job.expired') AND payload->>'id' = $2""",
                shop,
                job_id,
            )
            assert outcome_events == 1
            outcomes.append(state)
        # Per-recipient sequences have no gaps or duplicates despite two writers.
        seqs = [
            r["seq"] for r in await db.fetch("SELECT seq FROM events WHERE recipient = $1 ORDER BY seq", shop)
        ]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_resident_on_one_node_sees_the_accept_made_on_another(
    start_nodes: Callable[..., list[Node]],
) -> None:
    a, b = start_nodes(2)
    async with aiohttp.ClientSession() as http:
        shop, resident = await _setup(http, [a, b], stock=10)
        async with http.ws_connect(a.url + "/v1/ws", headers=bearer("resident", resident)) as ws:
            hello = await ws.receive_json(timeout=5 * SECOND)
            assert hello["type"] == "hello"
            r = await http.post(
                a.url + "/v1/orders",
                json=order_body([{"sku": "milk", "qty": 1}]),
                headers=bearer("resident", resident),
            )
            job_id = (await _json(r))["jobs"][0]["id"]
            assert (await ws.receive_json(timeout=5 * SECOND))["type"] == "order.placed"
            r = await http.post(
                f"{b.url}/v1/jobs/{job_id}/accept", json={"prep_minutes": 5}, headers=bearer("shop", shop)
            )
            assert r.status == 200
            update = await ws.receive_json(timeout=5 * SECOND)
            assert update["type"] == "order.updated"
            assert update["data"]["state"] == "accepted"


async def test_client_whose_node_dies_resumes_on_another_exactly_once(
    start_nodes: Callable[..., list[Node]],
) -> None:
    a, b = start_nodes(2)
    async with aiohttp.ClientSession() as http:
        shop, resident = await _setup(http, [a, b], stock=10)
        seen: list[int] = []
        async with http.ws_connect(a.url + "/v1/ws", headers=bearer("resident", resident)) as ws:
            await ws.receive_json(timeout=5 * SECOND)
            r = await http.post(
                b.url + "/v1/orders",
                json=order_body([{"sku": "milk", "qty": 1}]),
                headers=bearer("resident", resident),
            )
            job_id = (await _json(r))["jobs"][0]["id"]
            seen.append((await ws.receive_json(timeout=5 * SECOND))["seq"])
            a.kill()  # the node dies mid-stream; the socket drops without a close handshake
            msg = await ws.receive(timeout=10 * SECOND)
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
        # While the resident is away, things happen on the surviving node.
        r = await http.post(
            f"{b.url}/v1/jobs/{job_id}/accept", json={"prep_minutes": 5}, headers=bearer("shop", shop)
        )
        assert r.status == 200
        r = await http.post(f"{b.url}/v1/jobs/{job_id}/ready", headers=bearer("shop", shop))
        assert r.status == 200
        async with http.ws_connect(b.url + "/v1/ws", headers=bearer("resident", resident)) as ws:
            await ws.receive_json(timeout=5 * SECOND)
            await ws.send_json({"type": "resume", "after_seq": seen[-1], "id": "r"})
            while True:
                msg = await ws.receive_json(timeout=5 * SECOND)
                if msg.get("type") == "reply":
                    assert msg["ok"] is True
                    break
                seen.append(msg["seq"])
        assert seen == [1, 2, 3]
