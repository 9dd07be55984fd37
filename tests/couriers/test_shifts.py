"""Shifts: on and off (HTTP and websocket), planned shifts fired once by the timer, and bad input."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from dispatch.api.keys import RUNTIME
from dispatch.clock import ManualClock
from dispatch.services.couriers import fire_due_shifts
from tests.couriers.helpers import AuthFn, Client, add_courier, command, recv


async def test_shift_on_and_off_over_http_and_websocket(client: Client, auth: AuthFn) -> None:
    courier = await add_courier(client, auth("admin"))
    me = auth("courier", courier)
    r = await client.post(f"/v1/couriers/{courier}/shift/start", headers=me)
    assert r.status == 200
    assert (await r.json())["on_shift"] is True
    r = await client.post(f"/v1/couriers/{courier}/shift/start", headers=me)
    assert r.status == 409
    assert (await r.json())["error"]["code"] == "already_on_shift"
    async with client.ws_connect("/v1/ws", headers=me) as ws:
        await recv(ws)
        reply, seen = await command(ws, "courier.shift_end")
        assert reply["ok"] is True, reply
        assert reply["data"]["on_shift"] is False
        reply, later = await command(ws, "courier.shift_end")
        assert reply["error"]["code"] == "not_on_shift"
        reply, more = await command(ws, "courier.shift_start", courier_id=courier)
        assert reply["ok"] is True
        assert "courier.shift_ended" in [m["type"] for m in seen + later + more]


async def test_a_courier_acts_only_as_itself(client: Client, auth: AuthFn, db: asyncpg.Connection) -> None:
    admin = auth("admin")
    me, other = await add_courier(client, admin), await add_courier(client, admin)
    r = await client.post(f"/v1/couriers/{other}/shift/start", headers=auth("courier", me))
    assert r.status == 403
    async with client.ws_connect("/v1/ws", headers=auth("courier", me)) as ws:
        await recv(ws)
        reply, _ = await command(ws, "courier.shift_start", courier_id=other)
        assert reply["error"]["code"] == "not_owner"
    assert await db.fetchval("SELECT count(*) FROM couriers WHERE on_shift") == 0
    # An admin may put any courier on shift; a resident may not.
    assert (await client.post(f"/v1/couriers/{other}/shift/start", headers=admin)).status == 200
    r = await client.post("/v1/residents", json={"name": "R"}, headers=admin)
    resident = auth("resident", (await r.json())["id"])
    assert (await client.post(f"/v1/couriers/{me}/shift/start", headers=resident)).status == 403


async def test_deactivated_courier_cannot_go_on_shift(client: Client, auth: AuthFn) -> None:
    admin = auth("admin")
    courier = await add_courier(client, admin)
    assert (
        await client.patch(f"/v1/couriers/{courier}", json={"active": False}, headers=admin)
    ).status == 200
    r = await client.post(f"/v1/couriers/{courier}/shift/start", headers=auth("courier", courier))
    assert r.status == 409
    assert (await r.json())["error"]["code"] == "courier_inactive"


async def test_planned_shift_starts_and_ends_once(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    admin = auth("admin")
    courier = await add_courier(client, admin)
    start, end = clock.now() + timedelta(minutes=1), clock.now() + timedelta(hours=2)
    r = await client.post(
        f"/v1/couriers/{courier}/shifts",
        json={"start": start.isoformat(), "end": end.isoformat()},
        headers=admin,
    )
    assert r.status == 201, await r.text()
    assert (await r.json())["state"] == "planned"
    svc = client.app[RUNTIME].services
    assert await fire_due_shifts(svc) == 0  # not due yet
    clock.advance(60)
    assert await fire_due_shifts(svc) == 1
    assert await fire_due_shifts(svc) == 0  # fires once
    row = await db.fetchrow("SELECT on_shift, shift_ends_at FROM couriers WHERE id = $1", courier)
    assert row is not None
    assert row["on_shift"] is True
    assert row["shift_ends_at"] == end
    clock.advance(2 * 3600)
    assert await fire_due_shifts(svc) == 1
    assert await db.fetchval("SELECT on_shift FROM couriers WHERE id = $1", courier) is False
    r = await client.get(f"/v1/couriers/{courier}/shifts", headers=auth("courier", courier))
    assert [s["state"] for s in (await r.json())["items"]] == ["ended"]


async def test_planned_shifts_are_validated(client: Client, auth: AuthFn, clock: ManualClock) -> None:
    admin = auth("admin")
    courier = await add_courier(client, admin)
    now = clock.now()

    async def plan(start: object, end: object) -> tuple[int, Any]:
        r = await client.post(
            f"/v1/couriers/{courier}/shifts", json={"start": start, "end": end}, headers=admin
        )
        return r.status, await r.json()

    hour = timedelta(hours=1)
    status, body = await plan((now + hour).isoformat(), now.isoformat())
    assert status == 422
    assert body["error"]["details"][0]["path"] == ["end"]
    status, body = await plan((now - 3 * hour).isoformat(), (now - hour).isoformat())
    assert status == 422
    assert body["error"]["details"][0]["code"] == "shift_in_past"
    status, body = await plan("tomorrow", (now + hour).isoformat())
    assert status == 422
    assert body["error"]["details"][0]["path"] == ["start"]
    assert (await plan(now.isoformat(), (now + 2 * hour).isoformat()))[0] == 201
    status, body = await plan((now + hour).isoformat(), (now + 3 * hour).isoformat())
    assert status == 409
    assert body["error"]["code"] == "shift_overlap"
    r = await client.post(
        f"/v1/couriers/{courier}/shifts",
        json={"start": now.isoformat(), "end": (now + hour).isoformat()},
        headers=auth("courier", courier),
    )
    assert r.status == 403
