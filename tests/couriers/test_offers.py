"""Route offers when couriers answer them (auto-accept off): accept, decline, no answer in time."""

from __future__ import annotations

import pytest

from dispatch.api.keys import RUNTIME
from dispatch.clock import ManualClock
from dispatch.config import Settings
from dispatch.services.route_offers import expire_offers
from tests.couriers.helpers import (
    DOOR,
    AuthFn,
    Client,
    add_resident,
    add_shop,
    command,
    dispatch,
    ping,
    place,
    post,
    ready_courier,
    recv,
    routes_of,
)
from tests.orders.helpers import recv_event

NEAR, FAR = (DOOR[0] + 0.0025, DOOR[1]), (DOOR[0] + 0.01, DOOR[1])


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_(courier_auto_accept=False, route_offer_s=30)


async def offered_route(client: Client, auth: AuthFn, clock: ManualClock) -> tuple[str, str, str, str]:
    """(near courier, far courier, resident, route offered to the near one)."""
    admin = auth("admin")
    await add_shop(client, admin, {"bread": 9}, offset_deg=0.002, auto_accept=True, prep_minutes=5)
    resident = await add_resident(client, admin)
    near = await ready_courier(client, auth, clock, NEAR)
    far = await ready_courier(client, auth, clock, FAR)
    status, _ = await place(client, auth("resident", resident), [{"sku": "bread", "qty": 1}])
    assert status == 201
    assert (await dispatch(client, clock)).routes == 1
    (route,) = await routes_of(client, auth, near)
    assert route["state"] == "offered"
    return near, far, resident, route["id"]


async def test_accept_over_the_websocket_tells_the_resident(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    near, far, resident, route_id = await offered_route(client, auth, clock)
    status, body = await post(client, f"/v1/routes/{route_id}/accept", auth("courier", far))
    assert (status, body["error"]["code"]) == (403, "not_your_route")
    async with client.ws_connect("/v1/ws", headers=auth("resident", resident)) as res_ws:
        await recv(res_ws)
        async with client.ws_connect("/v1/ws", headers=auth("courier", near)) as ws:
            await recv(ws)
            reply, _ = await command(ws, "route.accept", route_id=route_id)
            assert reply["ok"] is True, reply
            assert reply["data"]["state"] == "active"
            reply, _ = await command(ws, "route.accept", route_id=route_id)
            assert reply["error"]["code"] == "already_accepted"
            reply, _ = await command(ws, "route.decline", route_id=route_id)
            assert reply["error"]["code"] == "route_not_offered"
            reply, _ = await command(ws, "route.accept", route_id="rte_aaaaaaaaaaaaaaaa")
            assert reply["error"]["code"] == "route_not_found"
            reply, _ = await command(ws, "route.accept", route_id="nonsense")
            assert reply["error"]["code"] == "route_not_found"
        eta = await recv_event(res_ws, "order.eta")
        assert len(eta["data"]["code"]) == 4


async def test_decline_sends_the_jobs_to_another_courier(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    near, far, _, route_id = await offered_route(client, auth, clock)
    status, body = await post(
        client, f"/v1/routes/{route_id}/decline", auth("courier", near), {"reason": "flat tyre"}
    )
    assert status == 200, body
    assert body["state"] == "declined"
    assert {s["state"] for s in body["stops"]} == {"cancelled"}
    # The declining courier is nearer, but is not offered the job again.
    assert (await dispatch(client, clock)).routes == 1
    assert await routes_of(client, auth, near) == []
    (route,) = await routes_of(client, auth, far)
    assert route["state"] == "offered"


async def test_no_answer_in_time_frees_the_jobs(client: Client, auth: AuthFn, clock: ManualClock) -> None:
    near, far, _, route_id = await offered_route(client, auth, clock)
    svc, live = client.app[RUNTIME].services, client.app[RUNTIME].services.live
    assert await expire_offers(svc, live) == 0
    clock.advance(30)
    async with client.ws_connect("/v1/ws", headers=auth("courier", near)) as ws:
        await recv(ws)
        assert await expire_offers(svc, live) == 1
        assert await expire_offers(svc, live) == 0  # fires once
        updated = await recv_event(ws, "route.updated")
        assert updated["data"]["state"] == "expired"
    status, body = await post(client, f"/v1/routes/{route_id}/accept", auth("courier", near))
    assert (status, body["error"]["code"]) == (409, "offer_expired")
    for courier, where in ((near, NEAR), (far, FAR)):  # still there, still fresh
        await ping(client, auth, courier, where, clock.now())
    assert (await dispatch(client, clock)).routes == 1
    assert [r["state"] for r in await routes_of(client, auth, far)] == ["offered"]
