"""A small neighbourhood with couriers, driven through the HTTP API, and the dispatch round run on demand."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dispatch.api.keys import RUNTIME
from dispatch.clock import ManualClock
from dispatch.services.dispatching import RoundReport, run_round
from tests.orders.helpers import DOOR, AuthFn, Client, add_resident, add_shop, place, recv

__all__ = ["DOOR", "AuthFn", "Client", "add_resident", "add_shop", "place", "recv"]


async def add_courier(client: Client, admin: dict[str, str], capacity: int = 4) -> str:
    r = await client.post("/v1/couriers", json={"name": "Rider", "capacity": capacity}, headers=admin)
    assert r.status == 201, await r.text()
    courier_id: str = (await r.json())["id"]
    return courier_id


async def on_shift(client: Client, auth: AuthFn, courier_id: str) -> None:
    r = await client.post(f"/v1/couriers/{courier_id}/shift/start", headers=auth("courier", courier_id))
    assert r.status == 200, await r.text()


async def ping(
    client: Client,
    auth: AuthFn,
    courier_id: str,
    at_point: tuple[float, float],
    when: datetime,
    accuracy: float = 5.0,
) -> dict[str, Any]:
    body = {"lat": at_point[0], "lng": at_point[1], "accuracy": accuracy, "at": when.isoformat()}
    r = await client.post(
        f"/v1/couriers/{courier_id}/location", json=body, headers=auth("courier", courier_id)
    )
    assert r.status == 200, await r.text()
    result: dict[str, Any] = await r.json()
    return result


async def ready_courier(
    client: Client, auth: AuthFn, clock: ManualClock, where: tuple[float, float], capacity: int = 4
) -> str:
    courier_id = await add_courier(client, auth("admin"), capacity)
    await on_shift(client, auth, courier_id)
    await ping(client, auth, courier_id, where, clock.now())
    return courier_id


async def dispatch(client: Client, clock: ManualClock) -> RoundReport:
    """Run a round now (the round timer is due every DISPATCH_ROUND_S of the manual clock)."""
    clock.advance(5)
    report = await run_round(client.app[RUNTIME].services, client.app[RUNTIME].services.live)
    assert report is not None
    return report


async def routes_of(client: Client, auth: AuthFn, courier_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/couriers/{courier_id}/status", headers=auth("courier", courier_id))
    assert r.status == 200, await r.text()
    routes: list[dict[str, Any]] = (await r.json())["routes"]
    return routes


async def post(client: Client, path: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
    r = (
        await client.post(path, json=body, headers=headers)
        if body is not None
        else await client.post(path, headers=headers)
    )
    answer: Any = await r.json()
    return r.status, answer


_ids = itertools.count(1)


async def command(ws: Any, type_: str, **body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a command; its reply, and the messages that came before it."""
    msg_id = f"c{next(_ids)}"
    await ws.send_json({"type": type_, "id": msg_id, **body})
    before: list[dict[str, Any]] = []
    for _ in range(50):
        msg = await recv(ws)
        if msg.get("type") == "reply" and msg.get("id") == msg_id:
            return msg, before
        before.append(msg)
    raise AssertionError(f"no reply to {type_}")


@dataclass
class Trip:
    """One order from one shop, on one courier's active route: pickup, then drop-off."""

    shop: str
    resident: str
    courier: str
    order: dict[str, Any]
    route: dict[str, Any]

    @property
    def pickup(self) -> dict[str, Any]:
        stop: dict[str, Any] = self.route["stops"][0]
        return stop

    @property
    def dropoff(self) -> dict[str, Any]:
        stop: dict[str, Any] = self.route["stops"][1]
        return stop


SHOP_AT = (DOOR[0] + 0.002, DOOR[1])  # where `trip` puts the shop: 222 m north of the door
NEAR_SHOP = (DOOR[0] + 0.0025, DOOR[1])  # 56 m from the shop, within DISPATCH_ARRIVAL_RADIUS_M


async def trip(client: Client, auth: AuthFn, clock: ManualClock, *, ready: bool = True) -> Trip:
    """`ready`: the shop marks the job ready once it is on the route (a courier collects ready goods only)."""
    admin = auth("admin")
    shop = await add_shop(client, admin, {"bread": 9}, offset_deg=0.002, auto_accept=True, prep_minutes=5)
    resident = await add_resident(client, admin)
    courier = await ready_courier(client, auth, clock, NEAR_SHOP)
    status, order = await place(client, auth("resident", resident), [{"sku": "bread", "qty": 1}])
    assert status == 201, order
    assert (await dispatch(client, clock)).routes == 1
    (route,) = await routes_of(client, auth, courier)
    assert [s["kind"] for s in route["stops"]] == ["pickup", "dropoff"]
    if ready:
        r = await client.post(f"/v1/jobs/{order['jobs'][0]['id']}/ready", headers=auth("shop", shop))
        assert r.status == 200, await r.text()
    return Trip(shop, resident, courier, order, route)


async def code_of(client: Client, auth: AuthFn, t: Trip) -> str:
    r = await client.get(f"/v1/orders/{t.order['id']}/delivery", headers=auth("resident", t.resident))
    assert r.status == 200
    code: str = (await r.json())["code"]
    return code
