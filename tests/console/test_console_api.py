"""What the console and the apps read and do beyond the listings, through the real HTTP API (and the
websocket for the operators' hints), on the test PostgreSQL and Redis: an order's timeline, the rounds,
the headline figures, moving work between couriers, the quote before placing, the map's area and cells, a
shop's own availability switch, the open-orders filter."""

from __future__ import annotations

from typing import Any

import asyncpg

from dispatch.clock import ManualClock
from tests.couriers.helpers import (
    DOOR,
    NEAR_SHOP,
    AuthFn,
    Client,
    add_courier,
    add_resident,
    add_shop,
    dispatch,
    place,
    post,
    ready_courier,
    recv,
    routes_of,
    trip,
)
from tests.orders.helpers import recv_event, stock_of


async def get(client: Client, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    r = await client.get(path, headers=headers)
    return r.status, await r.json()


async def test_an_orders_timeline_is_its_events_as_each_recipient_got_them_in_order(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    t = await trip(client, auth, clock)
    # Another order from the same shop, resident and courier: none of its events may show.
    other_status, other = await place(client, auth("resident", t.resident), [{"sku": "bread", "qty": 1}])
    assert other_status == 201
    status, body = await get(client, f"/v1/orders/{t.order['id']}/timeline", auth("admin"))
    assert status == 200, body
    seen = [(e["role"], e["type"]) for e in body["events"]]
    # One transaction after another (the order within one is not meaningful): placing it (the shop
    # accepts at once), the round, the goods ready.
    assert [set(seen[0:2]), set(seen[2:4]), set(seen[4:6])] == [
        {("resident", "order.placed"), ("shop", "job.accepted")},
        {("courier", "route.offered"), ("resident", "order.eta")},
        {("shop", "job.ready"), ("resident", "order.updated")},
    ], seen
    assert len(seen) == 6
    assert {e["recipient"] for e in body["events"]} == {t.shop, t.resident, t.courier}
    assert all(other["id"] not in str(e["data"]) for e in body["events"])
    # Admins only; an unknown order is a 404.
    status, body = await get(client, f"/v1/orders/{t.order['id']}/timeline", auth("resident", t.resident))
    assert (status, body["error"]["code"]) == (403, "wrong_role")
    status, body = await get(client, "/v1/orders/ord_aaaaaaaaaaaaaaaa/timeline", auth("admin"))
    assert (status, body["error"]["code"]) == (404, "order_not_found")


async def test_rounds_say_what_they_had_placed_and_held(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    t = await trip(client, auth, clock)
    await dispatch(client, clock)  # a round with nothing to do
    status, body = await get(client, "/v1/rounds", auth("admin"))
    assert status == 200
    empty, busy = body["items"][0], body["items"][1]
    assert (empty["jobs"], empty["placed"], empty["held"]) == (0, 0, 0)
    assert (busy["jobs"], busy["placed"], busy["held"], busy["routes"], busy["couriers"]) == (1, 1, 0, 1, 1)
    assert busy["seconds"] >= 0 and busy["round"] == empty["round"] - 1
    status, body = await get(client, "/v1/rounds?busy=true", auth("admin"))
    assert [r["round"] for r in body["items"]] == [busy["round"]]
    del t


async def test_the_headline_counts_the_last_hour_late_orders_and_open_offers(
    client: Client, auth: AuthFn, clock: ManualClock, settings: Any
) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"bread": 9})  # answers by hand: its offers stay open
    resident = await add_resident(client, admin)
    for _ in range(2):
        assert (await place(client, auth("resident", resident), [{"sku": "bread", "qty": 1}]))[0] == 201
    status, body = await get(client, "/v1/headline", admin)
    assert status == 200, body
    assert (body["orders_last_hour"], body["open_job_offers"], body["orders_in_progress"]) == (2, 2, 2)
    assert (body["late_open"], body["delivered_last_hour"], body["mean_click_to_door_min"]) == (0, 0, None)
    clock.advance(settings.late_after_min * 60 + 1)
    body = (await get(client, "/v1/headline", admin))[1]
    assert (body["late_open"], body["orders_last_hour"]) == (2, 2)
    clock.advance(3600)
    body = (await get(client, "/v1/headline", auth("admin")))[1]
    assert (body["late_open"], body["orders_last_hour"]) == (2, 0)
    del shop


async def test_a_delivered_order_counts_its_click_to_door(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    t = await trip(client, auth, clock)
    admin = auth("admin")
    clock.advance(600)
    for stop in (t.pickup, t.dropoff):
        for step in ("arrived", "completed"):
            status, body = await post(client, f"/v1/stops/{stop['id']}/override", admin, {"step": step})
            assert status == 200, body
    body = (await get(client, "/v1/headline", admin))[1]
    assert body["delivered_last_hour"] == 1
    assert 10.0 <= body["mean_click_to_door_min"] <= 10.2  # the trip's own minutes, then ten


async def test_an_operator_moves_a_route_to_another_courier_who_is_told_and_the_first_one_freed(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    t = await trip(client, auth, clock)
    other = await ready_courier(client, auth, clock, NEAR_SHOP)
    async with (
        client.ws_connect("/v1/ws", headers=auth("courier", t.courier)) as first,
        client.ws_connect("/v1/ws", headers=auth("courier", other)) as second,
        client.ws_connect("/v1/ws", headers=auth("resident", t.resident)) as resident,
    ):
        for ws in (first, second, resident):
            await recv(ws)
        status, route = await post(
            client, f"/v1/routes/{t.route['id']}/move", auth("admin"), {"courier_id": other}
        )
        assert status == 200, route
        assert (route["courier_id"], route["state"]) == (other, "active")
        assert [(s["kind"], s["job_ids"]) for s in route["stops"]] == [
            ("pickup", [t.order["jobs"][0]["id"]]),
            ("dropoff", [t.order["jobs"][0]["id"]]),
        ]
        offered = await recv_event(second, "route.offered")
        assert offered["data"]["id"] == route["id"]
        cancelled = await recv_event(first, "route.cancelled")
        assert cancelled["data"]["id"] == t.route["id"]
        assert [s["state"] for s in cancelled["data"]["stops"]] == ["cancelled", "cancelled"]
        eta = await recv_event(resident, "order.eta")
        assert eta["data"]["stop_id"] == route["stops"][1]["id"] and eta["data"]["code"]
    assert await routes_of(client, auth, t.courier) == []
    assert [r["id"] for r in await routes_of(client, auth, other)] == [route["id"]]
    assert await db.fetchval("SELECT route_id FROM jobs WHERE order_id = $1", t.order["id"]) == route["id"]
    # The new courier collects and delivers it as any route.
    admin = auth("admin")
    for stop in route["stops"]:
        for step in ("arrived", "completed"):
            status, body = await post(client, f"/v1/stops/{stop['id']}/override", admin, {"step": step})
            assert status == 200, body
    assert await db.fetchval("SELECT state FROM orders WHERE id = $1", t.order["id"]) == "delivered"


async def test_a_job_not_yet_on_a_route_can_be_given_to_a_courier(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    admin = auth("admin")
    await add_shop(client, admin, {"bread": 9}, auto_accept=True)
    resident = await add_resident(client, admin)
    courier = await ready_courier(client, auth, clock, NEAR_SHOP)
    status, order = await place(client, auth("resident", resident), [{"sku": "bread", "qty": 2}])
    assert status == 201
    job = order["jobs"][0]["id"]
    status, route = await post(client, f"/v1/jobs/{job}/move", admin, {"courier_id": courier})
    assert status == 200, route
    assert [s["kind"] for s in route["stops"]] == ["pickup", "dropoff"]
    assert route["stops"][0]["items"] == 2 and route["stops"][1]["order_id"] == order["id"]
    assert route["stops"][0]["eta"]["arrival"] < route["stops"][1]["eta"]["arrival"]
    # The round finds nothing left to place.
    assert (await dispatch(client, clock)).jobs == 0


async def test_moves_that_cannot_be_done_are_refused_and_change_nothing(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    t = await trip(client, auth, clock)
    admin = auth("admin")
    off_shift = await add_courier(client, admin)
    job = t.order["jobs"][0]["id"]
    before = await db.fetch("SELECT * FROM stops ORDER BY id")
    cases = [
        (f"/v1/jobs/{job}/move", {"courier_id": t.courier}, 409, "same_courier"),
        (f"/v1/jobs/{job}/move", {"courier_id": off_shift}, 409, "courier_off_shift"),
        (f"/v1/jobs/{job}/move", {"courier_id": "cou_aaaaaaaaaaaaaaaa"}, 404, "courier_not_found"),
        (f"/v1/jobs/{job}/move", {"courier_id": "nobody"}, 422, "validation_failed"),
        ("/v1/jobs/job_aaaaaaaaaaaaaaaa/move", {"courier_id": t.courier}, 404, "job_not_found"),
        ("/v1/routes/rte_aaaaaaaaaaaaaaaa/move", {"courier_id": t.courier}, 404, "route_not_found"),
    ]
    for path, body, want_status, code in cases:
        status, answer = await post(client, path, admin, body)
        assert (status, answer["error"]["code"]) == (want_status, code), (path, answer)
    status, answer = await post(
        client, f"/v1/jobs/{job}/move", auth("shop", t.shop), {"courier_id": t.courier}
    )
    assert status == 403
    assert await db.fetch("SELECT * FROM stops ORDER BY id") == before
    # Picked up: the goods are on board, they stay.
    other = await ready_courier(client, auth, clock, NEAR_SHOP)
    for step in ("arrived", "completed"):
        await post(client, f"/v1/stops/{t.pickup['id']}/override", admin, {"step": step})
    status, answer = await post(client, f"/v1/jobs/{job}/move", admin, {"courier_id": other})
    assert (status, answer["error"]["code"]) == (409, "job_not_waiting")
    assert answer["error"]["details"] == {"jobs": {job: "picked_up"}}
    status, answer = await post(client, f"/v1/routes/{t.route['id']}/move", admin, {"courier_id": other})
    assert (status, answer["error"]["code"]) == (409, "nothing_to_move")


async def test_a_pick_up_orders_job_never_goes_to_a_courier(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    admin = auth("admin")
    await add_shop(client, admin, {"bread": 9}, auto_accept=True)
    resident = await add_resident(client, admin)
    courier = await ready_courier(client, auth, clock, NEAR_SHOP)
    status, order = await place(
        client, auth("resident", resident), [{"sku": "bread", "qty": 1}], fulfilment="pickup"
    )
    assert status == 201, order
    status, answer = await post(
        client, f"/v1/jobs/{order['jobs'][0]['id']}/move", admin, {"courier_id": courier}
    )
    assert (status, answer["error"]["code"]) == (409, "not_a_delivery")


async def test_a_quote_shows_the_split_and_prices_and_writes_nothing(
    client: Client, auth: AuthFn, db: asyncpg.Connection
) -> None:
    admin = auth("admin")
    bakery = await add_shop(client, admin, {"bread": 5}, offset_deg=0.001, price=110)
    dairy = await add_shop(client, admin, {"milk": 5}, offset_deg=0.003, price=90)
    resident = await add_resident(client, admin)
    me = auth("resident", resident)
    body = {
        "dropoff": {"lat": DOOR[0], "lng": DOOR[1]},
        "items": [{"sku": "bread", "qty": 2}, {"sku": "milk", "qty": 1, "shop_id": dairy}],
    }
    status, quote = await post(client, "/v1/orders/quote", me, body)
    assert status == 200, quote
    by_shop = {j["shop_id"]: j for j in quote["jobs"]}
    assert set(by_shop) == {bakery, dairy}
    assert by_shop[bakery]["lines"] == [{"sku": "bread", "qty": 2, "unit_price_cents": 110, "pinned": False}]
    assert by_shop[dairy]["lines"] == [{"sku": "milk", "qty": 1, "unit_price_cents": 90, "pinned": True}]
    assert (by_shop[bakery]["subtotal_cents"], quote["total_cents"]) == (220, 310)
    assert by_shop[bakery]["shop_name"] == "Shop 0.001"
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    assert await stock_of(db, bakery, "bread") == 5
    # Refused as placing would be, with the same details.
    body["items"] = [{"sku": "bread", "qty": 6}]
    quoted = await post(client, "/v1/orders/quote", me, body)
    placed = await post(client, "/v1/orders", me, body)
    assert quoted == placed and quoted[0] == 422 and quoted[1]["error"]["code"] == "items_unavailable"
    assert (await post(client, "/v1/orders/quote", admin, body))[0] == 403


async def test_the_map_area_and_a_zones_cells(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    status, area = await get(client, "/v1/area", admin)
    assert (status, area) == (200, {"south": None, "west": None, "north": None, "east": None, "shops": 0})
    near = await add_shop(client, admin, {"bread": 1}, offset_deg=0.001)
    await add_shop(client, admin, {"bread": 1}, offset_deg=0.004)
    resident = await add_resident(client, admin)
    status, area = await get(client, "/v1/area", auth("resident", resident))
    assert status == 200
    assert (area["south"], area["north"], area["shops"]) == (DOOR[0] + 0.001, DOOR[0] + 0.004, 2)
    status, cells = await get(client, f"/v1/shops/{near}/zone/cells", auth("resident", resident))
    assert status == 200
    zone = (await get(client, f"/v1/shops/{near}/zone", admin))[1]
    assert len(cells["cells"]) == zone["cells"] and cells["resolution"] == zone["resolution"]
    assert sum(c["edge"] for c in cells["cells"]) == zone["edge_cells"]
    assert all(len(c["boundary"]) in (5, 6) for c in cells["cells"])


async def test_a_shop_switches_itself_off_and_on(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"bread": 3})
    other = await add_shop(client, admin, {"milk": 3}, offset_deg=0.003)
    resident = await add_resident(client, admin)
    me = auth("shop", shop)
    r = await client.put(f"/v1/shops/{shop}/availability", json={"active": False}, headers=me)
    assert (r.status, await r.json()) == (200, {"shop_id": shop, "active": False})
    status, nearby = await get(client, f"/v1/shops/nearby?lat={DOOR[0]}&lng={DOOR[1]}", me)
    assert [s["shop_id"] for s in nearby["shops"]] == [other]
    status, refused = await place(client, auth("resident", resident), [{"sku": "bread", "qty": 1}])
    assert (status, refused["error"]["code"]) == (422, "items_unavailable")
    r = await client.put(f"/v1/shops/{shop}/availability", json={"active": True}, headers=me)
    assert (await r.json())["active"] is True
    assert (await place(client, auth("resident", resident), [{"sku": "bread", "qty": 1}]))[0] == 201
    # Another shop may not switch it.
    r = await client.put(
        f"/v1/shops/{shop}/availability", json={"active": False}, headers=auth("shop", other)
    )
    assert r.status == 403


async def test_open_orders_filter(client: Client, auth: AuthFn, clock: ManualClock) -> None:
    admin = auth("admin")
    await add_shop(client, admin, {"bread": 9})
    resident = await add_resident(client, admin)
    me = auth("resident", resident)
    first = (await place(client, me, [{"sku": "bread", "qty": 1}]))[1]
    clock.advance(1)
    second = (await place(client, me, [{"sku": "bread", "qty": 1}]))[1]
    assert (await post(client, f"/v1/orders/{first['id']}/cancel", admin))[0] == 200
    status, page = await get(client, "/v1/orders?open=true", admin)
    assert status == 200
    assert [o["id"] for o in page["items"]] == [second["id"]]
    page = (await get(client, "/v1/orders", admin))[1]
    assert [o["id"] for o in page["items"]] == [second["id"], first["id"]]


async def test_operators_hear_what_changed_on_their_websocket(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"bread": 9})
    resident = await add_resident(client, admin)
    async with client.ws_connect("/v1/ws", headers=admin) as ws:
        hello = await recv(ws)
        assert (hello["type"], hello["role"]) == ("hello", "admin")
        status, order = await place(client, auth("resident", resident), [{"sku": "bread", "qty": 1}])
        assert status == 201
        hint = await recv(ws)
        assert hint["type"] == "ops.changed" and "seq" not in hint
        assert hint["data"]["orders"] == [order["id"]] and hint["data"]["shops"] == [shop]
        assert hint["data"]["events"] == 2
