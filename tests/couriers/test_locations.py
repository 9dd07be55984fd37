"""Courier pings: stored in Redis (not PostgreSQL), validated, implausible jumps flagged, staleness."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest
from redis.asyncio import Redis

from dispatch.api.keys import RUNTIME
from dispatch.clock import ManualClock
from tests.couriers.helpers import DOOR, AuthFn, Client, add_courier, command, on_shift, ping, recv


async def status(client: Client, auth: AuthFn, courier: str) -> dict[str, object]:
    r = await client.get(f"/v1/couriers/{courier}/status", headers=auth("admin"))
    assert r.status == 200
    body: dict[str, object] = await r.json()
    return body


async def test_ping_lands_in_redis_with_its_cell_not_in_postgres(
    client: Client, auth: AuthFn, clock: ManualClock, redis: Redis, db: asyncpg.Connection
) -> None:
    courier = await add_courier(client, auth("admin"))
    events_before = await db.fetchval("SELECT count(*) FROM events")
    assert await ping(client, auth, courier, DOOR, clock.now()) == {"status": "stored", "flagged": False}
    stored = await redis.hgetall(f"courier:loc:{courier}")
    assert float(stored[b"lat"]) == DOOR[0]
    assert int(stored[b"cell"]) > 0
    assert await redis.ttl(f"courier:loc:{courier}") > 0  # it expires
    assert await db.fetchval("SELECT count(*) FROM events") == events_before
    seen = await status(client, auth, courier)
    assert seen["stale"] is False
    assert seen["position"] == {
        "lat": DOOR[0],
        "lng": DOOR[1],
        "accuracy": 5.0,
        "at": clock.now().isoformat(),
        "flagged": False,
        "stale": False,
    }


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"lat": 90.5}, ["lat"]),
        ({"lng": -180.01}, ["lng"]),
        ({"lat": "45.1"}, ["lat"]),
        ({"accuracy": -1}, ["accuracy"]),
        ({"at": "2026-01-05T12:00:00"}, ["at"]),  # no UTC offset
        ({"speed": 3}, ["speed"]),
    ],
)
async def test_bad_pings_are_422_with_a_path(
    client: Client, auth: AuthFn, clock: ManualClock, redis: Redis, change: dict[str, object], path: list[str]
) -> None:
    courier = await add_courier(client, auth("admin"))
    body = {"lat": DOOR[0], "lng": DOOR[1], "accuracy": 5, "at": clock.now().isoformat(), **change}
    r = await client.post(f"/v1/couriers/{courier}/location", json=body, headers=auth("courier", courier))
    assert r.status == 422, await r.text()
    assert (await r.json())["error"]["details"][0]["path"] == path
    assert await redis.exists(f"courier:loc:{courier}") == 0


async def test_ping_from_the_future_is_refused_within_a_small_skew(
    client: Client, auth: AuthFn, clock: ManualClock, redis: Redis
) -> None:
    courier = await add_courier(client, auth("admin"))
    body = {
        "lat": DOOR[0],
        "lng": DOOR[1],
        "accuracy": 5,
        "at": (clock.now() + timedelta(seconds=60)).isoformat(),
    }
    r = await client.post(f"/v1/couriers/{courier}/location", json=body, headers=auth("courier", courier))
    assert r.status == 422
    err = (await r.json())["error"]
    assert err["code"] == "location_in_future"
    assert err["details"][0]["path"] == ["at"]
    assert await redis.exists(f"courier:loc:{courier}") == 0
    # A clock a couple of seconds ahead is fine.
    assert (await ping(client, auth, courier, DOOR, clock.now() + timedelta(seconds=2)))["status"] == "stored"


async def test_implausible_jump_is_flagged_and_older_pings_ignored(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    courier = await add_courier(client, auth("admin"))
    t0 = clock.now()
    await ping(client, auth, courier, DOOR, t0)
    far = (DOOR[0] + 0.1, DOOR[1])  # 11 km in a second
    assert await ping(client, auth, courier, far, t0 + timedelta(seconds=1)) == {
        "status": "flagged",
        "flagged": True,
    }
    seen = await status(client, auth, courier)
    assert seen["position"]["flagged"] is True  # type: ignore[index]
    # A plausible move from the last trusted fix is trusted again.
    near = (DOOR[0] + 0.0005, DOOR[1])  # 55 m in 5 s
    assert (await ping(client, auth, courier, near, t0 + timedelta(seconds=5)))["status"] == "stored"
    # Out of order: older than the latest, ignored.
    assert (await ping(client, auth, courier, DOOR, t0 + timedelta(seconds=3)))["status"] == "ignored"
    assert (await status(client, auth, courier))["position"]["lat"] == near[0]  # type: ignore[index]


async def test_ping_over_the_websocket_and_another_couriers_id(
    client: Client, auth: AuthFn, clock: ManualClock, redis: Redis
) -> None:
    admin = auth("admin")
    me, other = await add_courier(client, admin), await add_courier(client, admin)
    body = {"lat": DOOR[0], "lng": DOOR[1], "accuracy": 3, "at": clock.now().isoformat()}
    async with client.ws_connect("/v1/ws", headers=auth("courier", me)) as ws:
        await recv(ws)
        reply, _ = await command(ws, "courier.location", **body)
        assert reply["data"] == {"status": "stored", "flagged": False}
        reply, _ = await command(ws, "courier.location", courier_id=other, **body)
        assert reply["error"]["code"] == "not_owner"
        reply, _ = await command(ws, "courier.location", **{**body, "lat": 123})
        assert reply["error"]["details"][0]["path"] == ["lat"]
    assert await redis.exists(f"courier:loc:{other}") == 0
    r = await client.post(f"/v1/couriers/{other}/location", json=body, headers=auth("courier", me))
    assert r.status == 403
    r = await client.post(f"/v1/couriers/{me}/location", json=body, headers=admin)
    assert r.status == 403  # positions come from the courier's own device only


async def test_courier_without_a_recent_ping_is_shown_stale(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    courier = await add_courier(client, auth("admin"))
    await on_shift(client, auth, courier)
    r = await client.get("/v1/fleet", headers=auth("admin"))
    assert [(c["id"], c["stale"], c["position"]) for c in (await r.json())["items"]] == [
        (courier, True, None)
    ]
    await ping(client, auth, courier, DOOR, clock.now())
    clock.advance(30)
    assert (await status(client, auth, courier))["stale"] is False
    clock.advance(1)
    assert (await status(client, auth, courier))["stale"] is True
    r = await client.get("/v1/fleet", headers=auth("admin"))
    assert (await r.json())["items"][0]["stale"] is True


async def test_the_fleet_gauge_counts_silent_couriers_as_a_read_of_positions_would(
    client: Client, auth: AuthFn, clock: ManualClock, redis: Redis
) -> None:
    live = client.app[RUNTIME].services.live
    # Live state trusted for the last two minutes (this Redis has held it that long).
    await redis.set("dispatch:live:since", str(round(clock.now().timestamp() * 1000) - 120_000))
    fresh, quiet, never = [await add_courier(client, auth("admin")) for _ in range(3)]
    for courier in (fresh, quiet, never):
        await on_shift(client, auth, courier)
    await ping(client, auth, quiet, DOOR, clock.now())
    clock.advance(31)
    await ping(client, auth, fresh, DOOR, clock.now())
    fleet = [fresh, quiet, never]
    now = clock.now()
    positions = await live.positions(fleet)
    expected = {c for c in fleet if positions.silent(c, now, 30)}
    assert expected == {quiet, never}
    assert await live.count_silent(fleet, now, 30) == len(expected)
    assert await live.count_silent([], now, 30) == 0
    # Live state trusted only from a moment ago (this Redis lost its data): nobody is silent yet.
    await redis.set("dispatch:live:since", str(round(now.timestamp() * 1000) - 5000))
    await redis.delete(f"courier:loc:{quiet}")
    assert await live.count_silent(fleet, now, 30) == 0
    clock.advance(30)
    assert await live.count_silent(fleet, clock.now(), 30) == 3 - 1  # `fresh` pinged 30 s ago: not yet
    r = await client.get("/metrics")
    gauge = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in (await r.text()).splitlines()
        if line.startswith("dispatch_couriers{")
    }
    assert gauge == {"on_shift": 3, "busy": 0, "stale": 2}
