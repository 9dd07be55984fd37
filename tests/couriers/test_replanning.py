"""Revisable plans and exact time through the real server: work queued behind what a courier is doing moves
when another courier would deliver it sooner (the courier and the resident are told), the benchmark's rule
gives a busy courier nothing new, and the next stop is timed from when the courier leaves the last one."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from dispatch.clock import ManualClock
from tests.couriers.helpers import (
    DOOR,
    NEAR_SHOP,
    SHOP_AT,
    AuthFn,
    Client,
    add_resident,
    add_shop,
    dispatch,
    ping,
    place,
    post,
    ready_courier,
    recv,
    routes_of,
    trip,
)
from tests.orders.helpers import recv_event

TWO_KM_OUT = (DOOR[0] - 0.018, DOOR[1])  # a far door: its courier is away for a while


async def _order(
    client: Client, auth: AuthFn, resident: str, door: tuple[float, float] = DOOR
) -> dict[str, Any]:
    where = {"lat": door[0], "lng": door[1]}
    status, body = await place(
        client, auth("resident", resident), [{"sku": "bread", "qty": 1}], dropoff=where
    )
    assert status == 201, body
    return body


async def _couriers_of_orders(db: asyncpg.Connection) -> dict[str, str]:
    rows = await db.fetch("SELECT j.order_id, r.courier_id FROM jobs j JOIN routes r ON r.id = j.route_id")
    return {r["order_id"]: r["courier_id"] for r in rows}


def _live(routes: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """A courier's live routes as (state, [kind of each open stop])."""
    return [
        (r["state"], [s["kind"] for s in r["stops"] if s["state"] in ("pending", "arrived")])
        for r in routes
        if r["state"] in ("active", "offered")
    ]


async def test_queued_work_moves_to_a_courier_who_would_deliver_it_sooner_and_everyone_is_told(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    admin = auth("admin")
    await add_shop(client, admin, {"bread": 9}, offset_deg=0.002, auto_accept=True, prep_minutes=5)
    first, second = await add_resident(client, admin), await add_resident(client, admin)
    busy = await ready_courier(client, auth, clock, NEAR_SHOP)
    far = await _order(client, auth, first, TWO_KM_OUT)
    assert (await dispatch(client, clock)).routes == 1  # busy: the shop, then two kilometres out
    async with (
        client.ws_connect("/v1/ws", headers=auth("courier", busy)) as busy_ws,
        client.ws_connect("/v1/ws", headers=auth("resident", second)) as resident_ws,
    ):
        await recv(busy_ws)
        await recv(resident_ws)
        queued = await _order(client, auth, second)
        assert (await dispatch(client, clock)).routes == 1  # the only courier: queued behind the far door
        assert _live(await routes_of(client, auth, busy)) == [
            ("active", ["pickup", "dropoff"]),
            ("active", ["pickup", "dropoff"]),
        ]
        offered = await recv_event(busy_ws, "route.offered")
        first_eta = await recv_event(resident_ws, "order.eta")
        assert first_eta["data"]["stop_id"] == offered["data"]["stops"][1]["id"]

        fresh = await ready_courier(client, auth, clock, NEAR_SHOP)  # next to the shop, nothing to do
        async with client.ws_connect("/v1/ws", headers=auth("courier", fresh)) as fresh_ws:
            await recv(fresh_ws)
            report = await dispatch(client, clock)
            assert report.routes == 1
            taken = await recv_event(fresh_ws, "route.offered")
        # The busy courier keeps what it is doing and loses the queued trip, and is told.
        lost = await recv_event(busy_ws, "route.cancelled")
        assert lost["data"]["id"] == offered["data"]["id"]
        assert {s["state"] for s in lost["data"]["stops"]} == {"cancelled"}
        assert _live(await routes_of(client, auth, busy)) == [("active", ["pickup", "dropoff"])]
        # The resident is told the courier changes, then the new courier's ETA and stop.
        moved = await recv_event(resident_ws, "order.updated")
        assert moved["data"]["courier"] == {"state": "reassigning", "reason": "replanned"}
        new_eta = await recv_event(resident_ws, "order.eta")
    assert [s["kind"] for s in taken["data"]["stops"]] == ["pickup", "dropoff"]
    assert new_eta["data"]["stop_id"] == taken["data"]["stops"][1]["id"]
    assert new_eta["data"]["eta"] < first_eta["data"]["eta"]
    assert new_eta["data"]["code"] == first_eta["data"]["code"]  # the code does not change
    # One route per job, the queued job on the fresh courier's route.
    routes = await _couriers_of_orders(db)
    assert routes == {far["id"]: busy, queued["id"]: fresh}
    # Nothing moves back and forth: the next round keeps the plan as it is.
    assert (await dispatch(client, clock)).routes == 0
    assert await _couriers_of_orders(db) == routes


@pytest.mark.parametrize("settings", [{"assign_busy": False}], indirect=True)
async def test_under_the_benchmark_rule_a_busy_courier_is_given_nothing_new(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    admin = auth("admin")
    await add_shop(client, admin, {"bread": 9}, offset_deg=0.002, auto_accept=True, prep_minutes=5)
    first, second = await add_resident(client, admin), await add_resident(client, admin)
    busy = await ready_courier(client, auth, clock, NEAR_SHOP)
    await _order(client, auth, first, TWO_KM_OUT)
    assert (await dispatch(client, clock)).routes == 1
    await _order(client, auth, second)
    assert (await dispatch(client, clock)).routes == 0  # the only courier is busy: the order waits
    assert len(_live(await routes_of(client, auth, busy))) == 1
    fresh = await ready_courier(client, auth, clock, NEAR_SHOP)
    assert (await dispatch(client, clock)).routes == 1
    assert len(_live(await routes_of(client, auth, fresh))) == 1


async def test_the_next_stop_is_timed_from_when_the_courier_leaves_the_last_one(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    """The pickup's service ends half a service (2 minutes) after the pickup: the door's ETA counts it, and a
    ping from midway (whose rounded or not remainder could say sooner) does not bring it forward."""
    t = await trip(client, auth, clock)
    me = auth("courier", t.courier)
    clock.advance(30)
    await ping(client, auth, t.courier, SHOP_AT, clock.now())
    status, route = await post(client, f"/v1/stops/{t.pickup['id']}/completed", me)
    assert status == 200, route
    picked = clock.now()
    eta = datetime.fromisoformat(route["stops"][1]["eta"]["arrival"])
    drive = timedelta(minutes=222.4 * 1.3 / 250)  # shop to door: 222 m, detour 1.3, 250 m a minute
    assert abs(eta - (picked + timedelta(minutes=2) + drive)) < timedelta(seconds=1)
    clock.advance(2 * 60 + 20)  # on the way
    midway = ((SHOP_AT[0] + DOOR[0]) / 2, DOOR[1])
    await ping(client, auth, t.courier, midway, clock.now())
    (now_route,) = [r for r in await routes_of(client, auth, t.courier) if r["id"] == t.route["id"]]
    assert datetime.fromisoformat(now_route["stops"][1]["eta"]["arrival"]) == eta


async def test_queued_work_that_stays_with_its_courier_is_not_announced_as_reassigned(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    """A round that re-plans a courier's queue (another order from the same shop joins it) takes the queued
    job back and gives it to the same courier on a new route: its resident hears the new ETA, not that a
    courier is being found again."""
    admin = auth("admin")
    await add_shop(client, admin, {"bread": 9}, offset_deg=0.002, auto_accept=True, prep_minutes=5)
    first, second, third = [await add_resident(client, admin) for _ in range(3)]
    busy = await ready_courier(client, auth, clock, NEAR_SHOP)
    await _order(client, auth, first, TWO_KM_OUT)
    assert (await dispatch(client, clock)).routes == 1
    queued = await _order(client, auth, second)
    assert (await dispatch(client, clock)).routes == 1  # the only courier: queued behind the far door
    route_before = await db.fetchval("SELECT route_id FROM jobs WHERE order_id = $1", queued["id"])
    joining = await _order(client, auth, third)
    assert (await dispatch(client, clock)).routes == 1
    route_after = await db.fetchval("SELECT route_id FROM jobs WHERE order_id = $1", queued["id"])
    assert route_after != route_before  # re-planned ...
    couriers = await _couriers_of_orders(db)
    assert couriers[queued["id"]] == couriers[joining["id"]] == busy  # ... onto the same courier
    told = await db.fetch(
        """SELECT payload->'courier' AS courier FROM events
           WHERE recipient = $1 AND type = 'order.updated' ORDER BY seq""",
        second,
    )
    assert [r["courier"] for r in told] == [None] * len(told)
    assert (
        await db.fetchval("SELECT count(*) FROM events WHERE recipient = $1 AND type = 'order.eta'", second)
        >= 1
    )
