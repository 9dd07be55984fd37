"""With the default DISPATCH_DEFER_WAIT_MIN (0), a round holds work whose best courier would only wait at the
shop, and places it once that courier has to set off; work a courier can only reach late is placed at once."""

from __future__ import annotations

from datetime import datetime

import pytest

from dispatch.clock import ManualClock
from dispatch.config import Settings
from tests.couriers.helpers import (
    NEAR_SHOP,
    AuthFn,
    Client,
    add_resident,
    add_shop,
    dispatch,
    ping,
    place,
    ready_courier,
    routes_of,
)

FAR = (NEAR_SHOP[0] + 0.05, NEAR_SHOP[1])  # ~5.6 km: ~29 minutes away at 250 m/min with the 1.3 detour


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_(defer_wait_minutes=Settings().defer_wait_minutes)


async def _order(client: Client, auth: AuthFn, prep_minutes: int) -> str:
    admin = auth("admin")
    await add_shop(client, admin, {"bread": 9}, offset_deg=0.002, auto_accept=True, prep_minutes=prep_minutes)
    resident = await add_resident(client, admin)
    status, order = await place(client, auth("resident", resident), [{"sku": "bread", "qty": 1}])
    assert status == 201, order
    order_id: str = order["id"]
    return order_id


def _minute(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


async def test_work_is_held_until_the_nearest_courier_must_set_off(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    courier = await ready_courier(client, auth, clock, NEAR_SHOP)  # a minute or two from the shop
    await _order(client, auth, prep_minutes=20)
    report = await dispatch(client, clock)
    assert (report.jobs, report.routes) == (1, 0)  # it would only wait at the counter
    assert await routes_of(client, auth, courier) == []
    for _ in range(3):  # still early, round after round
        clock.advance(60)
        await ping(client, auth, courier, NEAR_SHOP, clock.now())
        assert (await dispatch(client, clock)).routes == 0
    clock.advance(16 * 60)  # now the courier has to leave to be there when the goods are ready
    await ping(client, auth, courier, NEAR_SHOP, clock.now())
    report = await dispatch(client, clock)
    assert (report.jobs, report.routes) == (1, 1)
    (route,) = await routes_of(client, auth, courier)
    pickup = route["stops"][0]
    # It reaches the shop about when the goods are ready, not long before.
    wait = _minute(pickup["eta"]["service"]) - _minute(pickup["eta"]["arrival"])
    assert wait.total_seconds() <= 2 * 60 + 31  # half the pickup service, plus at most one round of slack


async def test_work_only_a_far_courier_can_reach_is_placed_at_once(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    courier = await ready_courier(client, auth, clock, FAR)
    await _order(client, auth, prep_minutes=20)
    report = await dispatch(client, clock)
    assert (report.jobs, report.routes) == (1, 1)  # arriving after the goods are ready: go now
    (route,) = await routes_of(client, auth, courier)
    assert [s["kind"] for s in route["stops"]] == ["pickup", "dropoff"]


async def test_the_nearer_courier_gets_held_work_rather_than_a_far_one(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    near = await ready_courier(client, auth, clock, NEAR_SHOP)
    far = await ready_courier(client, auth, clock, (NEAR_SHOP[0] + 0.03, NEAR_SHOP[1]))  # ~18 min away
    await _order(client, auth, prep_minutes=20)
    assert (await dispatch(client, clock)).routes == 0  # both could be there in time: nobody goes yet
    clock.advance(18 * 60 + 30)  # the near courier has to leave now
    for courier, where in ((near, NEAR_SHOP), (far, (NEAR_SHOP[0] + 0.03, NEAR_SHOP[1]))):
        await ping(client, auth, courier, where, clock.now())
    assert (await dispatch(client, clock)).routes == 1
    assert len(await routes_of(client, auth, near)) == 1
    assert await routes_of(client, auth, far) == []
