"""Stops: in order, pickups by the courier or the shop's hand-over, drop-offs proven by the resident's code
(wrong codes refused, five lock the stop) or by the courier at the door; bad commands change nothing."""

from __future__ import annotations

import asyncpg

from dispatch.clock import ManualClock
from tests.couriers.helpers import (
    DOOR,
    AuthFn,
    Client,
    add_resident,
    add_shop,
    code_of,
    command,
    ping,
    place,
    post,
    ready_courier,
    recv,
    trip,
)
from tests.orders.helpers import recv_event


async def order_state(db: asyncpg.Connection, order_id: str) -> tuple[str, list[str]]:
    state = await db.fetchval("SELECT state FROM orders WHERE id = $1", order_id)
    jobs = await db.fetch("SELECT state FROM jobs WHERE order_id = $1 ORDER BY id", order_id)
    return state, [j["state"] for j in jobs]


async def test_stops_in_order_pickup_then_delivery_with_the_code(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    t = await trip(client, auth, clock)
    me = auth("courier", t.courier)
    status, body = await post(client, f"/v1/stops/{t.dropoff['id']}/completed", me, {"code": "0000"})
    assert (status, body["error"]["code"]) == (409, "stop_out_of_order")
    assert body["error"]["details"] == {"next_stop_id": t.pickup["id"]}
    assert await db.fetchval("SELECT wrong_codes FROM stops WHERE id = $1", t.dropoff["id"]) == 0
    async with (
        client.ws_connect("/v1/ws", headers=me) as ws,
        client.ws_connect("/v1/ws", headers=auth("shop", t.shop)) as shop_ws,
        client.ws_connect("/v1/ws", headers=auth("resident", t.resident)) as res_ws,
    ):
        for sock in (ws, shop_ws, res_ws):
            await recv(sock)
        reply, seen = await command(ws, "stop.arrived", stop_id=t.pickup["id"])
        assert reply["data"]["stops"][0]["state"] == "arrived"
        reply, _ = await command(ws, "stop.arrived", stop_id=t.pickup["id"])
        assert reply["error"]["code"] == "already_arrived"
        reply, more = await command(ws, "stop.completed", stop_id=t.pickup["id"])
        assert reply["ok"] is True, reply
        seen += more
        assert [s["state"] for s in reply["data"]["stops"]] == ["completed", "pending"]
        picked = await recv_event(shop_ws, "job.picked_up")
        assert picked["data"]["id"] == t.order["jobs"][0]["id"]
        assert "code" not in picked["data"] and "delivery_code" not in picked["data"]
        assert (await recv_event(res_ws, "order.updated"))["data"]["state"] == "in_delivery"
        updates = [m["data"] for m in seen if m.get("type") == "route.updated"]
        assert [u["stops"][0]["state"] for u in updates] == ["arrived", "completed"]

        reply, _ = await command(ws, "stop.completed", stop_id=t.dropoff["id"])
        assert reply["error"]["code"] == "code_required"
        code = await code_of(client, auth, t)
        wrong = f"{(int(code) + 1) % 10_000:04d}"
        reply, _ = await command(ws, "stop.completed", stop_id=t.dropoff["id"], code=wrong)
        assert (reply["error"]["code"], reply["error"]["details"]) == ("wrong_code", {"attempts_left": 4})
        assert await order_state(db, t.order["id"]) == ("in_delivery", ["picked_up"])
        reply, _ = await command(ws, "stop.completed", stop_id=t.dropoff["id"], code=code)
        assert reply["ok"] is True, reply
        assert reply["data"]["state"] == "completed"
        assert reply["data"]["stops"][1]["proof"] == "code"
        assert (await recv_event(res_ws, "order.updated"))["data"]["state"] == "delivered"
        reply, _ = await command(ws, "stop.completed", stop_id=t.dropoff["id"], code=code)
        assert reply["error"]["code"] == "stop_already_completed"
    assert await order_state(db, t.order["id"]) == ("delivered", ["delivered"])


async def test_five_wrong_codes_lock_the_stop_until_an_admin_unlocks_it(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    t = await trip(client, auth, clock)
    me = auth("courier", t.courier)
    assert (await post(client, f"/v1/stops/{t.pickup['id']}/completed", me))[0] == 200
    code = await code_of(client, auth, t)
    wrong = f"{(int(code) + 5) % 10_000:04d}"
    path = f"/v1/stops/{t.dropoff['id']}/completed"
    answers = [await post(client, path, me, {"code": wrong}) for _ in range(6)]
    assert [(s, b["error"]["code"]) for s, b in answers] == [(409, "wrong_code")] * 4 + [
        (409, "stop_locked")
    ] * 2
    assert [b["error"]["details"] for _, b in answers[:4]] == [{"attempts_left": n} for n in (4, 3, 2, 1)]
    status, body = await post(client, path, me, {"code": code})
    assert (status, body["error"]["code"]) == (409, "stop_locked")
    assert await order_state(db, t.order["id"]) == ("in_delivery", ["picked_up"])
    assert (await post(client, f"/v1/stops/{t.dropoff['id']}/unlock", me))[0] == 403
    status, body = await post(client, f"/v1/stops/{t.dropoff['id']}/unlock", auth("admin"))
    assert status == 200
    assert body["stops"][1]["locked"] is False
    assert (await post(client, path, me, {"code": code}))[0] == 200


async def test_courier_at_the_door_proves_delivery_when_the_order_allows_it(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    t = await trip(client, auth, clock)
    me = auth("courier", t.courier)
    assert (await post(client, f"/v1/stops/{t.pickup['id']}/completed", me))[0] == 200
    path = f"/v1/stops/{t.dropoff['id']}/completed"
    await ping(client, auth, t.courier, DOOR, clock.now())
    status, body = await post(client, path, me, {})
    assert (status, body["error"]["code"]) == (409, "code_required")  # the order does not allow it yet
    r = await client.put(
        f"/v1/orders/{t.order['id']}/delivery",
        json={"allow_proximity": True},
        headers=auth("resident", t.resident),
    )
    assert (await r.json())["allow_proximity"] is True
    street = (DOOR[0] + 0.002, DOOR[1])  # 220 m away
    clock.advance(20)
    await ping(client, auth, t.courier, street, clock.now())
    status, body = await post(client, path, me, {})
    assert (status, body["error"]["code"]) == (409, "proximity_not_proven")
    assert body["error"]["details"]["distance_m"] > 200
    clock.advance(1)  # 220 m in a second: flagged, not trusted for the proof
    assert (await ping(client, auth, t.courier, DOOR, clock.now()))["flagged"] is True
    status, body = await post(client, path, me, {})
    assert (status, body["error"]["code"]) == (409, "proximity_not_proven")
    clock.advance(20)
    assert (await ping(client, auth, t.courier, DOOR, clock.now()))["flagged"] is False
    status, body = await post(client, path, me, {})
    assert status == 200, body
    assert body["stops"][1]["proof"] == "proximity"
    r = await client.get(f"/v1/orders/{t.order['id']}/delivery", headers=auth("resident", t.resident))
    assert (await r.json())["drop_offs"][0]["proof"] == "proximity"


async def test_commands_for_stops_not_on_the_senders_route_change_nothing(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    t = await trip(client, auth, clock)
    other = await ready_courier(client, auth, clock, DOOR)
    stranger = auth("courier", other)
    before = await db.fetch("SELECT * FROM stops ORDER BY id")
    status, body = await post(client, f"/v1/stops/{t.pickup['id']}/completed", stranger)
    assert (status, body["error"]["code"]) == (403, "not_your_stop")
    status, body = await post(client, "/v1/stops/stp_aaaaaaaaaaaaaaaa/arrived", stranger)
    assert (status, body["error"]["code"]) == (404, "stop_not_found")
    status, body = await post(client, "/v1/stops/nonsense/completed", stranger)
    assert (status, body["error"]["code"]) == (404, "stop_not_found")
    status, body = await post(client, f"/v1/stops/{t.pickup['id']}/completed", auth("shop", t.shop))
    assert (status, body["error"]["code"]) == (403, "wrong_role")
    async with client.ws_connect("/v1/ws", headers=stranger) as ws:
        await recv(ws)
        reply, _ = await command(ws, "stop.completed", stop_id=t.dropoff["id"], code="1234")
        assert reply["error"]["code"] == "not_your_stop"
        reply, _ = await command(ws, "stop.arrived", stop_id=t.pickup["id"], extra=1)
        assert reply["error"]["details"][0]["path"] == ["extra"]
    assert await db.fetch("SELECT * FROM stops ORDER BY id") == before
    assert await order_state(db, t.order["id"]) == ("ready", ["ready"])


async def test_shop_hands_over_to_the_courier_ready_before_picked_up(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    t = await trip(client, auth, clock, ready=False)
    job_id = t.order["jobs"][0]["id"]
    intruder = await add_shop(client, auth("admin"), {"eggs": 1}, offset_deg=0.006)
    assert (await post(client, f"/v1/jobs/{job_id}/handover", auth("shop", intruder)))[0] == 404
    async with (
        client.ws_connect("/v1/ws", headers=auth("shop", t.shop)) as ws,
        client.ws_connect("/v1/ws", headers=auth("resident", t.resident)) as res_ws,
    ):
        await recv(ws)
        await recv(res_ws)
        reply, seen = await command(ws, "job.handover", job_id=job_id)
        assert reply["ok"] is True, reply
        assert reply["data"]["state"] == "picked_up"
        # The shop never marked the goods ready: handing them over did, first, on every stream.
        assert [(m["type"], m["data"]["state"]) for m in seen if "seq" in m] == [
            ("job.ready", "ready"),
            ("job.picked_up", "picked_up"),
        ]
        resident = [(await recv_event(res_ws, "order.updated"))["data"] for _ in range(2)]
        assert [(o["state"], o["jobs"][0]["state"]) for o in resident] == [
            ("ready", "ready"),
            ("in_delivery", "picked_up"),
        ]
    assert await db.fetchval("SELECT ready_at FROM jobs WHERE id = $1", job_id) is not None
    stop = await db.fetchrow("SELECT state, proof FROM stops WHERE id = $1", t.pickup["id"])
    assert stop is not None
    assert (stop["state"], stop["proof"]) == ("completed", "shop")
    status, body = await post(client, f"/v1/jobs/{job_id}/handover", auth("shop", t.shop))
    assert (status, body["error"]["code"]) == (409, "stop_already_completed")


async def test_pickup_order_collected_by_the_resident_is_delivered_job_and_order(
    client: Client, auth: AuthFn, db: asyncpg.Connection
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"bread": 5}, auto_accept=True)
    resident = await add_resident(client, admin)
    status, order = await place(
        client, auth("resident", resident), [{"sku": "bread", "qty": 1}], fulfilment="pickup"
    )
    assert status == 201, order
    job_id = order["jobs"][0]["id"]
    async with (
        client.ws_connect("/v1/ws", headers=auth("resident", resident)) as ws,
        client.ws_connect("/v1/ws", headers=auth("shop", shop)) as shop_ws,
    ):
        await recv(ws)
        await recv(shop_ws)
        status, body = await post(client, f"/v1/jobs/{job_id}/handover", auth("shop", shop))
        assert (status, body["state"]) == (200, "delivered")
        assert [(await recv(shop_ws))["type"] for _ in range(2)] == ["job.ready", "job.collected"]
        seen = [await recv(ws) for _ in range(3)]
        assert [(m["type"], m["data"]["state"]) for m in seen] == [
            ("order.updated", "ready"),
            ("order.ready_for_pickup", "ready"),
            ("order.updated", "delivered"),
        ]
        assert seen[-1]["data"]["jobs"][0]["state"] == "delivered"
    assert await order_state(db, order["id"]) == ("delivered", ["delivered"])
    status, body = await post(client, f"/v1/jobs/{job_id}/handover", auth("shop", shop))
    assert (status, body["error"]["code"]) == (409, "already_picked_up")


async def test_etas_are_pushed_when_they_move_by_more_than_a_minute(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    t = await trip(client, auth, clock)
    async with (
        client.ws_connect("/v1/ws", headers=auth("courier", t.courier)) as ws,
        client.ws_connect("/v1/ws", headers=auth("resident", t.resident)) as res_ws,
    ):
        await recv(ws)
        await recv(res_ws)
        # The courier waits where it is, well past the time it was due to collect.
        clock.advance(8 * 60)
        await ping(client, auth, t.courier, (DOOR[0] + 0.0025, DOOR[1]), clock.now())
        updated = await recv_event(ws, "route.updated")
        eta = await recv_event(res_ws, "order.eta")
    before = t.dropoff["eta"]["service"]
    after = updated["data"]["stops"][1]["eta"]["service"]
    assert after > before
    assert eta["data"]["eta"] == after
    assert eta["data"]["order_id"] == t.order["id"]
