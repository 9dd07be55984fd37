"""The dispatch round: split orders on one route, same-shop bundles, capacity, shift end, staleness and
reassignment, and one run per round."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from h3.api import basic_int as h3

from dispatch.api.keys import RUNTIME
from dispatch.clock import ManualClock
from dispatch.services import dispatching
from dispatch.services.couriers import fire_due_shifts
from dispatch.services.dispatching import _Fleet, _until_next_look, run_round
from dispatch.services.locations import CELL_RESOLUTION
from tests.couriers.helpers import (
    DOOR,
    NEAR_SHOP,
    AuthFn,
    Client,
    add_courier,
    add_resident,
    add_shop,
    dispatch,
    on_shift,
    ping,
    place,
    ready_courier,
    recv,
    routes_of,
    trip,
)
from tests.orders.helpers import recv_event

NEAR_A = (DOOR[0] + 0.0025, DOOR[1])


async def two_shops(client: Client, auth: AuthFn) -> tuple[str, str]:
    admin = auth("admin")
    a = await add_shop(client, admin, {"bread": 20}, offset_deg=0.002, auto_accept=True, prep_minutes=5)
    b = await add_shop(client, admin, {"apples": 20}, offset_deg=0.004, auto_accept=True, prep_minutes=5)
    return a, b


async def order(client: Client, auth: AuthFn, resident: str, **skus: int) -> dict[str, Any]:
    status, body = await place(
        client, auth("resident", resident), [{"sku": s, "qty": q} for s, q in skus.items()]
    )
    assert status == 201, body
    return body


def kinds(route: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(s["kind"], s["shop_id"] or s["order_id"]) for s in route["stops"]]


async def test_split_order_goes_on_one_route_shop_a_shop_b_door(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    a, b = await two_shops(client, auth)
    resident = await add_resident(client, auth("admin"))
    couriers = [await ready_courier(client, auth, clock, NEAR_A) for _ in range(2)]
    async with (
        client.ws_connect("/v1/ws", headers=auth("resident", resident)) as res_ws,
    ):
        await recv(res_ws)
        placed = await order(client, auth, resident, bread=1, apples=2)
        assert sorted(j["shop_id"] for j in placed["jobs"]) == sorted([a, b])
        report = await dispatch(client, clock)
        assert (report.jobs, report.routes) == (2, 1)
        eta = await recv_event(res_ws, "order.eta")
    routes = [r for c in couriers for r in await routes_of(client, auth, c)]
    (route,) = routes
    assert route["state"] == "active"  # auto-accept is the default
    # Both shops, then the door; B first: the door is beyond A, coming from B.
    assert kinds(route) == [("pickup", b), ("pickup", a), ("dropoff", placed["id"])]
    assert [s["items"] for s in route["stops"]] == [2, 1, 3]
    etas = [s["eta"]["service"] for s in route["stops"]]
    assert etas == sorted(etas)
    # The resident has the ETA of its drop-off and the code, which the courier never sees.
    r = await client.get(f"/v1/orders/{placed['id']}/delivery", headers=auth("resident", resident))
    delivery = await r.json()
    assert eta["data"]["order_id"] == placed["id"]
    assert eta["data"]["eta"] == route["stops"][2]["eta"]["service"]
    assert eta["data"]["code"] == delivery["code"]
    assert len(delivery["code"]) == 4
    assert "code" not in str(route).replace("'proof'", "")  # no code field anywhere in the courier's view
    assert await db.fetchval("SELECT count(DISTINCT route_id) FROM jobs") == 1


async def test_same_shop_orders_are_bundled_and_the_courier_is_told(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    a, _ = await two_shops(client, auth)
    admin = auth("admin")
    residents = [await add_resident(client, admin) for _ in range(2)]
    courier = await ready_courier(client, auth, clock, NEAR_A)
    async with client.ws_connect("/v1/ws", headers=auth("courier", courier)) as ws:
        await recv(ws)
        orders = [await order(client, auth, r, bread=1) for r in residents]
        assert (await dispatch(client, clock)).routes == 1
        offered = await recv_event(ws, "route.offered")
    assert kinds(offered["data"])[0] == ("pickup", a)
    assert sorted(k for k in kinds(offered["data"])[1:]) == sorted(("dropoff", o["id"]) for o in orders)
    assert sorted(offered["data"]["stops"][0]["job_ids"]) == sorted(o["jobs"][0]["id"] for o in orders)


async def test_the_rounds_cpu_work_runs_off_the_event_loop(
    client: Client, auth: AuthFn, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A city's round is seconds of CPU: on the loop it would hold every request, ping and websocket of the
    node meanwhile (1,000 jobs x 2,000 couriers held it for up to half a second)."""
    threads: dict[str, int] = {}

    def on(name: str, real: Any) -> Any:
        def run(*args: Any) -> Any:
            threads[name] = threading.get_ident()
            return real(*args)

        return run

    monkeypatch.setattr(dispatching, "decide", on("decide", dispatching.decide))
    monkeypatch.setattr(dispatching, "_fleet_of", on("fleet", dispatching._fleet_of))
    await two_shops(client, auth)
    await ready_courier(client, auth, clock, NEAR_A)
    await order(client, auth, await add_resident(client, auth("admin")), bread=1)
    assert (await dispatch(client, clock)).routes == 1
    assert threads.keys() == {"decide", "fleet"}
    assert threading.get_ident() not in threads.values()


async def test_capacity_is_respected(client: Client, auth: AuthFn, clock: ManualClock) -> None:
    await two_shops(client, auth)
    resident = await add_resident(client, auth("admin"))
    small = await ready_courier(client, auth, clock, NEAR_A, capacity=2)
    big = await add_courier(client, auth("admin"), capacity=5)  # not on shift yet
    await order(client, auth, resident, bread=3)
    assert (await dispatch(client, clock)).routes == 0
    assert await routes_of(client, auth, small) == []
    await on_shift(client, auth, big)
    await ping(client, auth, big, (DOOR[0] + 0.01, DOOR[1]), clock.now())
    assert (await dispatch(client, clock)).routes == 1
    assert len(await routes_of(client, auth, big)) == 1


async def test_a_job_heavier_than_any_courier_can_carry_is_refused_at_placement(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    await two_shops(client, auth)
    resident = await add_resident(client, auth("admin"))
    await ready_courier(client, auth, clock, NEAR_A, capacity=2)
    await add_courier(client, auth("admin"), capacity=3)  # off shift: still a courier who could carry 3
    status, body = await place(client, auth("resident", resident), [{"sku": "bread", "qty": 4}])
    assert (status, body["error"]["code"]) == (409, "exceeds_courier_capacity")
    details = body["error"]["details"]
    assert (details["items"], details["max_items"]) == (4, 3)
    # The door is within walking distance of the shop (222 m): pick-up is offered.
    assert details["alternatives"] == [{"fulfilment": "pickup"}]
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    assert (
        await db.fetchval("SELECT sum(stock) FROM catalogue_items WHERE sku = 'bread'") == 20
    )  # nothing taken
    status, body = await place(
        client, auth("resident", resident), [{"sku": "bread", "qty": 4}], fulfilment="pickup"
    )
    assert status == 201, body


async def test_no_pickup_after_the_shift_ends(client: Client, auth: AuthFn, clock: ManualClock) -> None:
    await two_shops(client, auth)
    admin = auth("admin")
    resident = await add_resident(client, admin)
    leaving = await add_courier(client, admin)
    shift = {
        "start": (clock.now() - timedelta(hours=1)).isoformat(),
        "end": (clock.now() + timedelta(minutes=3)).isoformat(),
    }
    assert (await client.post(f"/v1/couriers/{leaving}/shifts", json=shift, headers=admin)).status == 201
    assert await fire_due_shifts(client.app[RUNTIME].services) == 1
    await ping(client, auth, leaving, NEAR_A, clock.now())
    await order(client, auth, resident, bread=1)  # ready in 5 minutes: after the shift
    assert (await dispatch(client, clock)).routes == 0
    staying = await ready_courier(client, auth, clock, (DOOR[0] + 0.01, DOOR[1]))
    assert (await dispatch(client, clock)).routes == 1
    assert len(await routes_of(client, auth, staying)) == 1
    assert await routes_of(client, auth, leaving) == []


async def test_off_shift_and_stale_couriers_get_no_work(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    await two_shops(client, auth)
    admin = auth("admin")
    resident = await add_resident(client, admin)
    off = await add_courier(client, admin)
    await ping(client, auth, off, NEAR_A, clock.now())  # pinging, but not on shift
    stale = await ready_courier(client, auth, clock, NEAR_A)
    clock.advance(31)
    await ping(client, auth, off, NEAR_A, clock.now())
    await order(client, auth, resident, bread=1)
    report = await dispatch(client, clock)
    assert (report.couriers, report.routes) == (0, 0)
    fresh = await ready_courier(client, auth, clock, (DOOR[0] + 0.01, DOOR[1]))
    assert (await dispatch(client, clock)).routes == 1
    assert len(await routes_of(client, auth, fresh)) == 1
    assert await routes_of(client, auth, stale) == []


async def test_stale_courier_work_is_reassigned_and_both_sides_told(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    await two_shops(client, auth)
    resident = await add_resident(client, auth("admin"))
    first = await ready_courier(client, auth, clock, NEAR_A)
    placed = await order(client, auth, resident, bread=1)
    assert (await dispatch(client, clock)).routes == 1
    (old,) = await routes_of(client, auth, first)
    async with (
        client.ws_connect("/v1/ws", headers=auth("courier", first)) as courier_ws,
        client.ws_connect("/v1/ws", headers=auth("resident", resident)) as res_ws,
    ):
        await recv(courier_ws)
        await recv(res_ws)
        clock.advance(26)
        second = await ready_courier(client, auth, clock, (DOOR[0] + 0.01, DOOR[1]))
        report = await dispatch(client, clock)  # 31 s after the first courier's last ping
        assert (report.released, report.routes) == (1, 1)
        cancelled = await recv_event(courier_ws, "route.cancelled")
        assert cancelled["data"]["id"] == old["id"]
        assert {s["state"] for s in cancelled["data"]["stops"]} == {"cancelled"}
        told = await recv_event(res_ws, "order.updated")
        assert told["data"]["courier"] == {"state": "reassigning", "reason": "courier_stale"}
        assert (await recv_event(res_ws, "order.eta"))["data"]["order_id"] == placed["id"]
    (new,) = await routes_of(client, auth, second)
    assert new["stops"][0]["job_ids"] == old["stops"][0]["job_ids"]
    assert await routes_of(client, auth, first) == []
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE route_id = $1", new["id"]) == 1


async def test_off_shift_courier_gives_back_what_it_has_not_picked_up(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    await two_shops(client, auth)
    resident = await add_resident(client, auth("admin"))
    first = await ready_courier(client, auth, clock, NEAR_A)
    await order(client, auth, resident, bread=1)
    assert (await dispatch(client, clock)).routes == 1
    r = await client.post(f"/v1/couriers/{first}/shift/end", headers=auth("courier", first))
    assert r.status == 200
    assert len(await routes_of(client, auth, first)) == 1  # stays until the next round reassigns it
    second = await ready_courier(client, auth, clock, (DOOR[0] + 0.01, DOOR[1]))
    report = await dispatch(client, clock)
    assert (report.released, report.routes) == (1, 1)
    assert await routes_of(client, auth, first) == []
    assert len(await routes_of(client, auth, second)) == 1


async def test_a_round_runs_once_however_often_it_is_asked(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    svc, live = client.app[RUNTIME].services, client.app[RUNTIME].services.live
    clock.advance(5)
    first = await run_round(svc, live)
    assert first is not None
    assert await run_round(svc, live) is None  # the same round: already run
    clock.advance(4.9)
    assert await run_round(svc, live) is None
    clock.advance(0.1)
    second = await run_round(svc, live)
    assert second is not None and second.round == first.round + 1
    assert await db.fetchval("SELECT count(*) FROM dispatch_rounds") == 2


async def test_rounds_keep_their_interval_when_one_starts_late(client: Client, clock: ManualClock) -> None:
    """A round due at T that starts late still leaves the next one due at T + DISPATCH_ROUND_S (5 s here), so
    a poll's wait and a round's own time do not stretch every interval; one missed altogether is skipped."""
    svc, live = client.app[RUNTIME].services, client.app[RUNTIME].services.live
    assert await run_round(svc, live) is not None  # the first: due from now on, every 5 s
    clock.advance(8)  # 3 s late
    assert await run_round(svc, live) is not None
    clock.advance(2)  # the grid's next point, 10 s after the first
    assert await run_round(svc, live) is not None
    clock.advance(12)  # 22 s: the round due at 15 s is 7 s late, the one at 20 s is missed
    assert await run_round(svc, live) is not None
    clock.advance(2.9)
    assert await run_round(svc, live) is None  # not back to back: the next is due at 25 s
    clock.advance(0.1)
    assert await run_round(svc, live) is not None


@pytest.mark.parametrize("settings", [{"timer_poll_s": 4.0}], indirect=True)
async def test_the_dispatch_loop_wakes_when_the_round_is_due_not_a_poll_later(
    client: Client, clock: ManualClock
) -> None:
    svc, live = client.app[RUNTIME].services, client.app[RUNTIME].services.live
    assert await run_round(svc, live) is not None  # the next is due in 5 s
    assert await _until_next_look(svc) == 4.0
    clock.advance(3.5)
    assert await _until_next_look(svc) == 1.5  # a whole poll would start the round 2.5 s late
    clock.advance(2)
    assert await _until_next_look(svc) == 0.0


def test_the_rings_around_a_pickup_widen_until_enough_distinct_couriers_are_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A courier is filed under where it is and where it will be free; found in both, it counts once."""
    monkeypatch.setattr(dispatching, "NEARBY_MIN", 2)
    origin = h3.latlng_to_cell(*DOOR, CELL_RESOLUTION)
    one, two = sorted(h3.grid_ring(origin, 1))[0], sorted(h3.grid_ring(origin, 2))[0]
    fleet = _Fleet([], {}, {origin: ["cou_a"], one: ["cou_a"], two: ["cou_b"]}, {})
    assert fleet._around(origin) == ["cou_a", "cou_b"]


async def test_cancelled_order_frees_the_couriers_route_at_once(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    t = await trip(client, auth, clock)
    async with client.ws_connect("/v1/ws", headers=auth("courier", t.courier)) as ws:
        await recv(ws)
        r = await client.post(f"/v1/orders/{t.order['id']}/cancel", headers=auth("resident", t.resident))
        assert r.status == 200
        cancelled = await recv_event(ws, "route.cancelled")  # no dispatch round in between
        assert cancelled["data"]["id"] == t.route["id"]
        assert [s["state"] for s in cancelled["data"]["stops"]] == ["cancelled", "cancelled"]
        assert await routes_of(client, auth, t.courier) == []
        # Free for new work: the next round gives the courier the next order.
        resident = await add_resident(client, auth("admin"))
        await order(client, auth, resident, bread=1)
        await ping(client, auth, t.courier, NEAR_SHOP, clock.now())
        assert (await dispatch(client, clock)).routes == 1
        assert (await recv_event(ws, "route.offered"))["data"]["stops"][0]["state"] == "pending"


async def test_cancelling_one_order_of_a_bundle_keeps_the_rest_of_the_route(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    await two_shops(client, auth)
    admin = auth("admin")
    residents = [await add_resident(client, admin) for _ in range(2)]
    courier = await ready_courier(client, auth, clock, NEAR_A)
    gone, kept = [await order(client, auth, r, bread=n) for r, n in zip(residents, (1, 2), strict=True)]
    assert (await dispatch(client, clock)).routes == 1
    async with client.ws_connect("/v1/ws", headers=auth("courier", courier)) as ws:
        await recv(ws)
        r = await client.post(f"/v1/orders/{gone['id']}/cancel", headers=auth("resident", residents[0]))
        assert r.status == 200
        updated = (await recv_event(ws, "route.updated"))["data"]
    pickup, *drops = updated["stops"]
    assert (pickup["state"], pickup["job_ids"], pickup["items"]) == ("pending", [kept["jobs"][0]["id"]], 2)
    assert sorted((d["order_id"], d["state"]) for d in drops) == sorted(
        [(gone["id"], "cancelled"), (kept["id"], "pending")]
    )
    (route,) = await routes_of(client, auth, courier)
    assert route["state"] == "active"
    assert [s["id"] for s in route["stops"]] == [pickup["id"], *(d["id"] for d in drops)]


async def test_bundles_never_exceed_what_a_courier_on_shift_can_carry(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    """Three same-shop orders of 2 items for one courier carrying 4: a bundle of all three (6 items) could
    never be placed and would block them all (it did, round after round); now work goes out."""
    admin = auth("admin")
    await add_shop(client, admin, {"bread": 20}, offset_deg=0.002, auto_accept=True, prep_minutes=5)
    courier = await ready_courier(client, auth, clock, NEAR_SHOP, capacity=4)
    for _ in range(3):
        await order(client, auth, await add_resident(client, admin), bread=2)
    report = await dispatch(client, clock)
    assert (report.jobs, report.routes) == (3, 1)
    (route,) = await routes_of(client, auth, courier)
    assert route["stops"][0]["kind"] == "pickup" and route["stops"][0]["items"] <= 4
