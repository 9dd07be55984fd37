"""The HTTP edge tried as a hostile client would: every failure has its status and the one error shape,
nothing is written, and the server keeps serving."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dispatch.clock import ManualClock, ScaledClock, describe, from_description

Client = TestClient[Any, Any]
SHOP = {"name": "Corner", "lat": 45.76, "lng": 4.83}


def assert_error(body: Any, code: str | None = None) -> None:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body


async def count(db: asyncpg.Connection, table: str) -> int:
    value = await db.fetchval(f"SELECT count(*) FROM {table}")
    assert isinstance(value, int)
    return value


async def test_health_and_readiness(client: Client) -> None:
    r = await client.get("/healthz")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    r = await client.get("/readyz")
    assert r.status == 200, await r.text()
    assert r.headers["X-Request-ID"]


async def test_metrics_are_prometheus_text(client: Client) -> None:
    await client.get("/healthz")
    await client.get("/nope")
    r = await client.get("/metrics")
    assert r.status == 200
    text = await r.text()
    assert 'dispatch_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "dispatch_db_pool_connections" in text
    assert "dispatch_websocket_connections" in text
    assert "dispatch_http_request_seconds_bucket" in text


async def test_openapi_describes_every_route(client: Client) -> None:
    r = await client.get("/openapi.json")
    doc = await r.json()
    assert doc["openapi"].startswith("3.")
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    missing = served - described - {("GET", "/openapi.json")}
    assert not missing, missing
    assert doc["paths"]["/v1/shops"]["post"]["requestBody"]
    assert "ShopIn" in doc["components"]["schemas"]


async def test_unknown_route_and_wrong_method(client: Client) -> None:
    r = await client.get("/v1/does-not-exist")
    assert r.status == 404
    assert_error(await r.json(), "not_found")
    r = await client.delete("/healthz")
    assert r.status == 405
    assert_error(await r.json(), "method_not_allowed")
    assert "GET" in r.headers["Allow"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "empty_body"),
        (b"\xff\xfe\x00", "application/json", 400, "malformed_json"),
        (b"[1, 2, 3]", "application/json", 422, "validation_failed"),
        (b'"a string"', "application/json", 422, "validation_failed"),
        (b"null", "application/json", 422, "validation_failed"),
        (b'{"name": 5, "lat": "north", "lng": 4.8}', "application/json", 422, "validation_failed"),
        (b'{"name": "x", "lat": 91, "lng": 4.8}', "text/plain", 422, "validation_failed"),
        (b'{"name": "x", "lat": NaN, "lng": 4.8}', "application/json", 400, "malformed_json"),
        (
            b'{"name": "x", "lat": 45, "lng": 4.8, "admin": true}',
            "application/json",
            422,
            "validation_failed",
        ),
    ],
)
async def test_bad_bodies(
    client: Client,
    db: asyncpg.Connection,
    auth: Callable[..., dict[str, str]],
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    headers = {**auth("admin"), "Content-Type": content_type}
    r = await client.post("/v1/shops", data=body, headers=headers)
    assert r.status == status, await r.text()
    assert_error(await r.json(), code)
    assert await count(db, "shops") == 0


async def test_validation_errors_carry_field_paths(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    r = await client.post("/v1/shops", json={"name": "", "lat": 123, "lng": True}, headers=auth("admin"))
    assert r.status == 422
    body = await r.json()
    paths = {tuple(d["path"]) for d in body["error"]["details"]}
    assert {("name",), ("lat",), ("lng",)} <= paths


async def test_huge_body_is_413_and_server_keeps_serving(
    client: Client, db: asyncpg.Connection, auth: Callable[..., dict[str, str]]
) -> None:
    big = b'{"name": "' + b"x" * (200 * 1024) + b'"}'
    r = await client.post(
        "/v1/shops", data=big, headers={**auth("admin"), "Content-Type": "application/json"}
    )
    assert r.status == 413
    assert_error(await r.json(), "payload_too_large")
    # Without a Content-Length the limit still applies while streaming.

    async def chunks() -> Any:
        for _ in range(100):
            yield b"x" * 4096

    r = await client.post("/v1/shops", data=chunks(), headers=auth("admin"))
    assert r.status == 413
    assert_error(await r.json())
    assert await count(db, "shops") == 0
    assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4Iiwicm9sZSI6ImFkbWluIn0."},
    ],
)
async def test_missing_or_forged_tokens(
    client: Client, db: asyncpg.Connection, headers: dict[str, str]
) -> None:
    r = await client.post("/v1/shops", json=SHOP, headers=headers)
    assert r.status == 401
    assert_error(await r.json())
    assert await count(db, "shops") == 0


async def test_expired_token(client: Client, clock: ManualClock, token: Callable[..., str]) -> None:
    t = token("admin", ttl=10)
    clock.advance(11)
    r = await client.post("/v1/shops", json=SHOP, headers={"Authorization": f"Bearer {t}"})
    assert r.status == 401
    assert_error(await r.json(), "token_expired")


async def test_wrong_role_is_403_and_writes_nothing(
    client: Client, db: asyncpg.Connection, auth: Callable[..., dict[str, str]]
) -> None:
    admin = auth("admin")
    subjects = {}
    for role, path in (("resident", "/v1/residents"), ("shop", "/v1/shops"), ("courier", "/v1/couriers")):
        r = await client.post(path, json=SHOP if role == "shop" else {"name": "X"}, headers=admin)
        subjects[role] = (await r.json())["id"]
    for role, subject in subjects.items():
        r = await client.post("/v1/shops", json=SHOP, headers=auth(role, subject))
        assert r.status == 403
        assert_error(await r.json(), "wrong_role")
    assert await count(db, "shops") == 1


async def test_admin_creates_and_updates_shop_couriers_residents(
    client: Client, db: asyncpg.Connection, auth: Callable[..., dict[str, str]]
) -> None:
    admin = auth("admin")
    r = await client.post("/v1/shops", json=SHOP, headers=admin)
    assert r.status == 201, await r.text()
    shop = await r.json()
    assert shop["id"].startswith("shop_") and shop["zone"]["type"] == "Polygon"
    cells = await db.fetchval(
        "SELECT cardinality(interior) + cardinality(edge) FROM shop_covers WHERE shop_id = $1", shop["id"]
    )
    assert cells > 0
    r = await client.patch(f"/v1/shops/{shop['id']}", json={"prep_minutes": 25}, headers=admin)
    assert r.status == 200 and (await r.json())["prep_minutes"] == 25

    r = await client.post("/v1/couriers", json={"name": "Ana", "capacity": 3}, headers=admin)
    assert r.status == 201
    courier = await r.json()
    r = await client.patch(f"/v1/couriers/{courier['id']}", json={"capacity": 5}, headers=admin)
    assert (await r.json())["capacity"] == 5
    r = await client.post("/v1/residents", json={"name": "Bo"}, headers=admin)
    resident = await r.json()
    r = await client.get(f"/v1/residents/{resident['id']}", headers=auth("resident", resident["id"]))
    assert r.status == 200 and (await r.json())["name"] == "Bo"


async def test_one_shop_cannot_touch_another_shops_catalogue(
    client: Client, db: asyncpg.Connection, auth: Callable[..., dict[str, str]]
) -> None:
    admin = auth("admin")
    a = await (await client.post("/v1/shops", json=SHOP, headers=admin)).json()
    b = await (await client.post("/v1/shops", json={**SHOP, "name": "B"}, headers=admin)).json()
    item = {"name": "Milk", "price_cents": 129, "stock": 10}
    r = await client.put(f"/v1/shops/{a['id']}/catalogue/milk", json=item, headers=auth("shop", a["id"]))
    assert r.status == 200, await r.text()
    r = await client.put(f"/v1/shops/{b['id']}/catalogue/milk", json=item, headers=auth("shop", a["id"]))
    assert r.status == 403
    assert_error(await r.json(), "not_owner")
    assert await count(db, "catalogue_items") == 1
    # Another resident's profile is off limits too.
    r = await client.post("/v1/residents", json={"name": "Cy"}, headers=admin)
    other = await r.json()
    r = await client.post("/v1/residents", json={"name": "Di"}, headers=admin)
    me = await r.json()
    r = await client.get(f"/v1/residents/{other['id']}", headers=auth("resident", me["id"]))
    assert r.status == 403


async def test_unknown_ids_are_404(client: Client, auth: Callable[..., dict[str, str]]) -> None:
    for path in ("/v1/shops/shop_aaaaaaaaaaaaaaaa", "/v1/shops/../../etc/passwd", "/v1/shops/not-an-id"):
        r = await client.get(path, headers=auth("admin"))
        assert r.status == 404, path
        assert_error(await r.json())
    # A NUL is refused wherever it is, an id included: 422 naming the parameter, as in a body.
    r = await client.get("/v1/shops/%00", headers=auth("admin"))
    assert r.status == 422
    body = await r.json()
    assert_error(body, "validation_failed")
    assert [(d["path"], d["code"]) for d in body["error"]["details"]] == [(["shop_id"], "nul_character")]
    r = await client.patch("/v1/couriers/cou_aaaaaaaaaaaaaaaa", json={"capacity": 2}, headers=auth("admin"))
    assert r.status == 404
    assert_error(await r.json(), "courier_not_found")


async def test_bad_opening_hours_and_zone_are_422(
    client: Client, db: asyncpg.Connection, auth: Callable[..., dict[str, str]]
) -> None:
    r = await client.post(
        "/v1/shops",
        json={**SHOP, "opening_hours": {"tz": "Mars/Olympus", "weekly": {}}},
        headers=auth("admin"),
    )
    assert r.status == 422
    assert (await r.json())["error"]["details"][0]["path"][0] == "opening_hours"
    r = await client.post(
        "/v1/shops",
        json={**SHOP, "zone": {"type": "Polygon", "coordinates": [[[4.8, 45.7], [4.9, 45.7]]]}},
        headers=auth("admin"),
    )
    assert r.status == 422
    assert (await r.json())["error"]["details"][0]["path"][0] == "zone"
    assert await count(db, "shops") == 0


async def test_the_clock_is_public_and_says_what_the_server_reads(client: Client, clock: ManualClock) -> None:
    """Other processes (the demo day, a replay) take the server's clock from here."""
    r = await client.get("/v1/clock")
    assert r.status == 200
    body = await r.json()
    assert body["now"] == clock.now().isoformat() and body["speed"] == 1.0


def test_a_scaled_clock_described_is_the_same_clock() -> None:
    start = datetime(2026, 1, 5, 12, tzinfo=UTC)
    scaled = ScaledClock(start, 60.0, time.time() - 2)
    again = from_description(describe(scaled))
    assert isinstance(again, ScaledClock)
    assert (again.start, again.speed, again.epoch) == (scaled.start, scaled.speed, scaled.epoch)
