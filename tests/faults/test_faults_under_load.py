"""Each fault, injected for real under a city's load (36 shop apps, 12 couriers, 20 residents, orders at
20/s over three nodes), costs no order, no event, no double decision and no 5xx other than 503."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from dispatch.auth import Role
from dispatch.bench.fault_load import App, Nodes
from dispatch.bench.faults import (
    FaultStack,
    node_killed,
    postgres_down,
    postgres_hung,
    redis_down,
    redis_hung,
    run_fault,
    run_lock_order,
)
from dispatch.bench.harness import token
from tests.faults.conftest import assert_no_tracebacks, assert_nothing_broken
from tests.timing import SECOND

pytestmark = pytest.mark.slow


def test_postgres_stopped_for_five_seconds(stack: FaultStack) -> None:
    report = asyncio.run(run_fault(stack, postgres_down(5.0, "fast")))
    assert_nothing_broken(report)
    assert report["http_5xx"].get("503 unavailable", 0) > 0, report  # the outage was felt, and said so
    assert_no_tracebacks(stack)


def test_postgres_crashed_for_five_seconds(stack: FaultStack) -> None:
    report = asyncio.run(run_fault(stack, postgres_down(5.0, "immediate")))
    assert_nothing_broken(report)
    assert report["http_5xx"].get("503 unavailable", 0) > 0, report
    assert_no_tracebacks(stack)


def test_postgres_hung_for_eight_seconds(stack: FaultStack) -> None:
    """PostgreSQL stops answering (SIGSTOP on the server and its backends) rather than refusing: longer than a
    statement may go unanswered, so requests are told (503), not held for as long as the outage lasts."""
    report = asyncio.run(run_fault(stack, postgres_hung(8.0)))
    assert_nothing_broken(report)
    assert report["http_5xx"].get("503 unavailable", 0) > 0, report
    assert_no_tracebacks(stack)


def test_redis_restarted_empty_with_clients_connected(stack: FaultStack) -> None:
    report = asyncio.run(run_fault(stack, redis_down(5.0)))
    assert_nothing_broken(report)  # jobs_given_back == 0: no courier judged gone because Redis forgot it
    assert report["ping_errors"].get("unavailable", 0) > 0, report  # couriers really could not ping
    assert report["disconnects"] == 0, report  # nobody had to reconnect to get their events
    assert_no_tracebacks(stack)


def test_redis_hung_with_clients_connected(stack: FaultStack) -> None:
    """Redis stops answering (SIGSTOP) rather than refusing: writes, pings and rounds must not wait on it."""
    report = asyncio.run(run_fault(stack, redis_hung(5.0)))
    assert_nothing_broken(report)
    assert report["ping_errors"].get("unavailable", 0) > 0, report  # pings were refused, not held
    assert report["disconnects"] == 0, report
    assert_no_tracebacks(stack)


def test_node_killed_under_load(stack: FaultStack) -> None:
    report = asyncio.run(run_fault(stack, node_killed(2.0)))
    assert_nothing_broken(report)
    assert report["disconnects"] > 0, report  # apps on the killed node reconnected elsewhere and resumed
    assert report["node_ready_s"] is not None, report


def test_lines_locked_in_random_order_never_deadlock(stack: FaultStack) -> None:
    report = asyncio.run(run_lock_order(stack, orders=300, in_flight=32, lines=4))
    assert report["statuses"] == {"201": 300}, report
    assert report["deadlocks"] == 0, report
    assert report["stock_lines_off"] == 0, report
    assert set(report["cancels"]) <= {"200", "409 nothing_to_cancel"}, report


def test_quiet_redis_restart_then_one_order_reaches_connected_clients(stack: FaultStack) -> None:
    """No traffic while Redis restarts (every pooled connection goes stale unnoticed), then one order: the
    resident and the shop, connected throughout, both hear of it, without reconnecting."""

    async def scenario() -> tuple[list[str], list[str], int, int]:
        async with aiohttp.ClientSession() as session:
            nodes = Nodes(stack.urls[:1])
            resident = App(nodes, session, Role.RESIDENT, stack.city.residents[0])
            shops = [App(nodes, session, Role.SHOP, s[0]) for s in stack.city.shops]
            apps = [resident, *shops]
            tasks = [asyncio.create_task(a.run()) for a in apps]
            await asyncio.wait_for(asyncio.gather(*(a.connected.wait() for a in apps)), 30 * SECOND)
            await asyncio.to_thread(redis_down(2.0).inject, stack)
            await asyncio.sleep(3.0)  # Redis is back; nothing has used it since
            seen = {a.subject: a.stream.last_seq for a in apps}
            _, lat, lng = stack.city.shops[0]
            body = {"dropoff": {"lat": lat, "lng": lng}, "items": [{"sku": "tea", "qty": 1}]}
            headers = {"Authorization": f"Bearer {token(Role.RESIDENT, resident.subject)}"}
            async with session.post(stack.urls[0] + "/v1/orders", json=body, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                order = await resp.json()
            offered = {j["shop_id"] for j in order["jobs"]}
            await resident.reached(seen[resident.subject] + 1, 10.0)
            for shop in shops:
                if shop.subject in offered:
                    await shop.reached(seen[shop.subject] + 1, 10.0)
            heard = [a.subject for a in apps if a.stream.last_seq > seen[a.subject]]
            disconnects = sum(a.stream.disconnects for a in apps)
            for a in apps:
                await a.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            return heard, sorted(offered), disconnects, len(apps)

    heard, offered, disconnects, _ = asyncio.run(scenario())
    assert stack.city.residents[0] in heard
    assert set(offered) <= set(heard), (offered, heard)
    assert disconnects == 0
