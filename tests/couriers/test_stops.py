"""Stops that prove where and when, tried as a hand-written client would: an arrival or a pickup needs the
courier's last trusted position at the stop (DISPATCH_ARRIVAL_RADIUS_M, 100 m), a courier collects only goods
the shop marked ready, the drop-off code stays the proof at the door, and an admin may stand in for any proof,
which the stop then shows."""

from __future__ import annotations

from typing import Any

import asyncpg
from redis.asyncio import Redis

from dispatch.clock import ManualClock
from dispatch.services.locations import loc_key
from geo import destination
from tests.couriers.helpers import (
    DOOR,
    NEAR_SHOP,
    SHOP_AT,
    AuthFn,
    Client,
    code_of,
    command,
    ping,
    post,
    recv,
    trip,
)
from tests.orders.helpers import recv_event


async def state_of(db: asyncpg.Connection, order_id: str) -> list[Any]:
    """Everything a stop command could change about an order: its state, its jobs, its stops."""
    return [
        await db.fetchrow("SELECT state, total_cents FROM orders WHERE id = $1", order_id),
        await db.fetch("SELECT id, state, ready_at FROM jobs WHERE order_id = $1 ORDER BY id", order_id),
        await db.fetch("SELECT * FROM stops ORDER BY id"),
    ]


async def test_arrival_and_pickup_from_a_kilometre_away_are_refused_and_change_nothing(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    t = await trip(client, auth, clock)
    me = auth("courier", t.courier)
    clock.advance(60)
    far = destination(*SHOP_AT, 180.0, 1236.0)  # 1,236 m south of the shop, reached at 20 m/s: trusted
    assert (await ping(client, auth, t.courier, far, clock.now()))["flagged"] is False
    before = await state_of(db, t.order["id"])
    for step in ("arrived", "completed"):
        status, body = await post(client, f"/v1/stops/{t.pickup['id']}/{step}", me)
        assert (status, body["error"]["code"]) == (409, "too_far"), body
        details = body["error"]["details"]
        assert (round(details["distance_m"]), details["radius_m"], details["accuracy_m"]) == (1236, 100, 5)
    async with client.ws_connect("/v1/ws", headers=me) as ws:
        await recv(ws)
        reply, _ = await command(ws, "stop.arrived", stop_id=t.pickup["id"])
        assert reply["error"]["code"] == "too_far"
        # A jump to the shop a second later is flagged: the last trusted position is still a kilometre away.
        clock.advance(1)
        assert (await ping(client, auth, t.courier, SHOP_AT, clock.now()))["flagged"] is True
        reply, _ = await command(ws, "stop.completed", stop_id=t.pickup["id"])
        assert reply["error"]["code"] == "too_far"
    assert await state_of(db, t.order["id"]) == before

    clock.advance(300)  # driven there
    await ping(client, auth, t.courier, NEAR_SHOP, clock.now())
    status, body = await post(client, f"/v1/stops/{t.pickup['id']}/arrived", me)
    assert (status, body["stops"][0]["arrival_proof"]) == (200, "position")
    status, body = await post(client, f"/v1/stops/{t.pickup['id']}/completed", me)
    assert (status, body["stops"][0]["proof"]) == (200, "courier")

    # The door wants the courier there to arrive; the resident's code alone proves the hand-over.
    status, body = await post(client, f"/v1/stops/{t.dropoff['id']}/arrived", me)
    assert (status, body["error"]["code"]) == (409, "too_far")
    code = await code_of(client, auth, t)
    status, body = await post(client, f"/v1/stops/{t.dropoff['id']}/completed", me, {"code": code})
    assert (status, body["stops"][1]["proof"], body["stops"][1]["arrival_proof"]) == (200, "code", None)


async def test_a_courier_without_a_recent_trusted_position_is_refused(
    client: Client, auth: AuthFn, clock: ManualClock, redis: Redis
) -> None:
    t = await trip(client, auth, clock)
    me = auth("courier", t.courier)
    clock.advance(40)  # the courier's last ping was 45 s ago (DISPATCH_COURIER_STALE_S: 30)
    status, body = await post(client, f"/v1/stops/{t.pickup['id']}/arrived", me)
    assert (status, body["error"]["code"]) == (409, "position_stale")
    assert body["error"]["details"] == {"age_s": 45.0, "stale_s": 30.0}
    await redis.delete(loc_key(t.courier))  # Redis lost it, say
    status, body = await post(client, f"/v1/stops/{t.pickup['id']}/completed", me)
    assert (status, body["error"]["code"]) == (409, "position_unknown")
    await ping(client, auth, t.courier, NEAR_SHOP, clock.now())
    assert (await post(client, f"/v1/stops/{t.pickup['id']}/arrived", me))[0] == 200


async def test_a_courier_collects_only_goods_the_shop_marked_ready(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    t = await trip(client, auth, clock, ready=False)
    me, job_id = auth("courier", t.courier), t.order["jobs"][0]["id"]
    status, body = await post(client, f"/v1/stops/{t.pickup['id']}/completed", me)
    assert (status, body["error"]["code"]) == (409, "job_not_ready")
    assert body["error"]["details"] == {"job_ids": [job_id]}
    assert await db.fetchval("SELECT state FROM jobs WHERE id = $1", job_id) == "accepted"
    async with client.ws_connect("/v1/ws", headers=auth("shop", t.shop)) as ws:
        await recv(ws)
        reply, _ = await command(ws, "job.ready", job_id=job_id)
        assert reply["ok"] is True, reply
        assert (await post(client, f"/v1/stops/{t.pickup['id']}/completed", me))[0] == 200
        assert (await recv_event(ws, "job.picked_up"))["data"]["state"] == "picked_up"
    r = await client.get("/v1/events?after_seq=0", headers=auth("shop", t.shop))
    kinds = [e["type"] for e in (await r.json())["events"]]
    assert kinds == ["job.accepted", "job.ready", "job.picked_up"]


async def test_an_admin_stands_in_for_the_proof_and_the_stop_says_so(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    t = await trip(client, auth, clock, ready=False)
    admin, me = auth("admin"), auth("courier", t.courier)
    clock.advance(60)
    await ping(client, auth, t.courier, destination(*SHOP_AT, 180.0, 1498.0), clock.now())
    path = f"/v1/stops/{t.pickup['id']}/override"
    assert (await post(client, path, me, {"step": "arrived"}))[0] == 403
    status, body = await post(client, path, admin, {"step": "landed"})
    assert (status, body["error"]["details"][0]["path"]) == (422, ["step"])
    status, body = await post(client, "/v1/stops/stp_aaaaaaaaaaaaaaaa/override", admin, {"step": "arrived"})
    assert (status, body["error"]["code"]) == (404, "stop_not_found")
    status, body = await post(client, f"/v1/stops/{t.dropoff['id']}/override", admin, {"step": "arrived"})
    assert (status, body["error"]["code"]) == (409, "stop_out_of_order")  # an admin keeps the order too

    status, body = await post(client, path, admin, {"step": "arrived"})
    assert (status, body["stops"][0]["state"], body["stops"][0]["arrival_proof"]) == (200, "arrived", "admin")
    status, body = await post(client, path, admin, {"step": "completed"})  # not ready, nobody at the counter
    assert (status, body["stops"][0]["proof"]) == (200, "admin")
    job = await db.fetchrow("SELECT state, ready_at FROM jobs WHERE id = $1", t.order["jobs"][0]["id"])
    assert job is not None and job["state"] == "picked_up" and job["ready_at"] is not None
    status, body = await post(client, f"/v1/stops/{t.dropoff['id']}/override", admin, {"step": "completed"})
    assert (status, body["state"], body["stops"][1]["proof"]) == (200, "completed", "admin")  # no code
    assert await db.fetchval("SELECT state FROM orders WHERE id = $1", t.order["id"]) == "delivered"
    r = await client.get(f"/v1/orders/{t.order['id']}/delivery", headers=auth("resident", t.resident))
    assert (await r.json())["drop_offs"][0]["proof"] == "admin"


async def test_the_courier_is_told_of_an_admins_step(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    t = await trip(client, auth, clock)
    async with client.ws_connect("/v1/ws", headers=auth("courier", t.courier)) as ws:
        await recv(ws)
        await post(client, f"/v1/stops/{t.pickup['id']}/override", auth("admin"), {"step": "completed"})
        updated = await recv_event(ws, "route.updated")
    assert [(s["state"], s["proof"]) for s in updated["data"]["stops"]] == [
        ("completed", "admin"),
        ("pending", None),
    ]
    assert (
        updated["data"]["stops"][1]["location"]["lat"],
        updated["data"]["stops"][1]["location"]["lng"],
    ) == DOOR
