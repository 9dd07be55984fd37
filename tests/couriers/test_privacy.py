"""Location privacy: a resident sees the courier only from the pickup of its order until its delivery (at
most once a second), a shop only while the courier heads to it. Absence is shown with a sentinel: the next
message after a ping is a durable event published later, not a position."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from dispatch.clock import ManualClock
from tests.couriers.helpers import (
    DOOR,
    NEAR_SHOP,
    AuthFn,
    Client,
    Trip,
    add_resident,
    code_of,
    ping,
    place,
    post,
    recv,
    trip,
)
from tests.timing import SECOND
from websocket.protocol import LIVE_CHANNEL

NOISE = {"reply", "order.eta", "route.updated"}  # ETA pushes may come at any time


async def next_of(ws: Any) -> dict[str, Any]:
    for _ in range(50):
        msg = await recv(ws)
        if msg.get("type") not in NOISE:
            return msg
    raise AssertionError("nothing but noise")


async def location(client: Client, auth: AuthFn, order_id: str, resident: str) -> tuple[int, Any]:
    r = await client.get(f"/v1/orders/{order_id}/courier-location", headers=auth("resident", resident))
    return r.status, await r.json()


async def test_resident_sees_the_courier_from_pickup_to_delivery_only(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    t = await trip(client, auth, clock)
    me, res = auth("courier", t.courier), auth("resident", t.resident)
    status, body = await location(client, auth, t.order["id"], t.resident)
    assert (status, body["error"]["code"]) == (403, "location_not_shared")
    street = (NEAR_SHOP[0] - 0.0002, NEAR_SHOP[1])  # 22 m on: a plausible move in a second
    async with client.ws_connect("/v1/ws", headers=res) as ws:
        await recv(ws)
        # Before the pickup: no position, the next thing the resident hears is the pickup itself.
        clock.advance(1)
        assert (await ping(client, auth, t.courier, NEAR_SHOP, clock.now()))["flagged"] is False
        assert (await post(client, f"/v1/stops/{t.pickup['id']}/completed", me))[0] == 200
        assert (await next_of(ws))["type"] == "order.updated"

        clock.advance(1)
        await ping(client, auth, t.courier, street, clock.now())
        shared = await next_of(ws)
        assert shared["type"] == "courier.position"
        assert "seq" not in shared  # volatile: not stored, not replayed
        assert (shared["data"]["order_id"], shared["data"]["lat"]) == (t.order["id"], street[0])
        status, body = await location(client, auth, t.order["id"], t.resident)
        assert status == 200
        assert (body["couriers"][0]["lat"], body["couriers"][0]["stale"]) == (street[0], False)

        # At most once a second: a ping half a second later is not shared, the next one is.
        await ping(
            client, auth, t.courier, (street[0] - 0.0001, street[1]), clock.now() + timedelta(seconds=0.5)
        )
        await ping(
            client, auth, t.courier, (street[0] - 0.0002, street[1]), clock.now() + timedelta(seconds=1)
        )
        assert (await next_of(ws))["data"]["lat"] == street[0] - 0.0002

        # At delivery, sharing ends at once.
        code = await code_of(client, auth, t)
        assert (await post(client, f"/v1/stops/{t.dropoff['id']}/completed", me, {"code": code}))[0] == 200
        delivered = await next_of(ws)
        assert (delivered["type"], delivered["data"]["state"]) == ("order.updated", "delivered")
        clock.advance(60)
        assert (await ping(client, auth, t.courier, DOOR, clock.now()))["flagged"] is False
        status, _ = await place(client, res, [{"sku": "bread", "qty": 1}])
        assert status == 201
        assert (await next_of(ws))["type"] == "order.placed"
    status, body = await location(client, auth, t.order["id"], t.resident)
    assert (status, body["error"]["code"]) == (403, "location_not_shared")


async def test_shop_sees_the_courier_only_on_its_way_to_the_shop(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    t = await trip(client, auth, clock)
    async with client.ws_connect("/v1/ws", headers=auth("shop", t.shop)) as ws:
        await recv(ws)
        clock.advance(1)
        await ping(client, auth, t.courier, NEAR_SHOP, clock.now())
        shared = await next_of(ws)
        assert (shared["type"], shared["data"]["stop_id"]) == ("courier.position", t.pickup["id"])
        assert (await post(client, f"/v1/stops/{t.pickup['id']}/completed", auth("courier", t.courier)))[
            0
        ] == 200
        assert (await next_of(ws))["type"] == "job.picked_up"
        clock.advance(60)
        assert (await ping(client, auth, t.courier, DOOR, clock.now()))["flagged"] is False
        status, _ = await place(client, auth("resident", t.resident), [{"sku": "bread", "qty": 1}])
        assert status == 201
        assert (await next_of(ws))["type"] == "job.accepted"  # the shop's next message: not a position


async def test_no_one_else_sees_the_courier(client: Client, auth: AuthFn, clock: ManualClock) -> None:
    t = await trip(client, auth, clock)
    assert (await post(client, f"/v1/stops/{t.pickup['id']}/completed", auth("courier", t.courier)))[0] == 200
    stranger = await add_resident(client, auth("admin"))
    status, body = await location(client, auth, t.order["id"], stranger)
    assert (status, body["error"]["code"]) == (404, "order_not_found")
    r = await client.get(f"/v1/orders/{t.order['id']}/delivery", headers=auth("resident", stranger))
    assert r.status == 404
    r = await client.get(f"/v1/orders/{t.order['id']}/courier-location", headers=auth("shop", t.shop))
    assert r.status == 403
    assert (await location(client, auth, t.order["id"], t.resident))[0] == 200


async def _restart_empty(redis: Any) -> None:
    """What a Redis restarted without persistence looks like to the server: every key gone and every
    connection dropped (the subscriber's included)."""
    await redis.flushall()
    await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")


async def _restarted_then_restored(
    client: Client, auth: AuthFn, clock: ManualClock, redis: Any, t: Trip
) -> None:
    """Redis restarts empty; the client reconnects by itself; the courier's next ping finds Redis without
    its state (that position reaches nobody) and the node puts back, from PostgreSQL, who sees the courier.
    Returns once that is done and the node's subscriber is back on the live channel: positions are
    published, not stored, so one sent while nobody listens is gone by design."""
    await _restart_empty(redis)
    clock.advance(2)
    await ping(client, auth, t.courier, NEAR_SHOP, clock.now())
    for _ in range(200):
        restored = await redis.exists(f"courier:aud:{t.courier}", f"courier:plan:{t.courier}") == 2
        if restored and dict(await redis.pubsub_numsub(LIVE_CHANNEL)).get(LIVE_CHANNEL.encode()):
            return
        await asyncio.sleep(0.05 * SECOND)
    raise AssertionError("the courier's shares and plan were not restored, or the node did not resubscribe")


async def test_shares_come_back_after_redis_restarts_empty_and_only_those_still_due(
    client: Client, auth: AuthFn, clock: ManualClock, redis: Any
) -> None:
    """Who sees a courier lives in Redis; PostgreSQL knows who should. A Redis that comes back empty must not
    leave a shop or a resident without the courier's position, nor show it to anyone no longer due it."""
    t = await trip(client, auth, clock)
    me = auth("courier", t.courier)
    street = (NEAR_SHOP[0] - 0.0002, NEAR_SHOP[1])
    async with (
        client.ws_connect("/v1/ws", headers=auth("shop", t.shop)) as shop,
        client.ws_connect("/v1/ws", headers=auth("resident", t.resident)) as resident,
    ):
        await recv(shop)
        await recv(resident)
        # On its way to the shop: the shop sees it again.
        await _restarted_then_restored(client, auth, clock, redis, t)
        clock.advance(2)
        await ping(client, auth, t.courier, NEAR_SHOP, clock.now())
        shared = await next_of(shop)
        assert (shared["type"], shared["data"]["stop_id"]) == ("courier.position", t.pickup["id"])

        assert (await post(client, f"/v1/stops/{t.pickup['id']}/completed", me))[0] == 200
        assert (await next_of(shop))["type"] == "job.picked_up"
        # Nothing was shared with the resident before the pickup: its next message is the pickup.
        assert (await next_of(resident))["type"] == "order.updated"

        # On its way to the door: the resident sees it again, the shop no more.
        await _restarted_then_restored(client, auth, clock, redis, t)
        clock.advance(2)
        await ping(client, auth, t.courier, street, clock.now())
        shared = await next_of(resident)
        assert (shared["type"], shared["data"]["order_id"]) == ("courier.position", t.order["id"])
        assert shared["data"]["lat"] == street[0]
        status, _ = await place(client, auth("resident", t.resident), [{"sku": "bread", "qty": 1}])
        assert status == 201
        assert (await next_of(shop))["type"] == "job.accepted"  # the shop's next message: not a position
