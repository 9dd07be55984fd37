"""Which shops an order may go to: the opening hours, read back from the stored row."""

from __future__ import annotations

from dispatch.clock import ManualClock
from dispatch.services.hours import ALWAYS_OPEN
from tests.orders.helpers import AuthFn, Client, add_resident, add_shop, place


async def test_a_closed_shop_gets_no_order_until_its_hours_change(
    client: Client, clock: ManualClock, auth: AuthFn
) -> None:
    """The nearest shop is closed today: the order goes to the farther one. Once its hours say open, the
    next order goes to it at once (the hours parsed from the row are kept only while the row is unchanged)."""
    admin = auth("admin")
    today = clock.now().date().isoformat()
    closed_today = {**ALWAYS_OPEN, "closed_dates": [today]}
    near = await add_shop(client, admin, {"bread": 5}, offset_deg=0.001, opening_hours=closed_today)
    far = await add_shop(client, admin, {"bread": 5}, offset_deg=0.004)
    resident = await auth_resident(client, auth)

    status, order = await place(client, resident, [{"sku": "bread", "qty": 1}])
    assert status == 201, order
    assert [j["shop_id"] for j in order["jobs"]] == [far]

    r = await client.patch(f"/v1/shops/{near}", json={"opening_hours": ALWAYS_OPEN}, headers=admin)
    assert r.status == 200, await r.text()
    status, order = await place(client, resident, [{"sku": "bread", "qty": 1}])
    assert status == 201, order
    assert [j["shop_id"] for j in order["jobs"]] == [near]

    r = await client.patch(f"/v1/shops/{far}", json={"opening_hours": closed_today}, headers=admin)
    assert r.status == 200, await r.text()
    r = await client.patch(f"/v1/shops/{near}", json={"opening_hours": closed_today}, headers=admin)
    assert r.status == 200, await r.text()
    status, body = await place(client, resident, [{"sku": "bread", "qty": 1}])
    assert status == 422, body
    assert body["error"]["code"] == "items_unavailable"


async def auth_resident(client: Client, auth: AuthFn) -> dict[str, str]:
    return auth("resident", await add_resident(client, auth("admin")))
