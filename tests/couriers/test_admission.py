"""Every feasible order delivered: a delivery order no courier can collect before its shift ends is flagged
(placed, with a warning) or refused (DISPATCH_UNDELIVERABLE) at placement, with pick-up or a later slot
offered, instead of waiting for a courier silently."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from dispatch.api.keys import RUNTIME
from dispatch.clock import ManualClock
from dispatch.services.couriers import fire_due_shifts
from tests.couriers.helpers import (
    DOOR,
    NEAR_SHOP,
    AuthFn,
    Client,
    add_courier,
    add_resident,
    add_shop,
    ping,
    place,
    ready_courier,
    recv,
)
from tests.orders.helpers import recv_event

FAR_DOOR = (DOOR[0] - 0.015, DOOR[1])  # 1.9 km from the shop: inside its zone, too far to walk


async def _shop(client: Client, auth: AuthFn) -> str:
    return await add_shop(
        client, auth("admin"), {"bread": 9}, offset_deg=0.002, auto_accept=True, prep_minutes=5
    )


async def _place(
    client: Client, auth: AuthFn, resident: str, door: tuple[float, float] = DOOR
) -> tuple[int, Any]:
    where = {"lat": door[0], "lng": door[1]}
    return await place(client, auth("resident", resident), [{"sku": "bread", "qty": 1}], dropoff=where)


async def test_with_no_courier_on_shift_the_order_is_placed_with_a_warning_and_the_offers(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    await _shop(client, auth)
    resident = await add_resident(client, auth("admin"))
    async with client.ws_connect("/v1/ws", headers=auth("resident", resident)) as ws:
        await recv(ws)
        status, order = await _place(client, auth, resident)
        placed = await recv_event(ws, "order.placed")
    assert status == 201, order
    warning = {
        "code": "no_courier_available",
        "message": "no courier on shift can collect this order before their shift ends",
        "alternatives": [{"fulfilment": "pickup"}],  # the shop is 222 m away: the resident may walk
    }
    assert order["warning"] == warning and placed["data"]["warning"] == warning
    r = await client.get(f"/v1/orders/{order['id']}", headers=auth("resident", resident))
    assert (await r.json())["warning"] == warning
    # Too far to walk: nothing to offer but waiting.
    status, order = await _place(client, auth, resident, FAR_DOOR)
    assert (status, order["warning"]["alternatives"]) == (201, [])


async def test_a_courier_who_can_collect_it_in_time_means_no_warning(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    await _shop(client, auth)
    resident = await add_resident(client, auth("admin"))
    await ready_courier(client, auth, clock, NEAR_SHOP)
    status, order = await _place(client, auth, resident)
    assert (status, order["warning"]) == (201, None)


async def _leaving_soon(
    client: Client, auth: AuthFn, clock: ManualClock, minutes: float, where: tuple[float, float]
) -> str:
    """A courier on shift at `where`, its shift ending in `minutes`."""
    admin = auth("admin")
    courier = await add_courier(client, admin)
    shift = {
        "start": (clock.now() - timedelta(hours=1)).isoformat(),
        "end": (clock.now() + timedelta(minutes=minutes)).isoformat(),
    }
    assert (await client.post(f"/v1/couriers/{courier}/shifts", json=shift, headers=admin)).status == 201
    assert await fire_due_shifts(client.app[RUNTIME].services) == 1
    await ping(client, auth, courier, where, clock.now())
    return courier


@pytest.mark.parametrize("settings", [{"undeliverable": "refuse"}], indirect=True)
async def test_refused_when_the_only_courier_ends_its_shift_before_it_could_get_there(
    client: Client, auth: AuthFn, clock: ManualClock, db: asyncpg.Connection
) -> None:
    """Refused: nothing written, and a later slot offered in the shift planned for two hours from now (its
    start, the pickup service, the drive from the shop, half the drop-off service: the door from then)."""
    await _shop(client, auth)
    admin = auth("admin")
    resident = await add_resident(client, admin)
    await _leaving_soon(client, auth, clock, 10, (FAR_DOOR[0] - 0.05, FAR_DOOR[1]))  # half an hour away
    later = await add_courier(client, admin)
    start = clock.now() + timedelta(hours=2)
    shift = {"start": start.isoformat(), "end": (start + timedelta(hours=3)).isoformat()}
    assert (await client.post(f"/v1/couriers/{later}/shifts", json=shift, headers=admin)).status == 201
    status, body = await _place(client, auth, resident, FAR_DOOR)
    assert (status, body["error"]["code"]) == (409, "no_courier_available"), body
    (offer,) = body["error"]["details"]["alternatives"]
    drive = timedelta(minutes=1.7e3 * 1.3 / 250)  # the shop to the far door, about 1.7 km
    slot_start = datetime.fromisoformat(offer["timing"]["start"])
    assert abs(slot_start - (start + timedelta(minutes=4 + 2) + drive)) < timedelta(minutes=1)
    assert datetime.fromisoformat(offer["timing"]["end"]) - slot_start == timedelta(hours=1)
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    # Placed again in that slot, it is taken.
    status, body = await place(
        client,
        auth("resident", resident),
        [{"sku": "bread", "qty": 1}],
        dropoff={"lat": FAR_DOOR[0], "lng": FAR_DOOR[1]},
        timing=offer["timing"],
    )
    assert status == 201, body


# 0: the fleet and the waiting work are read for each order; an hour: the first order's snapshot serves both,
# and the first order's courier must be taken in it.
@pytest.mark.parametrize(
    "settings", [{"admission_refresh_s": 0}, {"admission_refresh_s": 3600}], indirect=True
)
async def test_work_already_waiting_counts_ahead_of_a_new_order(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    """One courier at the shop, leaving in 12 minutes: it can collect the first order at once (2 minutes), but
    after taking it to the far door (9 minutes' drive) it is too late to come back for the second."""
    await _shop(client, auth)
    resident = await add_resident(client, auth("admin"))
    await _leaving_soon(client, auth, clock, 12, NEAR_SHOP)
    first = await _place(client, auth, resident, FAR_DOOR)
    second = await _place(client, auth, resident, FAR_DOOR)
    assert (first[0], first[1]["warning"]) == (201, None)
    assert second[0] == 201 and second[1]["warning"]["code"] == "no_courier_available"


@pytest.mark.parametrize("settings", [{"admission_refresh_s": 3600}], indirect=True)
async def test_a_node_reads_the_fleet_once_per_refresh_not_per_order(
    client: Client, auth: AuthFn, clock: ManualClock
) -> None:
    """Orders within the refresh interval are weighed against one snapshot: a courier coming on shift after
    it is not seen until the snapshot is read again."""
    await _shop(client, auth)
    resident = await add_resident(client, auth("admin"))
    registry = client.app[RUNTIME].services.metrics.registry

    def reads() -> float:
        return registry.get_sample_value("dispatch_admission_reads_total") or 0.0

    before = reads()
    assert (await _place(client, auth, resident))[1]["warning"]["code"] == "no_courier_available"
    await ready_courier(client, auth, clock, NEAR_SHOP)
    for _ in range(3):
        assert (await _place(client, auth, resident))[1]["warning"]["code"] == "no_courier_available"
    assert reads() - before == 1
    client.app[RUNTIME].services.admission.forget()
    assert (await _place(client, auth, resident))[1]["warning"] is None
    assert reads() - before == 2
