"""A shop's accept and ready, written in one statement with the order's state and the events."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from dispatch.core.jobs import JobAction, JobState, JobTransition
from dispatch.outbox import NewEvent
from dispatch.services import changes
from tests.orders.helpers import AuthFn, Client, add_resident, add_shop, place, recv, recv_event


async def test_answers_and_events_are_the_rows_as_read_back(client: Client, auth: AuthFn) -> None:
    """Accept and ready answer with, and tell the resident, the rows a read gives afterwards."""
    admin = auth("admin")
    shop = await add_shop(client, admin, {"bread": 5})
    other = await add_shop(client, admin, {"jam": 5}, offset_deg=0.004)
    resident = await add_resident(client, admin)
    as_resident, as_shop = auth("resident", resident), auth("shop", shop)
    async with client.ws_connect("/v1/ws", headers=as_resident) as ws:
        await recv(ws)
        status, order = await place(
            client, as_resident, [{"sku": "bread", "qty": 2}, {"sku": "jam", "qty": 1}], fulfilment="pickup"
        )
        assert status == 201, order
        await recv_event(ws, "order.placed")
        job_id = next(j["id"] for j in order["jobs"] if j["shop_id"] == shop)
        r = await client.post(f"/v1/jobs/{job_id}/accept", json={"prep_minutes": 12}, headers=as_shop)
        assert r.status == 200
        accepted = await r.json()
        assert accepted["state"] == "accepted" and accepted["prep_minutes"] == 12
        seen = await (await client.get(f"/v1/jobs/{job_id}", headers=as_shop)).json()
        assert {k: seen[k] for k in accepted} == accepted
        updated = await recv_event(ws, "order.updated")
        read = await (await client.get(f"/v1/orders/{order['id']}", headers=as_resident)).json()
        assert updated["data"] == read
        assert read["state"] == "placed"  # one shop of two has accepted

        other_job = next(j["id"] for j in order["jobs"] if j["shop_id"] == other)
        r = await client.post(
            f"/v1/jobs/{other_job}/accept", json={"prep_minutes": 3}, headers=auth("shop", other)
        )
        assert r.status == 200
        for holder, job in ((shop, job_id), (other, other_job)):
            r = await client.post(f"/v1/jobs/{job}/ready", headers=auth("shop", holder))
            assert r.status == 200
            ready = await r.json()
            seen = await (await client.get(f"/v1/jobs/{job}", headers=auth("shop", holder))).json()
            assert {k: seen[k] for k in ready} == ready
        pickup = await recv_event(ws, "order.ready_for_pickup")
        read = await (await client.get(f"/v1/orders/{order['id']}", headers=as_resident)).json()
        assert pickup["data"] == read and read["state"] == "ready"


async def test_a_job_no_longer_in_the_decided_state_changes_nothing(
    client: Client, db: asyncpg.Connection, conn: asyncpg.Connection, auth: AuthFn
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"bread": 5})
    resident = await add_resident(client, admin)
    status, order = await place(client, auth("resident", resident), [{"sku": "bread", "qty": 1}])
    assert status == 201
    job_id = order["jobs"][0]["id"]
    before = await db.fetchval("SELECT last_seq FROM recipient_seqs WHERE recipient = $1", shop)
    now = datetime.now(UTC)
    # Decided on an offer that is no longer one (here: the job is `offered`, the decision wants `ready`).
    stale = JobTransition(job_id, JobAction.ACCEPT, (JobState.READY,), JobState.ACCEPTED, now)
    row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order["id"])
    assert row is not None
    after = changes.row_after(row, state="accepted", total_cents=1, updated_at=now)
    shown = {**order["jobs"][0], "fulfilment": "delivery", "slot": None, "note": None}
    event = NewEvent(shop, "job.accepted", shown)
    async with conn.transaction():
        outcome = await changes.apply_transition(conn, stale, {"prep_minutes": 5}, after, [event], now)
    assert outcome is None
    assert await db.fetchval("SELECT state FROM jobs WHERE id = $1", job_id) == "offered"
    assert await db.fetchval("SELECT state FROM orders WHERE id = $1", order["id"]) == "placed"
    assert await db.fetchval("SELECT last_seq FROM recipient_seqs WHERE recipient = $1", shop) == before
    assert await db.fetchval("SELECT count(*) FROM events WHERE recipient = $1", shop) == before
