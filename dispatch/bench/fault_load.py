"""A city's apps under load, spread over several server processes, recording everything a fault could break.

- Residents place orders over HTTP at a steady rate, each with its own Idempotency-Key (also written into the
  order's note, so duplicates can be found in PostgreSQL); a connection error or a 5xx is retried with the
  same key on the next node, after the Retry-After the server gave. Every answer is recorded.
- Shop apps (websockets) accept 90% of their offers and reject the rest, retrying a command the server
  answered `unavailable`.
- Couriers (websockets) go on shift and ping their position every second.
- Every app (residents included) holds a websocket; when it drops, the app reconnects to the next node and
  resumes after the last seq it saw (`?after_seq=`). Each stream records gaps, duplicates and disconnects.

Nothing here asserts: `faults.py` checks the record against PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from dispatch.auth import Role
from dispatch.bench.harness import offset, seed_people, seed_shops, token
from dispatch.db import connect

SKUS = ("milk", "bread", "eggs", "apples", "rice", "tea", "soap", "salt")
STOCK = 1_000_000
COMMAND_TIMEOUT_S = 15.0
ORDER_GIVE_UP_S = 60.0  # a resident app keeps retrying one order this long


@dataclass(frozen=True)
class City:
    shops: list[tuple[str, float, float]]
    residents: list[str]
    couriers: list[str]


async def seed_city(database_url: str, shops: int, residents: int, couriers: int, seed: int = 1) -> City:
    """Shops close together (any of them delivers almost anywhere in the city), residents and couriers."""
    shop_rows = await seed_shops(
        database_url, shops, SKUS, seed=seed, area_m=3000.0, radius_m=3500.0, stock=STOCK, auto_accept=False
    )
    resident_ids = await seed_people(database_url, "resident", residents)
    courier_ids = await seed_people(database_url, "courier", couriers)
    conn = await connect(database_url)
    try:
        # Room for many jobs each, so every accepted job can be on a route.
        await conn.execute("UPDATE couriers SET capacity = 60")
    finally:
        await conn.close()
    return City(shop_rows, resident_ids, courier_ids)


class Nodes:
    """The servers' URLs; apps move to the next one when theirs fails."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self._next = itertools.count()

    def pick(self) -> str:
        return self.urls[next(self._next) % len(self.urls)]


@dataclass
class Stream:
    """What one app received of its recipient's events."""

    recipient: str
    last_seq: int = 0
    events: int = 0
    gaps: int = 0
    duplicates: int = 0
    disconnects: int = 0
    connected_at_start: bool = False

    def take(self, seq: int) -> bool:
        """Record an event; False when it was a duplicate."""
        if seq <= self.last_seq:
            self.duplicates += 1
            return False
        if self.last_seq and seq != self.last_seq + 1:
            self.gaps += 1
        self.last_seq = seq
        self.events += 1
        return True


@dataclass
class Outcomes:
    """Answers as the apps saw them."""

    statuses: Counter[str] = field(default_factory=Counter)  # "201", "503 unavailable", "conn_error", ...
    ws_errors: Counter[str] = field(default_factory=Counter)  # websocket error codes
    unavailable_without_retry_after: int = 0
    orders_sent: int = 0
    keys: list[str] = field(default_factory=list)  # every order's Idempotency-Key (and note)
    orders_ok: dict[str, str] = field(default_factory=dict)  # idempotency key -> order id
    orders_failed: Counter[str] = field(default_factory=Counter)  # final failure by status/code
    ok_times: list[tuple[float, float]] = field(default_factory=list)  # (monotonic sent, latency s)
    answer_times: list[tuple[float, float]] = field(default_factory=list)  # the same, of every HTTP answer
    accepts: int = 0
    rejects: int = 0


class App:
    """One app's websocket, reconnecting and resuming after its last seq."""

    def __init__(self, nodes: Nodes, session: aiohttp.ClientSession, role: Role, subject: str) -> None:
        self.nodes = nodes
        self.session = session
        self.role = role
        self.subject = subject
        self.token = token(role, subject)
        self.stream = Stream(subject)
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = asyncio.Event()
        self._progress = asyncio.Event()  # set at every new event
        self.closing = False
        self.continuous_since: float | None = None  # monotonic time of the current connection
        self.unanswered_errors: Counter[str] = Counter()  # errors of fire-and-forget commands (pings)

    async def run(self) -> None:
        while not self.closing:
            url = self.nodes.pick().replace("http", "ws", 1) + "/v1/ws"
            params = {"after_seq": str(self.stream.last_seq)} if self.stream.last_seq else {}
            try:
                async with self.session.ws_connect(
                    url, headers={"Authorization": f"Bearer {self.token}"}, params=params, heartbeat=10
                ) as ws:
                    self._ws = ws
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self._dispatch(orjson.loads(msg.data))
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            self._ws = None
            if self.connected.is_set():
                self.stream.disconnects += 1
            self.connected.clear()
            self.continuous_since = None
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("websocket closed"))
            self._waiting.clear()
            if not self.closing:
                await asyncio.sleep(0.2)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "hello":
            if not self.stream.last_seq and "after_seq" not in message:
                self.stream.last_seq = message["last_seq"]  # a new app starts from now
            self.continuous_since = time.monotonic()
            self.connected.set()
            return
        if kind == "reply":
            future = self._waiting.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)
            elif not message.get("ok"):  # a command nobody waits for (a ping) failed
                self.unanswered_errors[(message.get("error") or {}).get("code", "?")] += 1
            return
        seq = message.get("seq")
        if seq is not None and self.stream.take(seq):
            self._progress.set()
            self.on_event(message)

    async def reached(self, seq: int, within_s: float) -> bool:
        """Wait until the stream has `seq` (or later); False if it has not within `within_s`."""
        deadline = time.monotonic() + within_s
        while self.stream.last_seq < seq:
            self._progress.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)
        return True

    def on_event(self, event: dict[str, Any]) -> None:
        """Apps override this to act on their events."""

    async def command(self, outcomes: Outcomes, kind: str, **body: Any) -> dict[str, Any] | None:
        """Send until answered; retried after `unavailable`/`overloaded`/`rate_limited` and disconnects.
        Returns the final reply (ok or a definitive error), None if it never got one."""
        deadline = time.monotonic() + 60
        while not self.closing and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self.connected.wait(), 5)
            except TimeoutError:
                continue
            ws = self._ws
            if ws is None:
                continue
            ident = next(self._ids)
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._waiting[ident] = future
            try:
                await ws.send_str(orjson.dumps({"type": kind, "id": ident, **body}).decode())
                reply = await asyncio.wait_for(future, COMMAND_TIMEOUT_S)
            except (ConnectionError, aiohttp.ClientError, TimeoutError, RuntimeError):
                continue
            finally:
                self._waiting.pop(ident, None)
            if reply.get("ok"):
                return reply
            error = reply.get("error") or {}
            code = error.get("code", "?")
            outcomes.ws_errors[code] += 1
            if code in ("unavailable", "outcome_unknown", "overloaded", "rate_limited"):
                if error.get("retry_after") is None:
                    outcomes.unavailable_without_retry_after += 1
                await asyncio.sleep(min(float(error.get("retry_after") or 1), 1.0))
                continue
            return reply
        return None

    async def close(self) -> None:
        self.closing = True
        if self._ws is not None:
            await self._ws.close()


class ShopApp(App):
    def __init__(
        self, nodes: Nodes, session: aiohttp.ClientSession, shop_id: str, rng: random.Random
    ) -> None:
        super().__init__(nodes, session, Role.SHOP, shop_id)
        self.rng = rng
        self.outcomes = Outcomes()
        self.answered: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def on_event(self, event: dict[str, Any]) -> None:
        if event["type"] == "job.offered" and event["data"]["id"] not in self.answered:
            self.answered.add(event["data"]["id"])
            task = asyncio.create_task(self._answer(event["data"]["id"]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _answer(self, job_id: str) -> None:
        await asyncio.sleep(self.rng.uniform(0.05, 0.4))  # someone at the counter looks at it
        if self.rng.random() < 0.9:
            reply = await self.command(self.outcomes, "job.accept", job_id=job_id, prep_minutes=5)
            self.outcomes.accepts += bool(reply and reply.get("ok"))
        else:
            reply = await self.command(self.outcomes, "job.reject", job_id=job_id, reason="out of it")
            self.outcomes.rejects += bool(reply and reply.get("ok"))


class CourierApp(App):
    def __init__(
        self, nodes: Nodes, session: aiohttp.ClientSession, courier_id: str, spot: tuple[float, float]
    ):
        super().__init__(nodes, session, Role.COURIER, courier_id)
        self.spot = spot
        self.outcomes = Outcomes()

    async def shift_and_ping(self) -> None:
        while not self.closing:
            reply = await self.command(self.outcomes, "courier.shift_start")
            if reply is not None and (reply.get("ok") or reply["error"]["code"] == "already_on_shift"):
                break
        while not self.closing:
            # An app sends its fix about once a second: a failed ping is superseded by the next.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ping(), 2.0)  # never let a slow reply delay the next fix by much
            await asyncio.sleep(1.0)

    async def _ping(self) -> None:
        ws = self._ws
        if ws is None or not self.connected.is_set():
            return
        at = datetime.now(UTC).isoformat()
        body = {
            "type": "courier.location",
            "id": "ping",  # replies are not awaited; failures are counted in unanswered_errors
            "lat": self.spot[0],
            "lng": self.spot[1],
            "accuracy": 5,
            "at": at,
        }
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
            await ws.send_str(orjson.dumps(body).decode())


class Residents:
    """Orders placed over HTTP by random residents, open loop at `rate` per second."""

    def __init__(self, nodes: Nodes, session: aiohttp.ClientSession, city: City, rng: random.Random) -> None:
        self.nodes = nodes
        self.session = session
        self.city = city
        self.rng = rng
        self.outcomes = Outcomes()
        self.tokens = {r: token(Role.RESIDENT, r) for r in city.residents}
        self.tasks: set[asyncio.Task[None]] = set()

    def body(self, key: str) -> dict[str, Any]:
        lat, lng = offset(self.rng.uniform(-1200, 1200), self.rng.uniform(-1200, 1200))
        skus = self.rng.sample(SKUS, self.rng.randint(1, 3))
        return {
            "dropoff": {"lat": lat, "lng": lng},
            "items": [{"sku": s, "qty": self.rng.randint(1, 2)} for s in skus],
            "note": key,
        }

    async def drive(self, rate: float, seconds: float, body: Any = None) -> None:
        started = time.monotonic()
        for n in itertools.count():
            due = started + n / rate
            if due - started >= seconds:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            key = secrets.token_hex(8)
            resident = self.rng.choice(self.city.residents)
            task = asyncio.create_task(self.place(resident, key, body(self.rng) if body else self.body(key)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def place(self, resident: str, key: str, body: dict[str, Any]) -> None:
        out = self.outcomes
        out.orders_sent += 1
        out.keys.append(key)
        body.setdefault("note", key)
        data = orjson.dumps(body)
        headers = {
            "Authorization": f"Bearer {self.tokens[resident]}",
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        }
        give_up = time.monotonic() + ORDER_GIVE_UP_S
        while time.monotonic() < give_up:
            sent = time.monotonic()
            url = self.nodes.pick() + "/v1/orders"
            try:
                async with self.session.post(url, data=data, headers=headers) as resp:
                    payload = orjson.loads(await resp.read() or b"null")
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientError, OSError):
                out.statuses["conn_error"] += 1
                await asyncio.sleep(0.2)
                continue
            out.answer_times.append((sent, time.monotonic() - sent))
            code = (payload or {}).get("error", {}).get("code", "") if status >= 400 else ""
            out.statuses[f"{status} {code}".strip()] += 1
            if status < 300:
                out.orders_ok[key] = payload["id"]
                out.ok_times.append((sent, time.monotonic() - sent))
                return
            if status >= 500:
                if status == 503 and retry_after is None:
                    out.unavailable_without_retry_after += 1
                await asyncio.sleep(min(float(retry_after or 1), 1.0) * self.rng.uniform(0.5, 1.0))
                continue
            out.orders_failed[f"{status} {code}"] += 1
            return
        out.orders_failed["gave_up"] += 1


class Load:
    """All the apps of a city against `nodes`."""

    def __init__(self, urls: Sequence[str], city: City, seed: int = 1) -> None:
        self.nodes = Nodes(urls)
        self.city = city
        self.rng = random.Random(seed)
        self.session: aiohttp.ClientSession | None = None
        self.shops: list[ShopApp] = []
        self.couriers: list[CourierApp] = []
        self.resident_apps: list[App] = []
        self.residents: Residents | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def apps(self) -> list[App]:
        return [*self.shops, *self.couriers, *self.resident_apps]

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30, sock_connect=3)
        )
        session = self.session
        self.shops = [
            ShopApp(self.nodes, session, s[0], random.Random(self.rng.random())) for s in self.city.shops
        ]
        self.couriers = [
            CourierApp(
                self.nodes, session, c, offset(self.rng.uniform(-800, 800), self.rng.uniform(-800, 800))
            )
            for c in self.city.couriers
        ]
        self.resident_apps = [App(self.nodes, session, Role.RESIDENT, r) for r in self.city.residents]
        self.residents = Residents(self.nodes, session, self.city, random.Random(self.rng.random()))
        for app in self.apps:
            self._tasks.append(asyncio.create_task(app.run()))
        await asyncio.wait_for(asyncio.gather(*(a.connected.wait() for a in self.apps)), 30)
        for app in self.apps:
            app.stream.connected_at_start = True
        for courier in self.couriers:
            self._tasks.append(asyncio.create_task(courier.shift_and_ping()))

    async def drain(self, give_up_s: float = ORDER_GIVE_UP_S) -> None:
        """Wait for the orders and shop answers in flight."""
        assert self.residents is not None
        pending = [*self.residents.tasks, *(t for s in self.shops for t in s.tasks)]
        if pending:
            await asyncio.wait(pending, timeout=give_up_s)

    async def stop(self) -> None:
        for app in self.apps:
            app.closing = True
        for task in self._tasks:
            task.cancel()
        for app in self.apps:
            with contextlib.suppress(Exception):
                await app.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    def outcomes(self) -> Outcomes:
        """Every app's answers together."""
        assert self.residents is not None
        total = Outcomes()
        for out in [
            self.residents.outcomes,
            *(s.outcomes for s in self.shops),
            *(c.outcomes for c in self.couriers),
        ]:
            total.statuses.update(out.statuses)
            total.ws_errors.update(out.ws_errors)
            total.unavailable_without_retry_after += out.unavailable_without_retry_after
            total.orders_sent += out.orders_sent
            total.keys += out.keys
            total.orders_ok.update(out.orders_ok)
            total.orders_failed.update(out.orders_failed)
            total.ok_times += out.ok_times
            total.answer_times += out.answer_times
            total.accepts += out.accepts
            total.rejects += out.rejects
        return total
