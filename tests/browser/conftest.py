"""Browser tests: Debian's Chromium driven by Playwright against a real `dispatch serve` process on the test
PostgreSQL and Redis. Every page fails its test on a JavaScript error or a console error (network errors
only while a test has the server down on purpose), and leaves screenshots in a folder the test prints."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatch.auth import Role, issue_token
from dispatch.bench.stack import Node, free_port
from dispatch.cli import sign_in_link
from dispatch.clock import SystemClock
from tests.conftest import SECRET
from tests.timing import SECOND

CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections are refused here; nothing else may
# leave the machine either.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 375, "height": 812}
DESK = {"width": 1280, "height": 900}
WAIT_MS = 20 * 1000 * SECOND  # Playwright's waits for what must happen (a bound, never a measure)
# What Chromium logs for a request that found no server, or one still starting (503): allowed only while a
# test has stopped it on purpose.
NETWORK_DOWN = re.compile(
    r"ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|WebSocket connection to .* failed|status of 503"
)

# The server's settings for the apps' scenarios: offers short enough to watch one expire, rounds every
# second, work placed at once, routes offered (so the courier answers), and a simulated courier fast enough
# to cross a neighbourhood in seconds (its pings must not be flagged as jumps).
SERVER_ENV = {
    "DISPATCH_SECRET": SECRET,
    "DISPATCH_LOG_LEVEL": "WARNING",
    "DISPATCH_LOG_FORMAT": "json",
    "DISPATCH_STRICT_VIEWS": "true",
    "DISPATCH_OFFER_TIMEOUT": "15",
    "DISPATCH_TIMER_POLL": "0.2",
    "DISPATCH_ROUND_S": "1",
    "DISPATCH_DEFER_WAIT_MIN": "inf",
    "DISPATCH_COURIER_AUTO_ACCEPT": "false",
    "DISPATCH_ROUTE_OFFER_S": "120",
    "DISPATCH_COURIER_MAX_SPEED_M_S": "1000",
}
SIM_SPEED = 150  # metres a simulated second


def chromium_missing() -> str | None:
    if os.path.exists(CHROMIUM):
        return None
    return (
        f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
        "(as root: apt-get install -y chromium; `make test` does it when run as root)"
    )


@pytest.fixture(scope="module")
def server(
    make_database: Callable[[str], Any], redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        database_url = pool.submit(asyncio.run, make_database("dispatch_browser")).result()
    root = tmp_path_factory.mktemp("browser-server")
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, **SERVER_ENV}
    node = Node("browser", free_port(), root / "data", env, root / "server.log")
    node.start()
    try:
        yield node
    finally:
        node.stop()
        log = node.tail(10**7)
        assert "unhandled error" not in log, log[log.find("unhandled error") - 200 :][:4000]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = chromium_missing()
    if missing:
        pytest.fail(missing)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Admin:
    """The operator's HTTP API, for setting a neighbourhood up (the apps do the rest)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def token(self, role: str, subject: str) -> str:
        return issue_token(SECRET, Role(role), subject, 3600, SystemClock().now())

    def call(
        self, method: str, path: str, body: Any = None, role: str = "admin", subject: str = "ops"
    ) -> Any:
        data = None if body is None else orjson.dumps(body)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token(role, subject)}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10 * SECOND) as r:
            return orjson.loads(r.read())

    def shop(self, name: str, at: tuple[float, float], stock: dict[str, int], prep: int = 5) -> str:
        lat, lng = at
        circle = {"type": "Circle", "center": [lng, lat], "radius_m": 3000}
        body = {"name": name, "lat": lat, "lng": lng, "zone": circle, "prep_minutes": prep}
        shop_id: str = self.call("POST", "/v1/shops", body)["id"]
        for sku, qty in stock.items():
            item = {"name": sku.title(), "price_cents": 250, "stock": qty}
            self.call("PUT", f"/v1/shops/{shop_id}/catalogue/{sku}", item)
        return shop_id

    def person(self, kind: str, name: str) -> str:
        person_id: str = self.call(
            "POST", f"/v1/{kind}s", {"name": name, "capacity": 10} if kind == "courier" else {"name": name}
        )["id"]
        return person_id


@pytest.fixture(scope="module")
def admin(server: Node) -> Admin:
    return Admin(server.url)


@dataclass
class Apps:
    """Pages of the apps, each in its own browser context (its own session storage), watched for errors."""

    browser: Any
    server: Node
    admin: Admin
    shots: Path
    errors: list[str] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)
    pages: dict[str, Any] = field(default_factory=dict)
    network_may_fail: bool = False

    def open(self, name: str, role: str, subject: str, fragment: str = "") -> Any:
        """The role's page, signed in by its link; `fragment`: more of the link's fragment (a=1&b=2)."""
        viewport = DESK if role == "admin" else PHONE
        context = self.browser.new_context(viewport=viewport)
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("console", lambda m: self._console(name, m))
        page.on("pageerror", lambda e: self.errors.append(f"{name}: page error: {e}"))
        link = sign_in_link(self.server.url, role, self.admin.token(role, subject))
        page.goto(link + ("&" + fragment if fragment else ""))
        self.pages[name] = page
        return page

    def _console(self, name: str, message: Any) -> None:
        if message.type != "error":
            return
        if self.network_may_fail and NETWORK_DOWN.search(message.text):
            return
        self.errors.append(f"{name}: console error: {message.text}")

    @contextlib.contextmanager
    def server_down(self) -> Iterator[None]:
        """Network errors are expected (and allowed) only inside this block."""
        self.network_may_fail = True
        try:
            yield
        finally:
            self.network_may_fail = False

    def shoot(self, step: str) -> None:
        for name, page in self.pages.items():
            page.screenshot(path=str(self.shots / f"{step}-{name}.png"), full_page=True)


@pytest.fixture
def apps(browser: Any, server: Node, admin: Admin, tmp_path: Path) -> Iterator[Apps]:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    a = Apps(browser, server, admin, shots)
    try:
        yield a
        a.shoot("end")
    finally:
        for context in a.contexts:
            context.close()
    assert not a.errors, "\n".join(a.errors)
