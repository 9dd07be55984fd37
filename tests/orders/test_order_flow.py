"""The order flow end to end over HTTP and websockets, against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from dispatch.api.keys import RUNTIME
from dispatch.clock import ManualClock
from dispatch.services.candidates import nearby_shop_ids
from dispatch.services.jobs import expire_due
from tests.orders.helpers import AuthFn, Client, add_resident, add_shop, place, recv, recv_event, stock_of


async def test_order_is_offered_to_the_shop_live_and_accept_reaches_the_resident(
    client: Client, db: asyncpg.Connection, auth: AuthFn
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 5})
    resident = await add_resident(client, admin)
    async with (
        client.ws_connect("/v1/ws", headers=auth("shop", shop)) as shop_ws,
        client.ws_connect("/v1/ws", headers=auth("resident", resident)) as res_ws,
    ):
        await recv(shop_ws)
        await recv(res_ws)
        status, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 2}])
        assert status == 201, order
        assert order["state"] == "placed"
        (job,) = order["jobs"]
        assert job["shop_id"] == shop
        assert job["state"] == "offered"
        assert order["total_cents"] == 200
        offered = await recv_event(shop_ws, "job.offered")
        assert offered["data"]["id"] == job["id"]
        assert "dropoff" not in offered["data"]  # a shop does not learn the resident's address
        assert (await recv_event(res_ws, "order.placed"))["data"]["id"] == order["id"]
        assert await stock_of(db, shop, "milk") == 3

        await shop_ws.send_json({"type": "job.accept", "id": "a1", "job_id": job["id"], "prep_minutes": 10})
        reply = await recv(shop_ws)
        while reply.get("type") != "reply":
            reply = await recv(shop_ws)
        assert reply["ok"] is True, reply
        assert reply["id"] == "a1"
        updated = await recv_event(res_ws, "order.updated")
        assert updated["data"]["state"] == "accepted"
        assert updated["data"]["jobs"][0]["prep_minutes"] == 10


async def test_split_across_two_shops(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    a = await add_shop(client, admin, {"bread": 3}, offset_deg=0.001)
    b = await add_shop(client, admin, {"apples": 3}, offset_deg=0.003)
    resident = await add_resident(client, admin)
    status, order = await place(
        client, auth("resident", resident), [{"sku": "bread", "qty": 1}, {"sku": "apples", "qty": 2}]
    )
    assert status == 201
    assert sorted(j["shop_id"] for j in order["jobs"]) == sorted([a, b])


async def test_auto_accept_shop_accepts_at_once(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    await add_shop(client, admin, {"milk": 5}, auto_accept=True, prep_minutes=7)
    resident = await add_resident(client, admin)
    status, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 1}])
    assert status == 201
    assert order["state"] == "accepted"
    assert order["jobs"][0]["prep_minutes"] == 7


async def test_idempotency_key(client: Client, db: asyncpg.Connection, auth: AuthFn) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 50})
    resident = await add_resident(client, admin)
    headers = {**auth("resident", resident), "Idempotency-Key": "tap-1"}
    body = {"dropoff": {"lat": 45.76, "lng": 4.83}, "items": [{"sku": "milk", "qty": 1}]}
    results = await asyncio.gather(*(client.post("/v1/orders", json=body, headers=headers) for _ in range(6)))
    statuses = sorted(r.status for r in results)
    orders = {(await r.json())["id"] for r in results}
    assert statuses == [200, 200, 200, 200, 200, 201]
    assert len(orders) == 1
    assert await db.fetchval("SELECT count(*) FROM orders") == 1
    assert await stock_of(db, shop, "milk") == 49
    other = {**body, "items": [{"sku": "milk", "qty": 2}]}
    r = await client.post("/v1/orders", json=other, headers=headers)
    assert r.status == 409
    assert (await r.json())["error"]["code"] == "idempotency_key_reused"
    # The key belongs to this resident only: another resident's same key is a new order.
    r = await client.post(
        "/v1/orders",
        json=body,
        headers={**auth("resident", await add_resident(client, admin)), "Idempotency-Key": "tap-1"},
    )
    assert r.status == 201


async def test_unavailable_items_are_named_and_nothing_is_written(
    client: Client, db: asyncpg.Connection, auth: AuthFn
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 2, "eggs": 1})
    resident = await add_resident(client, admin)
    status, body = await place(
        client, auth("resident", resident), [{"sku": "milk", "qty": 1}, {"sku": "eggs", "qty": 5}]
    )
    assert status == 422
    assert body["error"]["code"] == "items_unavailable"
    (detail,) = body["error"]["details"]
    assert detail["path"] == ["items", 1]
    assert detail["sku"] == "eggs"
    assert detail["qty_available"] == 1
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    assert await db.fetchval("SELECT count(*) FROM events") == 0
    assert await stock_of(db, shop, "milk") == 2


@pytest.mark.parametrize(
    ("items", "extra", "code", "path"),
    [
        ([{"sku": "nope", "qty": 1}], {}, "unknown_sku", ["items", 0, "sku"]),
        (
            [{"sku": "milk", "qty": 1, "shop_id": "shop_aaaaaaaaaaaaaaaa"}],
            {},
            "unknown_shop",
            ["items", 0, "shop_id"],
        ),
        ([{"sku": "milk", "qty": 0}], {}, "validation_failed", ["items", 0, "qty"]),
        ([{"sku": "milk", "qty": -3}], {}, "validation_failed", ["items", 0, "qty"]),
        ([{"sku": "milk", "qty": 1.5}], {}, "validation_failed", ["items", 0, "qty"]),
        ([{"sku": "milk", "qty": "2"}], {}, "validation_failed", ["items", 0, "qty"]),
        ([{"sku": "milk", "qty": 100}], {}, "validation_failed", ["items", 0, "qty"]),
        ([{"sku": "milk", "qty": 1}] * 51, {}, "validation_failed", ["items"]),
        ([], {}, "validation_failed", ["items"]),
        (
            [{"sku": "milk", "qty": 1}],
            {"dropoff": {"lat": 10.0, "lng": 10.0}},
            "outside_delivery_area",
            ["dropoff"],
        ),
        (
            [{"sku": "milk", "qty": 1}],
            {"dropoff": {"lat": 95.0, "lng": 10.0}},
            "validation_failed",
            ["dropoff", "lat"],
        ),
        (
            [{"sku": "milk", "qty": 1}],
            {"timing": {"start": "2020-01-01T10:00:00Z", "end": "2020-01-01T11:00:00Z"}},
            "validation_failed",
            ["timing", "start"],
        ),
        (
            [{"sku": "milk", "qty": 1}],
            {"timing": {"start": "2026-01-05T15:00:00Z", "end": "2026-01-05T14:00:00Z"}},
            "validation_failed",
            ["timing", "end"],
        ),
        (
            [{"sku": "milk", "qty": 1}],
            {"timing": {"start": "2026-01-05T15:00:00", "end": "2026-01-05T16:00:00"}},
            "validation_failed",
            ["timing"],
        ),
        ([{"sku": "milk", "qty": 1}], {"fulfilment": "teleport"}, "validation_failed", ["fulfilment"]),
    ],
)
async def test_bad_orders_get_specific_errors_and_write_nothing(
    client: Client,
    db: asyncpg.Connection,
    auth: AuthFn,
    items: list[dict[str, object]],
    extra: dict[str, object],
    code: str,
    path: list[object],
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 5})
    resident = await add_resident(client, admin)
    body = {"dropoff": {"lat": 45.76, "lng": 4.83}, "items": items, **extra}
    r = await client.post("/v1/orders", json=body, headers=auth("resident", resident))
    assert r.status == 422, await r.text()
    err = (await r.json())["error"]
    assert err["code"] == code, err
    assert any(d["path"][: len(path)] == path for d in err["details"]), err
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    assert await stock_of(db, shop, "milk") == 5


async def test_exactly_one_winner_and_clear_conflicts(
    client: Client, clock: ManualClock, auth: AuthFn
) -> None:
    admin = auth("admin")
    a = await add_shop(client, admin, {"milk": 5}, offset_deg=0.001)
    b = await add_shop(client, admin, {"milk": 5}, offset_deg=0.005)
    resident = await add_resident(client, admin)
    _, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 1}])
    job = order["jobs"][0]
    holder, other = (a, b) if job["shop_id"] == a else (b, a)
    # Many simultaneous accepts from the holder (its two tablets): exactly one wins.
    results = await asyncio.gather(
        *(
            client.post(
                f"/v1/jobs/{job['id']}/accept", json={"prep_minutes": 5}, headers=auth("shop", holder)
            )
            for _ in range(20)
        )
    )
    statuses = sorted(r.status for r in results)
    assert statuses == [200] + [409] * 19
    codes = {(await r.json())["error"]["code"] for r in results if r.status == 409}
    assert codes == {"already_accepted"}
    r = await client.post(
        f"/v1/jobs/{job['id']}/accept", json={"prep_minutes": 5}, headers=auth("shop", other)
    )
    assert r.status == 409
    assert (await r.json())["error"]["code"] == "not_offer_holder"
    r = await client.post(
        f"/v1/jobs/{job['id']}/reject", json={"reason": "busy"}, headers=auth("shop", holder)
    )
    assert r.status == 409
    assert (await r.json())["error"]["code"] == "cannot_reject_accepted"


async def test_accept_after_deadline_is_refused(client: Client, clock: ManualClock, auth: AuthFn) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 5})
    resident = await add_resident(client, admin)
    _, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 1}])
    clock.advance(46)
    r = await client.post(
        f"/v1/jobs/{order['jobs'][0]['id']}/accept",
        json={"prep_minutes": 5},
        headers=auth(
            "shop",
            shop,
        ),
    )
    assert r.status == 409
    assert (await r.json())["error"]["code"] == "offer_expired"


async def test_reject_reoffers_to_next_shop_and_releases_stock(
    client: Client, db: asyncpg.Connection, auth: AuthFn
) -> None:
    admin = auth("admin")
    near = await add_shop(client, admin, {"milk": 5}, offset_deg=0.001)
    far = await add_shop(client, admin, {"milk": 5}, offset_deg=0.008)
    resident = await add_resident(client, admin)
    _, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 2}])
    first = order["jobs"][0]
    assert first["shop_id"] == near  # nearer: sooner at the door
    async with client.ws_connect("/v1/ws", headers=auth("shop", far)) as far_ws:
        await recv(far_ws)
        r = await client.post(
            f"/v1/jobs/{first['id']}/reject", json={"reason": "out of milk"}, headers=auth("shop", near)
        )
        assert r.status == 200, await r.text()
        offered = await recv_event(far_ws, "job.offered")
        assert offered["data"]["order_id"] == order["id"]
    assert await stock_of(db, near, "milk") == 5
    assert await stock_of(db, far, "milk") == 3
    r = await client.get(f"/v1/orders/{order['id']}", headers=auth("resident", resident))
    got = await r.json()
    assert {j["shop_id"]: j["state"] for j in got["jobs"]} == {near: "rejected", far: "offered"}
    assert got["state"] == "placed"


async def test_no_shop_left_makes_items_unfulfilled_and_tells_the_resident(
    client: Client, db: asyncpg.Connection, clock: ManualClock, auth: AuthFn
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 5})
    resident = await add_resident(client, admin)
    async with client.ws_connect("/v1/ws", headers=auth("resident", resident)) as ws:
        await recv(ws)
        _, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 2}])
        clock.advance(45)
        assert await expire_due(client.app[RUNTIME].services) == 1
        assert await expire_due(client.app[RUNTIME].services) == 0  # fires once
        told = await recv_event(ws, "order.items_unfulfilled")
        assert told["data"]["items"] == [{"sku": "milk", "qty": 2, "shop_id": None}]
    r = await client.get(f"/v1/orders/{order['id']}", headers=auth("resident", resident))
    got = await r.json()
    assert got["state"] == "unfulfilled"
    assert got["unfulfilled"] == [{"sku": "milk", "qty": 2, "shop_id": None}]
    assert await stock_of(db, shop, "milk") == 5


async def test_cancel_releases_stock_and_withdraws_jobs(
    client: Client, db: asyncpg.Connection, auth: AuthFn
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 5})
    resident = await add_resident(client, admin)
    _, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 2}])
    async with client.ws_connect("/v1/ws", headers=auth("shop", shop)) as ws:
        await recv(ws)
        r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=auth("resident", resident))
        assert r.status == 200
        assert (await r.json())["state"] == "cancelled"
        assert (await recv_event(ws, "job.cancelled"))["data"]["id"] == order["jobs"][0]["id"]
    assert await stock_of(db, shop, "milk") == 5
    r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=auth("resident", resident))
    assert r.status == 409
    other = await add_resident(client, admin)
    r = await client.post(f"/v1/orders/{order['id']}/cancel", headers=auth("resident", other))
    assert r.status == 404


async def test_least_privilege_on_orders_and_jobs(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 5})
    other_shop = await add_shop(client, admin, {"eggs": 5}, offset_deg=0.004)
    resident = await add_resident(client, admin)
    _, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 1}])
    other = await add_resident(client, admin)
    assert (await client.get(f"/v1/orders/{order['id']}", headers=auth("resident", other))).status == 404
    assert (
        await client.get(f"/v1/jobs/{order['jobs'][0]['id']}", headers=auth("shop", other_shop))
    ).status == 404
    assert (await client.get(f"/v1/shops/{shop}/jobs", headers=auth("shop", other_shop))).status == 403
    r = await client.get(f"/v1/shops/{shop}/jobs?state=offered", headers=auth("shop", shop))
    assert [j["id"] for j in (await r.json())["items"]] == [order["jobs"][0]["id"]]
    assert (await client.post("/v1/orders", json={}, headers=auth("shop", shop))).status == 403


async def test_websocket_commands_for_someone_elses_job(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 5})
    intruder = await add_shop(client, admin, {"eggs": 5}, offset_deg=0.004)
    resident = await add_resident(client, admin)
    _, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 1}])
    job_id = order["jobs"][0]["id"]
    async with client.ws_connect("/v1/ws", headers=auth("shop", intruder)) as ws:
        await recv(ws)
        await ws.send_json({"type": "job.accept", "id": 7, "job_id": job_id, "prep_minutes": 5})
        reply = await recv(ws)
        assert reply["ok"] is False
        assert reply["error"]["code"] == "not_offer_holder"
        await ws.send_json({"type": "job.accept", "id": 8, "job_id": job_id, "prep_minutes": 0})
        reply = await recv(ws)
        assert reply["error"]["code"] == "validation_failed"
        assert reply["error"]["details"][0]["path"] == ["prep_minutes"]
    async with client.ws_connect("/v1/ws", headers=auth("resident", resident)) as ws:
        await recv(ws)
        await ws.send_json({"type": "job.accept", "id": 9, "job_id": job_id, "prep_minutes": 5})
        reply = await recv(ws)
        assert reply["error"]["code"] == "wrong_role"
    r = await client.get(f"/v1/jobs/{job_id}", headers=auth("shop", shop))
    assert (await r.json())["state"] == "offered"


async def test_pickup_order_tells_resident_when_everything_is_ready(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"bread": 5}, offset_deg=0.002)
    resident = await add_resident(client, admin)
    async with client.ws_connect("/v1/ws", headers=auth("resident", resident)) as ws:
        await recv(ws)
        status, order = await place(
            client, auth("resident", resident), [{"sku": "bread", "qty": 1}], fulfilment="pickup"
        )
        assert status == 201, order
        job_id = order["jobs"][0]["id"]
        assert (
            await client.post(
                f"/v1/jobs/{job_id}/accept", json={"prep_minutes": 5}, headers=auth("shop", shop)
            )
        ).status == 200
        assert (await client.post(f"/v1/jobs/{job_id}/ready", headers=auth("shop", shop))).status == 200
        ready = await recv_event(ws, "order.ready_for_pickup")
        assert ready["data"]["state"] == "ready"


async def test_preorder_item_needs_a_slot_with_lead_time(
    client: Client, clock: ManualClock, auth: AuthFn
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {})
    r = await client.put(
        f"/v1/shops/{shop}/catalogue/cake",
        json={"name": "Cake", "price_cents": 2000, "stock": 3, "preorder_only": True, "lead_minutes": 120},
        headers=admin,
    )
    assert r.status == 200
    resident = await add_resident(client, admin)
    status, body = await place(client, auth("resident", resident), [{"sku": "cake", "qty": 1}])
    assert status == 422
    assert body["error"]["code"] == "items_unavailable"
    start = clock.now() + timedelta(hours=3)
    slot = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    status, body = await place(client, auth("resident", resident), [{"sku": "cake", "qty": 1}], timing=slot)
    assert status == 201, body
    assert body["slot"]["start"] == start.isoformat()


async def test_events_http_twin_of_resume(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    await add_shop(client, admin, {"milk": 5})
    resident = await add_resident(client, admin)
    await place(client, auth("resident", resident), [{"sku": "milk", "qty": 1}])
    r = await client.get("/v1/events?after_seq=0", headers=auth("resident", resident))
    events = (await r.json())["events"]
    assert [e["seq"] for e in events] == [1]
    assert events[0]["type"] == "order.placed"


async def test_candidates_are_the_nearest_shops_plus_pinned_ones(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    near = await add_shop(client, admin, {"milk": 5}, offset_deg=0.001)
    far = await add_shop(client, admin, {"milk": 5, "honey": 2}, offset_deg=0.009)
    svc = client.app[RUNTIME].services
    svc.settings = svc.settings.with_(max_candidate_shops=1)
    assert nearby_shop_ids(svc, 45.76, 4.83, "delivery") == [near]
    assert nearby_shop_ids(svc, 45.76, 4.83, "delivery", keep={far}) == [near, far]
    resident = await add_resident(client, admin)
    # Honey only exists far away: not a candidate unless the resident picked it from that shop.
    status, body = await place(client, auth("resident", resident), [{"sku": "honey", "qty": 1}])
    assert status == 422
    assert body["error"]["code"] == "items_unavailable"
    status, body = await place(
        client, auth("resident", resident), [{"sku": "honey", "qty": 1, "shop_id": far}]
    )
    assert status == 201
    assert body["jobs"][0]["shop_id"] == far
