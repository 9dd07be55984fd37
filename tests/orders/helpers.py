"""Building a small neighbourhood through the admin API, and reading websockets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from tests.timing import SECOND

Client = TestClient[Any, Any]
DOOR = (45.7600, 4.8300)


def square(lat: float, lng: float, half_deg: float) -> dict[str, Any]:
    ring = [
        [lng - half_deg, lat - half_deg],
        [lng + half_deg, lat - half_deg],
        [lng + half_deg, lat + half_deg],
        [lng - half_deg, lat + half_deg],
        [lng - half_deg, lat - half_deg],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


async def add_shop(
    client: Client,
    admin: dict[str, str],
    stock: dict[str, int],
    *,
    offset_deg: float = 0.002,
    auto_accept: bool = False,
    price: int = 100,
    **fields: Any,
) -> str:
    lat, lng = DOOR[0] + offset_deg, DOOR[1]
    body = {
        "name": f"Shop {offset_deg}",
        "lat": lat,
        "lng": lng,
        "zone": square(DOOR[0], DOOR[1], 0.02),
        "auto_accept": auto_accept,
        **fields,
    }
    r = await client.post("/v1/shops", json=body, headers=admin)
    assert r.status == 201, await r.text()
    shop_id: str = (await r.json())["id"]
    for sku, qty in stock.items():
        r = await client.put(
            f"/v1/shops/{shop_id}/catalogue/{sku}",
            json={"name": sku, "price_cents": price, "stock": qty},
            headers=admin,
        )
        assert r.status == 200, await r.text()
    return shop_id


async def add_resident(client: Client, admin: dict[str, str]) -> str:
    r = await client.post("/v1/residents", json={"name": "Resident"}, headers=admin)
    assert r.status == 201
    resident_id: str = (await r.json())["id"]
    return resident_id


def order_body(items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"dropoff": {"lat": DOOR[0], "lng": DOOR[1]}, "items": items, **extra}


async def place(
    client: Client, headers: dict[str, str], items: list[dict[str, Any]], **extra: Any
) -> tuple[int, dict[str, Any]]:
    r = await client.post("/v1/orders", json=order_body(items, **extra), headers=headers)
    body: dict[str, Any] = await r.json()
    return r.status, body


async def recv(ws: Any) -> dict[str, Any]:
    msg = await ws.receive(timeout=5 * SECOND)
    assert msg.type == WSMsgType.TEXT, msg
    data: dict[str, Any] = msg.json()
    return data


async def recv_event(ws: Any, type_: str) -> dict[str, Any]:
    """The next event of `type_`, skipping others (replies, hello, other events)."""
    for _ in range(50):
        msg = await recv(ws)
        if msg.get("type") == type_ and "seq" in msg:
            return msg
    raise AssertionError(f"no {type_} event")


async def stock_of(db: Any, shop_id: str, sku: str) -> int:
    value: int = await db.fetchval(
        "SELECT stock FROM catalogue_items WHERE shop_id = $1 AND sku = $2", shop_id, sku
    )
    return value


AuthFn = Callable[..., dict[str, str]]
