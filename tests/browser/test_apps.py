"""The apps in Chromium, against a real server: a resident, two shops, a courier and the console at once
through a split order from the cart to the door; offers that expire or are rejected moving to the other
shop; the console steering the fleet; the pages reconnecting and resuming after the server restarts."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from dispatch.bench.stack import Node
from tests.browser.conftest import SIM_SPEED, Apps
from tests.timing import SECOND

pytestmark = pytest.mark.slow


def offset(at: tuple[float, float], north_m: float, east_m: float) -> tuple[float, float]:
    return at[0] + north_m / 111_320, at[1] + east_m / 78_500  # east: at latitude ~45


# Each test's neighbourhood is far from the others' (the dispatch round looks ~9 km around a shop).
CENTRES = {name: (45.0 + 0.3 * n, 4.8) for n, name in enumerate(("scenario", "offers", "console", "restart"))}


def choose_point(page: Any, at: tuple[float, float]) -> None:
    page.fill("#lat", str(at[0]))
    page.fill("#lng", str(at[1]))
    page.click("#point-form button[type=submit]")


def add_to_cart(page: Any, sku: str, qty: int = 1) -> None:
    item = page.locator(f"#catalogue li[data-sku='{sku}']")
    for _ in range(qty):
        item.get_by_role("button", name=re.compile("one more")).click()
    expect(item.locator(".qty")).to_have_text(str(qty))


def next_stop_is_near(courier: Any) -> None:
    """Wait until the simulated courier is at its next stop (its last ping within the arrival radius)."""
    courier.wait_for_function(
        "() => { const d = document.querySelector('#distance'); "
        "return d && d.dataset.metres !== '' && Number(d.dataset.metres) < 30; }"
    )


def courier_triangle(console: Any, name: str) -> str:
    marker = console.locator("g.marker.courier", has=console.locator("text", has_text=name))
    return str(marker.locator("path").first.get_attribute("d"))


def test_a_split_order_from_the_cart_to_the_door_across_four_apps_and_the_console(apps: Apps) -> None:
    admin = apps.admin
    door = CENTRES["scenario"]
    bakery = admin.shop("Bakery", offset(door, 300, 0), {"bread": 20})
    dairy = admin.shop("Dairy", offset(door, 0, 350), {"milk": 20})
    courier_id = admin.person("courier", "Rosa")
    resident_id = admin.person("resident", "Ada")

    console = apps.open("console", "admin", "ops")
    resident = apps.open("resident", "resident", resident_id)
    shops = {bakery: apps.open("bakery", "shop", bakery), dairy: apps.open("dairy", "shop", dairy)}
    start = offset(door, 320, 20)  # by the bakery
    courier = apps.open(
        "courier", "courier", courier_id, f"source=sim&speed={SIM_SPEED}&at={start[0]},{start[1]}"
    )
    for page in apps.pages.values():
        expect(page.locator("#connection")).to_have_text("live")
    for page in shops.values():
        page.click("#sound")  # the gesture that lets the page make sound
        expect(page.locator("#sound")).to_have_text("Sound: on")

    courier.click("#shift")
    expect(courier.locator("#shift-state")).to_have_text("on shift")
    expect(courier.locator("#position")).to_contain_text("sent")

    # The resident picks the point, fills the cart, sees the split, places the order.
    choose_point(resident, door)
    expect(resident.locator("#coverage")).to_have_text("2 shops open and delivering here.")
    add_to_cart(resident, "bread")
    add_to_cart(resident, "milk")
    resident.click("#quote")
    expect(resident.locator("#split h3")).to_have_text("Split between 2 shops")
    expect(resident.locator("#split-list li")).to_have_count(2)
    resident.click("#place")
    expect(resident.locator("#order-state")).to_have_text("placed")
    apps.shoot("placed")

    # Both shops see the offer, with its countdown, a banner and a beep; both accept.
    for page in shops.values():
        offer = page.locator("#offers li.offer")
        expect(offer).to_have_count(1)
        expect(offer.locator(".countdown")).to_have_text(re.compile(r"^0:(1[0-5]|0\d)$"))
        expect(page.locator("#alert")).to_contain_text("1 new offer: answer within")
        assert page.title().startswith("(1) ")
        # A beep when the sound was switched on, and one for the offer.
        assert int(page.locator("#sound").get_attribute("data-beeps") or 0) >= 2
    for page in shops.values():
        page.locator("#offers li.offer input[type=number]").fill("1")
        page.get_by_role("button", name="Accept").click()
        expect(page.locator("#offers li.offer")).to_have_count(0)
        expect(page.locator("#alert")).to_be_hidden()
    expect(resident.locator("#order-state")).to_have_text("accepted")

    # One shop marks its goods ready; the courier is offered the route and takes it.
    shops[bakery].get_by_role("button", name="Mark ready").click()
    expect(shops[bakery].locator("#jobs .state").first).to_have_text("ready")
    expect(courier.locator("#offer")).to_contain_text("New route: 3 stops")
    apps.shoot("route-offered")
    courier.get_by_role("button", name="Accept route").click()
    expect(courier.locator("#offer")).to_be_hidden()
    expect(courier.locator("#stops li")).to_have_count(3)
    first_seen = courier_triangle(console, "Rosa")

    # Pickups in the route's order: the ready bakery's goods the courier collects itself; the dairy hands
    # its goods over at the counter when the courier is there.
    for _ in range(2):
        title = courier.locator("#next h3").inner_text()
        next_stop_is_near(courier)
        courier.click("#arrived")
        if "Bakery" in title:
            courier.click("#complete")
        else:
            assert "Dairy" in title, title
            shops[dairy].get_by_role("button", name="Handed to the courier").click()
        expect(courier.locator("#next h3")).not_to_have_text(title)
    expect(courier.locator("#next h3")).to_contain_text("Next: deliver to")

    # On the way: the resident sees the courier (only now), and its code.
    expect(resident.locator("#order-state")).to_have_text("in delivery")
    expect(resident.locator("#courier")).to_contain_text("Your courier is on the way")
    apps.shoot("in-delivery")
    code = resident.locator("#delivery-code").inner_text()
    assert re.fullmatch(r"\d{4}", code), code
    # The console showed the courier moving.
    console.wait_for_function(
        "([name, seen]) => [...document.querySelectorAll('g.marker.courier')]"
        ".some(g => g.textContent.includes(name) && g.querySelector('path').getAttribute('d') !== seen)",
        arg=["Rosa", first_seen],
    )
    next_stop_is_near(courier)
    courier.click("#arrived")
    expect(courier.locator("#next p").first).to_contain_text("arrived")
    courier.fill("#code", code)
    courier.click("#complete")
    expect(courier.locator("#next")).to_contain_text("Nothing to do now.")

    # Delivered: the resident no longer sees the courier.
    expect(resident.locator("#order-state")).to_have_text("delivered")
    expect(resident.locator("#courier")).to_have_count(0)
    expect(resident.locator("#delivery-code")).to_have_count(0)

    # The console: the order's timeline, from placing to the door.
    console.locator("#orders tr", has_text="delivered").first.get_by_role("button").click()
    timeline = console.locator("#timeline")
    steps = ("order placed", "job offered", "job accepted", "route offered", "job picked up", "delivered")
    for text in steps:
        expect(timeline).to_contain_text(text)
    expect(console.locator("#detail h2 .state")).to_have_text("delivered")
    apps.shoot("delivered")
    courier.click("#shift")
    expect(courier.locator("#shift-state")).to_have_text("off shift")


def test_offers_that_expire_or_are_rejected_go_to_the_other_shop(apps: Apps) -> None:
    admin = apps.admin
    door = CENTRES["offers"]
    first = admin.shop("Quick Jams", offset(door, 200, 0), {"jam": 10}, prep=5)
    second = admin.shop("Slow Jams", offset(door, -600, 0), {"jam": 10}, prep=30)
    resident_id = admin.person("resident", "Bo")
    quick = apps.open("quick", "shop", first)
    slow = apps.open("slow", "shop", second)
    console = apps.open("console", "admin", "ops")
    for page in apps.pages.values():
        expect(page.locator("#connection")).to_have_text("live")
    body = {"dropoff": {"lat": door[0], "lng": door[1]}, "items": [{"sku": "jam", "qty": 1}]}
    orders = [admin.call("POST", "/v1/orders", body, role="resident", subject=resident_id) for _ in range(2)]
    assert all(o["jobs"][0]["shop_id"] == first for o in orders)

    # Two offers at the quick shop: one rejected with a reason (the slow shop takes it at once), the other
    # left to expire.
    offers = quick.locator("#offers li.offer")
    expect(offers).to_have_count(2)
    expect(quick.locator("#alert")).to_contain_text("2 new offers")
    rejected = offers.first
    rejected.locator("select").select_option("too busy")
    rejected.get_by_role("button", name="Reject").click()
    expect(offers).to_have_count(1)
    moved = slow.locator("#offers li.offer")
    expect(moved).to_have_count(1)
    apps.shoot("rejected")
    moved.get_by_role("button", name="Accept").click()
    expect(moved).to_have_count(0)
    # The other runs out of time on the page, and the slow shop is offered it.
    expect(offers).to_have_count(0, timeout=30 * 1000 * SECOND)
    expect(quick.locator("#messages")).to_contain_text("expired: it went to another shop")
    expect(quick.locator("#jobs")).to_contain_text("expired")
    expect(quick.locator("#jobs")).to_contain_text("reason: too busy")
    expect(moved).to_have_count(1)
    apps.shoot("expired")
    moved.get_by_role("button", name="Accept").click()
    expect(moved).to_have_count(0)
    expect(slow.locator("#jobs .state", has_text="accepted")).to_have_count(2)

    # The console tells both stories in the timelines.
    console.select_option("#f-shop", second)
    expect(console.locator("#orders tr")).to_have_count(2)
    console.locator("#orders tr").first.get_by_role("button").click()
    timeline = console.locator("#timeline")
    expect(timeline).to_contain_text("job accepted")
    expect(timeline).to_contain_text(re.compile(r"job (rejected|expired)"))


def test_a_dispatcher_steers_the_fleet_from_the_console(apps: Apps) -> None:
    admin = apps.admin
    door = CENTRES["console"]
    shop = admin.shop("Corner", offset(door, 250, 0), {"soap": 10})
    uma = admin.person("courier", "Uma")
    vic = admin.person("courier", "Vic")
    resident_id = admin.person("resident", "Cy")
    console = apps.open("console", "admin", "ops")
    expect(console.locator("#connection")).to_have_text("live")
    console.click("#tab-fleet")
    for name in ("Uma", "Vic"):
        row = console.locator("#fleet tr", has_text=name)
        row.get_by_role("button", name="Start shift").click()
        expect(row).to_contain_text("on shift")

    def ping_both() -> None:  # fresh positions (a silent courier goes stale, and loses unpicked work)
        for courier_id in (uma, vic):
            fix = {"lat": door[0], "lng": door[1], "accuracy": 5, "at": admin.call("GET", "/v1/clock")["now"]}
            admin.call("POST", f"/v1/couriers/{courier_id}/location", fix, role="courier", subject=courier_id)

    ping_both()
    uma_row = console.locator("#fleet tr", has_text="Uma")
    expect(uma_row).to_contain_text("fresh")
    # New positions are written into the rows in place: their buttons stay the ones a click may be landing on.
    end_shift = uma_row.get_by_role("button", name="End shift").element_handle()
    ping_both()
    console.wait_for_timeout(2500)
    assert end_shift.evaluate("e => e.isConnected"), "the fleet table was rebuilt for new positions"
    expect(uma_row).to_contain_text("fresh")
    body = {"dropoff": {"lat": door[0], "lng": door[1]}, "items": [{"sku": "soap", "qty": 1}]}
    order = admin.call("POST", "/v1/orders", body, role="resident", subject=resident_id)
    job = order["jobs"][0]["id"]
    admin.call("POST", f"/v1/jobs/{job}/accept", {"prep_minutes": 5}, role="shop", subject=shop)

    # The round offers the route to one of them; the dispatcher gives it to the other.
    def holder() -> str:
        routes = admin.call("GET", "/v1/routes")["items"]
        return str(next(r["courier_id"] for r in routes if job in r["stops"][0]["job_ids"]))

    busy_row = console.locator("#fleet tr", has_text="busy")
    expect(busy_row).to_have_count(1)
    first = holder()
    other_name = "Vic" if first == uma else "Uma"
    ping_both()
    busy_row.get_by_role("button").first.click()
    route = console.locator("#routes [data-route]")
    expect(route).to_have_count(1)
    # The position poll (every 2 s) leaves the route's controls alone while nothing they show changes: a
    # rebuilt button between the press and the release of a click loses the click.
    picker = route.locator("select").element_handle()
    console.wait_for_timeout(2500)
    assert picker.evaluate("e => e.isConnected"), "the route's controls were rebuilt by the position poll"
    route.locator("select").select_option(label=f"{other_name} (free)")
    route.get_by_role("button", name="Give what is left to collect").click()
    expect(console.locator("#messages")).to_contain_text(f"Work given to {other_name}")
    assert holder() != first
    apps.shoot("moved")

    # The dispatcher records the new courier's steps, cancels nothing, ends a shift.
    console.click("#tab-orders")
    console.locator("#orders tr", has_text=order["id"][:10]).get_by_role("button").click()
    detail = console.locator("#detail")
    expect(detail).to_contain_text(other_name)
    detail.get_by_role("button", name="Record arrival").first.click()
    expect(detail.get_by_role("button", name="Record completion").first).to_be_visible()
    console.click("#tab-fleet")
    row = console.locator("#fleet tr", has_text="Uma" if first == uma else "Vic")
    row.get_by_role("button", name="End shift").click()
    expect(row).to_contain_text("off shift")
    # And cancels an order that is still at the shop.
    second = admin.call("POST", "/v1/orders", body, role="resident", subject=resident_id)
    console.click("#tab-orders")
    # Choosing it takes the first order's buttons away in the same click, not after a read: a click landing
    # on them meanwhile would cancel the wrong order.
    shown = (
        console.locator("#orders tr", has_text=second["id"][:10])
        .get_by_role("button")
        .evaluate("b => (b.click(), document.querySelector('#detail').textContent)")
    )
    assert order["id"][:10] not in shown and "Cancel order" not in shown, shown
    expect(detail.locator("h2")).to_contain_text(second["id"][:10])
    detail.get_by_role("button", name="Cancel order").click()
    expect(detail.locator("h2 .state")).to_have_text("cancelled")
    assert admin.call("GET", f"/v1/orders/{order['id']}")["state"] != "cancelled"


def test_the_pages_reconnect_and_resume_when_the_server_restarts(apps: Apps, server: Node) -> None:
    admin = apps.admin
    door = CENTRES["restart"]
    shop = admin.shop("Night Shop", offset(door, 100, 0), {"tea": 10})
    resident_id = admin.person("resident", "Di")
    page = apps.open("shop", "shop", shop)
    console = apps.open("console", "admin", "ops")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    for p in (page, console):
        expect(p.locator("#connection")).to_have_text("live")
    body = {"dropoff": {"lat": door[0], "lng": door[1]}, "items": [{"sku": "tea", "qty": 1}]}
    first = admin.call("POST", "/v1/orders", body, role="resident", subject=resident_id)
    expect(page.locator("#offers li.offer")).to_have_count(1)
    # The shop takes it. (Left offered, it would expire while the server is away on a slow machine: the
    # restart and the page's backoff can outlast the 15 s offer.)
    page.locator("#offers li.offer").get_by_role("button", name="Accept").click()
    expect(page.locator("#offers li.offer")).to_have_count(0)
    expect(page.locator("#jobs")).to_contain_text("accepted")

    with apps.server_down():
        server.stop()
        for p in (page, console):
            expect(p.locator("#connection")).to_contain_text("reconnecting")
        apps.shoot("server-down")
        server.start()
        second = admin.call("POST", "/v1/orders", body, role="resident", subject=resident_id)
        for p in (page, console):
            expect(p.locator("#connection")).to_have_text("live again: resumed", timeout=40 * 1000 * SECOND)
    # Whether the second offer came while the page was away or after, it is there, once; the job taken
    # before is still listed.
    expect(page.locator("#offers li.offer")).to_have_count(1)
    expect(page.locator("#offers li.offer")).to_contain_text(second["id"][:10])
    expect(page.locator("#jobs")).to_contain_text(first["id"][:10])
    assert any("after_seq=" in url for url in sockets), sockets
    # The console read everything again: both orders at that shop.
    console.select_option("#f-shop", shop)
    expect(console.locator("#orders tr")).to_have_count(2)
