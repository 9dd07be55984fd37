"""Input PostgreSQL cannot store, nulls the schema seemed to allow, tokens for nobody or for ever: each a
clear 4xx with the field's path, nothing written, never a 500. Real requests against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest
from redis.asyncio import Redis

from dispatch.clock import SystemClock
from tests.conftest import SECRET
from tests.hostile.conftest import Server, assert_error_shape, bearer, raw_request, split_response
from tests.timing import SECOND

pytestmark = pytest.mark.slow
DOOR = {"lat": 45.76, "lng": 4.83}
NUL = "a\x00b"


async def _json(r: aiohttp.ClientResponse) -> Any:
    return await r.json(content_type=None)


async def _setup(http: aiohttp.ClientSession, server: Server) -> dict[str, str]:
    admin = bearer("admin")
    r = await http.post(server.url + "/v1/shops", json={"name": "S", **DOOR}, headers=admin)
    shop = (await _json(r))["id"]
    r = await http.put(
        f"{server.url}/v1/shops/{shop}/catalogue/milk",
        json={"name": "Milk", "price_cents": 100, "stock": 10},
        headers=admin,
    )
    assert r.status == 200, await r.text()
    resident = (
        await _json(await http.post(server.url + "/v1/residents", json={"name": "R"}, headers=admin))
    )["id"]
    courier = (await _json(await http.post(server.url + "/v1/couriers", json={"name": "C"}, headers=admin)))[
        "id"
    ]
    return {"shop": shop, "resident": resident, "courier": courier}


async def _counts(db: asyncpg.Connection) -> tuple[int, ...]:
    tables = (
        "orders",
        "jobs",
        "events",
        "catalogue_items",
        "shops",
        "residents",
        "couriers",
        "idempotency_keys",
    )
    return tuple([await db.fetchval(f"SELECT count(*) FROM {table}") for table in tables])


async def test_nul_characters_are_422_with_the_field_path(server: Server, db: asyncpg.Connection) -> None:
    async with aiohttp.ClientSession() as http:
        ids = await _setup(http, server)
        admin, shop = bearer("admin"), ids["shop"]
        before = await _counts(db)
        cases = [
            (
                "POST",
                "/v1/orders",
                bearer("resident", ids["resident"]),
                {"dropoff": DOOR, "items": [{"sku": "milk", "qty": 1}], "note": NUL},
                ["note"],
            ),
            (
                "POST",
                "/v1/orders",
                bearer("resident", ids["resident"]),
                {"dropoff": DOOR, "items": [{"sku": NUL, "qty": 1}]},
                ["items", 0, "sku"],
            ),
            (
                "PUT",
                f"/v1/shops/{shop}/catalogue/milk",
                admin,
                {"name": NUL, "price_cents": 1, "stock": 1},
                ["name"],
            ),
            ("POST", "/v1/shops", admin, {"name": NUL, **DOOR}, ["name"]),
            ("PATCH", f"/v1/shops/{shop}", admin, {"name": NUL}, ["name"]),
            ("POST", "/v1/residents", admin, {"name": NUL}, ["name"]),
            ("PATCH", f"/v1/residents/{ids['resident']}", admin, {"phone": NUL}, ["phone"]),
            ("POST", "/v1/couriers", admin, {"name": "C", "phone": NUL}, ["phone"]),
            (
                "POST",
                "/v1/shops",
                admin,
                {"name": "S", **DOOR, "opening_hours": {NUL: []}},
                ["opening_hours", NUL],
            ),
        ]
        for method, path, headers, body, field in cases:
            r = await http.request(method, server.url + path, json=body, headers=headers)
            answer = await _json(r)
            assert r.status == 422, (path, answer)
            assert_error_shape(answer, "validation_failed")
            assert [d["path"] for d in answer["error"]["details"]] == [field], answer
            assert answer["error"]["details"][0]["code"] == "nul_character"
        # A %00 in a SKU path.
        r = await http.put(
            f"{server.url}/v1/shops/{shop}/catalogue/mi%00lk",
            json={"name": "M", "price_cents": 1, "stock": 1},
            headers=admin,
        )
        answer = await _json(r)
        assert r.status == 422 and answer["error"]["details"][0]["path"] == ["sku"], answer
        # order_id of a websocket order.cancel.
        async with http.ws_connect(server.url + "/v1/ws", headers=bearer("resident", ids["resident"])) as ws:
            assert (await ws.receive_json(timeout=5 * SECOND))["type"] == "hello"
            await ws.send_json({"type": "order.cancel", "id": 7, "order_id": "ord_" + NUL})
            reply = await ws.receive_json(timeout=5 * SECOND)
            assert reply["id"] == 7 and reply["ok"] is False, reply
            assert reply["error"]["code"] == "validation_failed"
            assert reply["error"]["details"][0]["path"] == ["order_id"], reply
        assert await _counts(db) == before
    assert "Traceback" not in server.logs()


async def test_header_bytes_that_are_not_ascii_are_4xx(server: Server, db: asyncpg.Connection) -> None:
    """Header bytes arrive as undecodable surrogates: a key PostgreSQL cannot store, a token PyJWT cannot
    read."""
    async with aiohttp.ClientSession() as http:
        ids = await _setup(http, server)
    token = bearer("resident", ids["resident"])["Authorization"].encode()
    body = b'{"dropoff": {"lat": 45.76, "lng": 4.83}, "items": [{"sku": "milk", "qty": 1}]}'
    head = b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
    length = b"Content-Length: %d\r\n" % len(body)
    status, _, answer = split_response(
        raw_request(
            server,
            head
            + b"Authorization: "
            + token
            + b"\r\nIdempotency-Key: k\xff\xfe\r\n"
            + length
            + b"\r\n"
            + body,
        )
    )
    assert status == 400 and answer["error"]["code"] == "bad_idempotency_key", answer
    status, _, answer = split_response(
        raw_request(server, head + b"Authorization: Bearer ey\xffJ.x.y\r\n" + length + b"\r\n" + body)
    )
    assert status == 401 and answer["error"]["code"] == "invalid_token", answer
    assert await db.fetchval("SELECT count(*) FROM orders") == 0


@pytest.mark.parametrize("field", ["active", "capacity"])
async def test_null_for_a_courier_field_that_cannot_be_null_is_422(
    server: Server, db: asyncpg.Connection, field: str
) -> None:
    async with aiohttp.ClientSession() as http:
        ids = await _setup(http, server)
        r = await http.patch(
            f"{server.url}/v1/couriers/{ids['courier']}", json={field: None}, headers=bearer("admin")
        )
        answer = await _json(r)
        assert r.status == 422, answer
        assert_error_shape(answer, "validation_failed")
        assert answer["error"]["details"][0]["path"] == [field]
        # Left out, it is left alone; given, it is set.
        r = await http.patch(
            f"{server.url}/v1/couriers/{ids['courier']}", json={"name": "D"}, headers=bearer("admin")
        )
        assert r.status == 200 and (await _json(r))[field] is not None
    row = await db.fetchrow("SELECT active, capacity FROM couriers WHERE id = $1", ids["courier"])
    assert row is not None and (row["active"], row["capacity"]) == (True, 4)


async def test_a_token_for_a_subject_that_does_not_exist_is_401_and_writes_nothing(
    server: Server, db: asyncpg.Connection, redis: Redis
) -> None:
    ghost_resident, ghost_courier, ghost_shop = (
        "res_ghostghostghost1",
        "cou_ghostghostghost1",
        "shop_ghostghostghos1",
    )
    async with aiohttp.ClientSession() as http:
        await _setup(http, server)
        before = await _counts(db)
        r = await http.post(
            server.url + "/v1/orders",
            json={"dropoff": DOOR, "items": [{"sku": "milk", "qty": 1}]},
            headers=bearer("resident", ghost_resident),
        )
        answer = await _json(r)
        assert r.status == 401, answer
        assert_error_shape(answer, "unknown_subject")
        r = await http.post(
            f"{server.url}/v1/couriers/{ghost_courier}/location",
            json={**DOOR, "accuracy": 5, "at": SystemClock().now().isoformat()},
            headers=bearer("courier", ghost_courier),
        )
        answer = await _json(r)
        assert r.status == 401, answer
        assert_error_shape(answer, "unknown_subject")
        # Websocket, by header (refused at the upgrade) and by auth message.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(server.url + "/v1/ws", headers=bearer("shop", ghost_shop))
        assert refused.value.status == 401
        token = bearer("courier", ghost_courier)["Authorization"].split()[1]
        async with http.ws_connect(server.url + "/v1/ws") as ws:
            await ws.send_json({"type": "auth", "token": token, "id": 1})
            reply = await ws.receive_json(timeout=5 * SECOND)
            assert reply["ok"] is False and reply["error"]["code"] == "unknown_subject", reply
            assert (await ws.receive(timeout=5 * SECOND)).type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
            )
            assert ws.close_code == 1008
    assert await _counts(db) == before
    assert await redis.keys(f"*{ghost_courier}*") == []
    assert "Traceback" not in server.logs()


def _token(**claims: Any) -> dict[str, str]:
    now = int(SystemClock().now().timestamp())
    body = {"sub": "ops", "role": "admin", "iat": now, "exp": now + 3600, **claims}
    return {"Authorization": "Bearer " + jwt.encode(body, SECRET, algorithm="HS256")}


async def test_tokens_living_too_long_or_not_yet_valid_are_401(server: Server) -> None:
    now = int(SystemClock().now().timestamp())
    async with aiohttp.ClientSession() as http:
        for headers, code in [
            (_token(exp=10**30), "token_lifetime_too_long"),
            (_token(iat=now, exp=now + 31 * 24 * 3600), "token_lifetime_too_long"),
            (_token(nbf=now + 3600), "token_not_yet_valid"),
        ]:
            r = await http.get(server.url + "/v1/shops", headers=headers)
            answer = await _json(r)
            assert r.status == 401, answer
            assert_error_shape(answer, code)
        assert (await http.get(server.url + "/v1/shops", headers=_token(nbf=now - 10))).status == 200


def test_dispatch_token_refuses_a_ttl_beyond_the_cap(tmp_path: Any) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dispatch",
            "token",
            "--role",
            "admin",
            "--subject",
            "ops",
            "--ttl",
            str(10**9),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60 * SECOND,
        env={**os.environ, "DISPATCH_SECRET": SECRET},
    )
    assert done.returncode == 2 and not done.stdout, done
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("dispatch: error: ") and "DISPATCH_TOKEN_MAX_TTL" in lines[0]
    )
