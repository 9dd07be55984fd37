"""An order's writes in one statement: the answer is what was written, and it is all or nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from dispatch import db as dbmod
from dispatch.clock import ManualClock
from dispatch.core.matching import PlannedJob, PlannedLine
from dispatch.db import OutcomeUnknown
from dispatch.outbox import NewEvent
from dispatch.services import placing
from dispatch.services.candidates import ShopInfo
from dispatch.services.offers import job_rows
from dispatch.services.records import order_json
from tests.orders.helpers import DOOR, AuthFn, Client, add_resident, add_shop, place, stock_of
from tests.timing import SECOND


async def test_the_answer_is_the_order_as_read_back(client: Client, clock: ManualClock, auth: AuthFn) -> None:
    """The answer and the offers are built before the write; they must be what a read of it gives."""
    admin = auth("admin")
    a = await add_shop(client, admin, {"bread": 3}, offset_deg=0.001)
    b = await add_shop(client, admin, {"apples": 3}, offset_deg=0.003, auto_accept=True, prep_minutes=9)
    resident = await add_resident(client, admin)
    start = (clock.now() + timedelta(hours=3)).astimezone(timezone(timedelta(hours=2)))
    timing = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    status, order = await place(
        client,
        auth("resident", resident),
        [{"sku": "bread", "qty": 1, "shop_id": a}, {"sku": "apples", "qty": 2}],
        timing=timing,
        note="ring twice",
    )
    assert status == 201, order
    assert {j["state"] for j in order["jobs"]} == {"offered", "accepted"}
    r = await client.get(f"/v1/orders/{order['id']}", headers=auth("resident", resident))
    assert await r.json() == order
    for job in order["jobs"]:
        r = await client.get(f"/v1/jobs/{job['id']}", headers=auth("shop", job["shop_id"]))
        seen = await r.json()
        assert {k: seen[k] for k in job} == job
    assert {j["shop_id"] for j in order["jobs"]} == {a, b}


async def test_racing_residents_never_oversell_and_orders_are_whole(
    client: Client, db: asyncpg.Connection, auth: AuthFn
) -> None:
    """Twenty residents at once for two items of which the shop has 10 and 4: at most four orders, each
    with both items; the stock is what the placed orders took, never less than zero."""
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 10, "eggs": 4})
    residents = [await add_resident(client, admin) for _ in range(20)]
    results = await asyncio.gather(
        *(
            place(client, auth("resident", r), [{"sku": "milk", "qty": 2}, {"sku": "eggs", "qty": 1}])
            for r in residents
        )
    )
    placed = [body for status, body in results if status == 201]
    refused = {body["error"]["code"] for status, body in results if status != 201}
    assert len(placed) == 4, [status for status, _ in results]
    assert refused <= {"items_unavailable", "stock_contention"}, refused
    assert await stock_of(db, shop, "milk") == 2
    assert await stock_of(db, shop, "eggs") == 0
    assert await db.fetchval("SELECT count(*) FROM orders") == 4
    assert await db.fetchval("SELECT count(*) FROM jobs") == 4
    offered = await db.fetch("SELECT seq FROM events WHERE recipient = $1 ORDER BY seq", shop)
    assert [r["seq"] for r in offered] == [1, 2, 3, 4]  # one offer per placed order, gapless


async def test_a_retry_after_the_last_unit_gets_the_first_answer(
    client: Client, db: asyncpg.Connection, auth: AuthFn
) -> None:
    """The first attempt took the last unit; its retry cannot be planned again, yet is answered."""
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 1})
    resident = await add_resident(client, admin)
    headers = {**auth("resident", resident), "Idempotency-Key": "tap-9"}
    body = {"dropoff": {"lat": DOOR[0], "lng": DOOR[1]}, "items": [{"sku": "milk", "qty": 1}]}
    first = await client.post("/v1/orders", json=body, headers=headers)
    assert first.status == 201
    again = await client.post("/v1/orders", json=body, headers=headers)
    assert again.status == 200
    assert await again.json() == await first.json()
    assert await stock_of(db, shop, "milk") == 0
    other = await client.post(
        "/v1/orders", json={**body, "items": [{"sku": "milk", "qty": 2}]}, headers=headers
    )
    assert other.status == 409
    assert (await other.json())["error"]["code"] == "idempotency_key_reused"


async def _rows(shop: str, resident: str, qty: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    now = datetime.now(UTC)
    fields = {
        "fulfilment": "delivery",
        "drop_lat": DOOR[0],
        "drop_lng": DOOR[1],
        "slot_start": None,
        "slot_end": None,
        "note": None,
        "items": [{"sku": "milk", "qty": qty, "shop_id": None}],
        "warning": None,
    }
    order = placing.order_row("ord_test", resident, fields, "placed", 100 * qty, now)
    planned = [PlannedJob(shop, (PlannedLine("milk", qty, 100),))]
    jobs = job_rows(order["id"], planned, {shop: ShopInfo(shop, *DOOR, 5, False)}, set(), now, 60)
    return order, jobs


async def _nothing_written(db: asyncpg.Connection, shop: str, stock: int) -> None:
    assert await stock_of(db, shop, "milk") == stock
    for table in ("orders", "jobs", "events", "idempotency_keys"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_a_line_short_of_stock_writes_nothing(
    client: Client, db: asyncpg.Connection, conn: asyncpg.Connection, auth: AuthFn
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 2, "eggs": 5})
    resident = await add_resident(client, admin)
    order, jobs = await _rows(shop, resident, 3)
    events = [NewEvent(resident, "order.placed", order_json(order, jobs))]
    claim = placing.Claim("k", "h", {"id": order["id"]})
    # One line short, one line fine: neither is taken, nor is the key.
    reserve = {(shop, "milk"): 3, (shop, "eggs"): 1}
    outcome = await placing.write_placement(conn, order, jobs, reserve, events, claim)
    assert isinstance(outcome, placing.Short)
    await _nothing_written(db, shop, 2)
    assert await stock_of(db, shop, "eggs") == 5
    # An item gone from the catalogue since it was read is short too.
    outcome = await placing.write_placement(conn, order, jobs, {(shop, "gone"): 1}, events, None)
    assert isinstance(outcome, placing.Short)
    await _nothing_written(db, shop, 2)


async def test_a_key_taken_meanwhile_writes_nothing(
    client: Client, db: asyncpg.Connection, conn: asyncpg.Connection, auth: AuthFn
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 5})
    resident = await add_resident(client, admin)
    order, jobs = await _rows(shop, resident, 1)
    events = [NewEvent(resident, "order.placed", order_json(order, jobs))]
    await db.execute(
        """INSERT INTO idempotency_keys (subject, key, request_hash, status, response, created_at)
           VALUES ($1, 'k', 'h', 201, '{}', now())""",
        resident,
    )
    claim = placing.Claim("k", "h", {"id": order["id"]})
    outcome = await placing.write_placement(conn, order, jobs, {(shop, "milk"): 1}, events, claim)
    assert isinstance(outcome, placing.KeyTaken)
    assert await stock_of(db, shop, "milk") == 5
    for table in ("orders", "jobs", "events"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    outcome = await placing.write_placement(
        conn, order, jobs, {(shop, "milk"): 1}, events, placing.Claim("k2", "h", {"id": order["id"]})
    )
    assert isinstance(outcome, placing.Written)
    assert [(e.recipient, e.seq) for e in outcome.events] == [(resident, 1)]
    assert await stock_of(db, shop, "milk") == 4
    assert await db.fetchval("SELECT response FROM idempotency_keys WHERE key = 'k2'") == (
        f'{{"id": "{order["id"]}"}}'
    )


async def test_a_link_lost_during_the_write_is_an_unknown_outcome(
    client: Client, db: asyncpg.Connection, database_url: str, auth: AuthFn
) -> None:
    """The write is its own transaction: lost while it runs, it may have committed, so it is never
    retried by the server (503 outcome_unknown, the client retries with its key)."""
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 5})
    resident = await add_resident(client, admin)
    order, jobs = await _rows(shop, resident, 1)
    events = [NewEvent(resident, "order.placed", order_json(order, jobs))]
    writer = await dbmod.connect(database_url)
    try:
        # Hold the stock line so the write is surely in flight when its session is killed.
        async with db.transaction():
            await db.execute("SELECT 1 FROM catalogue_items WHERE shop_id = $1 FOR UPDATE", shop)
            write = asyncio.ensure_future(
                placing.write_placement(writer, order, jobs, {(shop, "milk"): 1}, events, None)
            )
            pid = writer.get_server_pid()
            for _ in range(100):
                waiting = await db.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
                )
                if waiting:
                    break
                await asyncio.sleep(0.05 * SECOND)
            assert waiting, "the write never reached the locked line"
            await db.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(OutcomeUnknown) as caught:
                await write
        assert caught.value.code == "outcome_unknown" and caught.value.status == 503
        await _nothing_written(db, shop, 5)  # here it had not: killed before it could commit
    finally:
        await writer.close()
