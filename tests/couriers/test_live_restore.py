"""Restoring who sees which courier, and the couriers' cached plans, from PostgreSQL (the Redis-lost case
end to end is in test_privacy.py)."""

from __future__ import annotations

from typing import Any

import orjson

from dispatch.api.keys import RUNTIME
from dispatch.clock import ManualClock
from dispatch.services.live_restore import restore
from tests.couriers.helpers import AuthFn, Client, post, trip


async def test_restore_puts_back_what_postgresql_says_and_keeps_a_newer_plan(
    client: Client, auth: AuthFn, clock: ManualClock, redis: Any
) -> None:
    svc = client.app[RUNTIME].services
    t = await trip(client, auth, clock)
    plan_key, audience_key = f"courier:plan:{t.courier}", f"courier:aud:{t.courier}"
    cached = await redis.get(plan_key)
    assert [s["id"] for s in orjson.loads(cached)] == [t.pickup["id"], t.dropoff["id"]]

    await redis.delete(plan_key, audience_key)
    assert await restore(svc) == (1, 1)  # the shop's share (its pickup is next), the courier's plan
    # The same plan; its times come back from PostgreSQL's microseconds, so equal to well under a second.
    # (Not `ready`: the shop marked the job ready after the plan was cached, and the restore reads that.)
    restored = orjson.loads(await redis.get(plan_key))
    assert len(restored) == len(orjson.loads(cached))
    for got, was in zip(restored, orjson.loads(cached), strict=True):
        assert {k: got[k] for k in ("id", "kind", "lat", "lng", "items")} == {
            k: was[k] for k in ("id", "kind", "lat", "lng", "items")
        }
        for k in ("arr", "svc"):
            assert (got[k] is None) == (was[k] is None)
            assert got[k] is None or abs(got[k] - was[k]) < 1e-4, (k, got[k], was[k])
    assert list(await redis.hkeys(audience_key)) == [t.pickup["id"].encode()]

    # A plan cached by a change after the restore read PostgreSQL is newer: the restore leaves it.
    await redis.set(plan_key, b"[]")
    await restore(svc)
    assert await redis.get(plan_key) == b"[]"

    # After the pickup the resident sees the courier and the shop no more, restored or not.
    assert (await post(client, f"/v1/stops/{t.pickup['id']}/completed", auth("courier", t.courier)))[0] == 200
    await redis.delete(audience_key)
    assert (await restore(svc))[0] == 1
    assert list(await redis.hkeys(audience_key)) == [t.dropoff["id"].encode()]
