"""Simulated apps driving a live server through its real API: shops and couriers over websockets, residents
over HTTP. Used by the replay (`python -m dispatch replay`) and the demo day (`python -m dispatch simulate`).

Everything runs on a `DayClock`: minutes of a day on the scaled clock the server shares (`ScaledClock` with
the same start, speed and epoch), so that a day can run faster than real time.

- `ShopApp` accepts every offered job with the preparation time its `prep` callback gives, and marks it ready
  when that time comes; readiness is posted on a `ReadyBoard` that the couriers read (the counter where the
  goods wait).
- `CourierApp` pings its position, follows the stops of the routes the server sends (`route.offered`,
  `route.updated`, `route.cancelled`), drives each leg in the travel time its `World` gives, and at each stop
  pings from there (the server wants a trusted position at the stop), sends `stop.arrived`, waits half the
  service time (and, at a shop, for the goods to be marked ready), sends `stop.completed` (with the resident's
  code at a door) and leaves half a service time later. It logs what it did: the legs driven, the pickups and
  the deliveries, with their times.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import aiohttp
import orjson

from dispatch.clock import ScaledClock

log = logging.getLogger(__name__)

LatLng = tuple[float, float]
OPEN_STOP_STATES = ("pending", "arrived")
COMMAND_TIMEOUT_S = 30.0  # wall seconds for a websocket command's reply
# Refusals that changed nothing and say to try again shortly (a busy or recovering server).
RETRY_CODES = frozenset({"rate_limited", "unavailable", "overloaded"})
_STOP_RANK = {"pending": 0, "arrived": 1, "completed": 2, "cancelled": 2}


class ApiError(Exception):
    """An error answer of the server (HTTP or a websocket reply), with its code."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


# --- time --------------------------------------------------------------------------------------------------


class DayClock:
    """Minutes of a day on a shared scaled clock: minute 0 is `t0` on the clock."""

    def __init__(self, clock: ScaledClock, t0: datetime) -> None:
        self.clock = clock
        self.t0 = t0

    @property
    def speed(self) -> float:
        return self.clock.speed

    def minute(self) -> float:
        return (self.clock.now() - self.t0).total_seconds() / 60.0

    def at(self, minute: float) -> datetime:
        return self.t0 + timedelta(minutes=minute)

    def minute_of(self, iso: str) -> float:
        return (datetime.fromisoformat(iso) - self.t0).total_seconds() / 60.0

    def wall_seconds(self, minutes: float) -> float:
        return minutes * 60.0 / self.clock.speed

    async def sleep_until(self, minute: float) -> None:
        """Return once the clock reads `minute` or later (never early: sleeps are re-checked)."""
        while True:
            left = minute - self.minute()
            if left <= 0:
                return
            await asyncio.sleep(max(0.001, self.wall_seconds(left)))


# --- HTTP and websockets -----------------------------------------------------------------------------------


UNAVAILABLE_ATTEMPTS = 10


class Api:
    """Plain JSON over HTTP with a bearer token; errors become `ApiError`."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/v1/ws"

    async def call(
        self, method: str, path: str, token: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        sent = {"Authorization": f"Bearer {token}", **(headers or {})}
        data = None if body is None else orjson.dumps(body)
        if data is not None:
            sent["Content-Type"] = "application/json"
        for attempt in range(UNAVAILABLE_ATTEMPTS):
            async with self.session.request(method, self.base_url + path, data=data, headers=sent) as resp:
                raw = await resp.read()
                payload = orjson.loads(raw) if raw else None
                if resp.status < 400:
                    return payload
                error = (payload or {}).get("error", {}) if isinstance(payload, dict) else {}
                code, message = error.get("code", "http_error"), error.get("message", str(payload))
                # 503 `unavailable` means nothing was done (e.g. the node's zone workers are all busy while a
                # day's shops are set up at once): wait as told and ask again. Not `outcome_unknown`.
                if resp.status == 503 and code == "unavailable" and attempt + 1 < UNAVAILABLE_ATTEMPTS:
                    await asyncio.sleep(min(5.0, float(resp.headers.get("Retry-After", "1"))))
                    continue
                raise ApiError(resp.status, code, message, error.get("details"))
        raise AssertionError("unreachable")


EventHandler = Callable[[dict[str, Any]], None]


class Socket:
    """One app's websocket: events (with `seq`) go to `on_event`; `command` sends one and awaits its reply.
    A dropped connection is reopened and resumed after the last seq seen."""

    def __init__(self, api: Api, token: str, on_event: EventHandler) -> None:
        self.api = api
        self.token = token
        self.on_event = on_event
        self.last_seq = 0
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._run())

    async def _connect(self) -> None:
        self._ws = await self.api.session.ws_connect(
            self.api.ws_url, headers={"Authorization": f"Bearer {self.token}"}, heartbeat=30
        )
        if self.last_seq:
            await self._ws.send_str(orjson.dumps({"type": "resume", "after_seq": self.last_seq}).decode())
        self._connected.set()

    async def _run(self) -> None:
        while not self._closing:
            ws = self._ws
            assert ws is not None
            async for msg in ws:
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._dispatch(orjson.loads(msg.data))
            self._connected.clear()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("websocket closed"))
            self._waiting.clear()
            if self.closing():
                return
            log.warning("websocket closed (%s); reconnecting", ws.close_code)
            while not self._closing:
                try:
                    await self._connect()
                    break
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.5)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "reply":
            future = self._waiting.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                if message.get("ok"):
                    future.set_result(message.get("data"))
                else:
                    err = message.get("error") or {}
                    future.set_exception(
                        ApiError(409, err.get("code", "error"), err.get("message", ""), err.get("details"))
                    )
            return
        seq = message.get("seq")
        if seq is None:
            return  # hello
        if seq <= self.last_seq:
            return  # a resume may repeat what we saw
        self.last_seq = seq
        try:
            self.on_event(message)
        except Exception:
            log.exception("event handler failed on %s", kind)

    def closing(self) -> bool:
        return self._closing

    async def command(self, kind: str, **body: Any) -> Any:
        """Send a command and return its reply's data; retried when rate-limited or reconnecting."""
        for attempt in range(20):
            await self._connected.wait()
            ws = self._ws
            assert ws is not None
            ident = next(self._ids)
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiting[ident] = future
            try:
                await ws.send_str(orjson.dumps({"type": kind, "id": ident, **body}).decode())
                return await asyncio.wait_for(future, COMMAND_TIMEOUT_S)
            except ApiError as exc:
                if exc.code not in RETRY_CODES:
                    raise
            except (ConnectionError, aiohttp.ClientError, TimeoutError):
                pass
            finally:
                self._waiting.pop(ident, None)
            await asyncio.sleep(0.05 * (attempt + 1))
        raise ApiError(429, "gave_up", f"{kind}: no answer after retries")

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# --- shops -------------------------------------------------------------------------------------------------


class ReadyBoard:
    """Which jobs are ready: the shop posts, the courier at the counter waits."""

    def __init__(self) -> None:
        self._ready: dict[str, asyncio.Event] = {}

    def _event(self, job_id: str) -> asyncio.Event:
        return self._ready.setdefault(job_id, asyncio.Event())

    def expect(self, job_id: str) -> None:
        """A simulated shop has the job: couriers wait for it to be posted ready."""
        self._event(job_id)

    def expects(self, job_id: str) -> bool:
        return job_id in self._ready

    def post(self, job_id: str) -> None:
        self._event(job_id).set()

    def is_ready(self, job_id: str) -> bool:
        return self._event(job_id).is_set()

    async def wait(self, job_id: str) -> None:
        await self._event(job_id).wait()


PrepFor = Callable[[dict[str, Any]], tuple[int, float]]
"""A job as offered -> (preparation minutes to announce, day minute at which it is ready)."""


class ShopApp:
    """A shop's tablet: accepts each offered job, marks it ready when its time comes."""

    def __init__(self, shop_id: str, api: Api, token: str, day: DayClock, board: ReadyBoard, prep: PrepFor):
        self.shop_id = shop_id
        self.day = day
        self.board = board
        self.prep = prep
        self.socket = Socket(api, token, self._on_event)
        self.errors: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._handled: set[str] = set()  # jobs this app accepted or is marking ready

    async def start(self) -> None:
        await self.socket.start()

    def _on_event(self, event: dict[str, Any]) -> None:
        job = event["data"]
        if event["type"] == "job.offered" and job["state"] == "offered":
            self.board.expect(job["id"])
            self._spawn(self._handle(job))
        elif event["type"] == "job.accepted" and job["id"] not in self._handled and job.get("ready_at"):
            # Accepted by the server for us (a shop with auto-accept): still say when it is ready.
            self._spawn(self._ready_later(job["id"], self.day.minute_of(job["ready_at"])))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ready_later(self, job_id: str, minute: float) -> None:
        self._handled.add(job_id)
        self.board.expect(job_id)
        try:
            await self.day.sleep_until(minute)
            await self.socket.command("job.ready", job_id=job_id)
            self.board.post(job_id)
        except ApiError as exc:
            self.errors.append(f"{self.shop_id} {job_id}: {exc}")

    async def _handle(self, job: dict[str, Any]) -> None:
        self._handled.add(job["id"])
        prep_minutes, ready_minute = self.prep(job)
        try:
            await self.socket.command("job.accept", job_id=job["id"], prep_minutes=prep_minutes)
            await self.day.sleep_until(ready_minute)
            await self.socket.command("job.ready", job_id=job["id"])
            self.board.post(job["id"])
        except ApiError as exc:
            self.errors.append(f"{self.shop_id} {job['id']}: {exc}")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.socket.close()


# --- couriers ----------------------------------------------------------------------------------------------


class World(Protocol):
    """Where a courier's places are and how long it takes between them."""

    def place_of(self, stop: dict[str, Any]) -> str:
        """The place id of a stop (and remember where it is)."""
        ...

    def leg_minutes(self, origin: str, destination: str) -> float: ...

    def along(self, origin: str, destination: str, fraction: float) -> LatLng:
        """The position a fraction of the way from origin to destination."""
        ...


@dataclass
class CourierLog:
    """What a courier did, in day minutes."""

    moves: list[tuple[float, str, str]] = field(default_factory=list)  # (departure, origin, destination)
    pickups: list[tuple[float, str, tuple[str, ...]]] = field(default_factory=list)  # (time, stop, job ids)
    deliveries: list[tuple[float, str, str]] = field(default_factory=list)  # (time, stop, order id)
    route_offered: dict[str, float] = field(default_factory=dict)  # route id -> minute offered
    stop_route: dict[str, str] = field(default_factory=dict)  # stop id -> route id
    errors: list[str] = field(default_factory=list)


CodeFor = Callable[[str], Awaitable[str | None]]
"""A server order id -> the drop-off code the resident's app shows."""


class CourierApp:
    def __init__(
        self,
        courier_id: str,
        api: Api,
        token: str,
        day: DayClock,
        world: World,
        *,
        start_place: str,
        on_minute: float,
        off_minute: float,
        board: ReadyBoard,
        code_for: CodeFor,
        pickup_service: float,
        dropoff_service: float,
        ping_every: float,
        linger: float = 2.0,
        on_delivered: Callable[[str, float], None] | None = None,
    ) -> None:
        self.courier_id = courier_id
        self.day = day
        self.world = world
        self.place = start_place
        self.on_minute = on_minute
        self.off_minute = off_minute
        self.board = board
        self.code_for = code_for
        self.half_pickup = pickup_service / 2
        self.half_dropoff = dropoff_service / 2
        self.ping_every = ping_every  # day minutes between pings
        self.linger = linger  # day minutes after the shift's end to wait for late work
        self.on_delivered = on_delivered
        self.socket = Socket(api, token, self._on_event)
        self.log = CourierLog()
        self.finished = False
        self._routes: dict[str, dict[str, Any]] = {}  # by route id, in the order first seen
        self._stops: dict[str, dict[str, Any]] = {}  # stop id -> latest known stop
        self._done: set[str] = set()  # stops this app completed or gave up on
        self._changed = asyncio.Event()
        self._leg: tuple[str, str, float, float] | None = None  # origin, destination, departure, arrival
        self._tasks: set[asyncio.Task[None]] = set()
        self._pinging = asyncio.Lock()  # one ping at a time, so their times only go forward
        self._last_ping: datetime | None = None

    # -- events ------------------------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        if event["type"] in ("route.offered", "route.updated", "route.cancelled"):
            self._merge_route(event["data"], cancelled=event["type"] == "route.cancelled")
            if event["type"] == "route.offered" and event["data"]["state"] == "offered":
                task = asyncio.create_task(self._accept(event["data"]["id"]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _merge_route(self, route: dict[str, Any], *, cancelled: bool = False) -> None:
        known = self._routes.setdefault(route["id"], route)
        known["state"] = "cancelled" if cancelled else route["state"]
        if route.get("offered_at") and route["id"] not in self.log.route_offered:
            self.log.route_offered[route["id"]] = self.day.minute_of(route["offered_at"])
        order = []
        for stop in route["stops"]:
            old = self._stops.get(stop["id"])
            if old is None or _STOP_RANK[stop["state"]] >= _STOP_RANK[old["state"]]:
                self._stops[stop["id"]] = stop
            self.log.stop_route[stop["id"]] = route["id"]
            order.append(stop["id"])
        known["stop_ids"] = order
        self._changed.set()

    async def _accept(self, route_id: str) -> None:
        try:
            self._merge_route(await self.socket.command("route.accept", route_id=route_id))
        except ApiError as exc:
            self.log.errors.append(f"route.accept {route_id}: {exc}")

    def next_stop(self) -> dict[str, Any] | None:
        for route in self._routes.values():
            if route["state"] not in ("active", "offered"):
                continue
            for stop_id in route["stop_ids"]:
                stop = self._stops[stop_id]
                if stop["state"] in OPEN_STOP_STATES and stop_id not in self._done:
                    if route["state"] == "offered":
                        return None  # wait for the accept
                    return stop
        return None

    def _open(self, stop_id: str) -> bool:
        stop = self._stops[stop_id]
        route = self._routes[self.log.stop_route[stop_id]]
        return stop["state"] in OPEN_STOP_STATES and route["state"] == "active" and stop_id not in self._done

    # -- position --------------------------------------------------------------------------------------

    def position(self) -> LatLng:
        if self._leg is not None:
            origin, destination, departure, arrival = self._leg
            span = arrival - departure
            fraction = 1.0 if span <= 0 else min(1.0, max(0.0, (self.day.minute() - departure) / span))
            return self.world.along(origin, destination, fraction)
        return self.world.along(self.place, self.place, 0.0)

    async def ping(self) -> None:
        """Send where the courier is now. A ping no later than the previous one would be ignored, so two
        within a millisecond of the clock are spaced by one."""
        async with self._pinging:
            lat, lng = self.position()
            at = self.day.clock.now()
            if self._last_ping is not None and at <= self._last_ping:
                at = self._last_ping + timedelta(milliseconds=1)
            self._last_ping = at
            try:
                await self.socket.command(
                    "courier.location", lat=lat, lng=lng, accuracy=5.0, at=at.isoformat()
                )
            except ApiError as exc:
                self.log.errors.append(f"courier.location: {exc}")

    async def _pinger(self) -> None:
        while True:
            await self.ping()
            await asyncio.sleep(self.day.wall_seconds(self.ping_every))

    # -- the day ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Ping from just before the shift, follow routes until the shift is over and no work is left."""
        await self.socket.start()
        await self.day.sleep_until(self.on_minute - self.ping_every)
        pinger = asyncio.create_task(self._pinger())
        try:
            await self._work()
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
            self.finished = True

    async def _work(self) -> None:
        while True:
            self._changed.clear()
            stop = self.next_stop()
            if stop is None:
                now = self.day.minute()
                end = self.off_minute + self.linger
                if now >= end:
                    return
                # Idle: wait for work, or until the shift is over (and late work would have come).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.day.wall_seconds(end - now) + 0.01)
                continue
            await self._serve(stop)

    async def _drive(self, destination: str) -> None:
        if destination == self.place:
            return
        departure = self.day.minute()
        arrival = departure + self.world.leg_minutes(self.place, destination)
        self.log.moves.append((departure, self.place, destination))
        self._leg = (self.place, destination, departure, arrival)
        await self.day.sleep_until(arrival)
        self._leg = None
        self.place = destination

    async def _serve(self, stop: dict[str, Any]) -> None:
        stop_id = stop["id"]
        await self._drive(self.world.place_of(stop))
        following = self.next_stop()
        if following is None or following["id"] != stop_id:
            return  # the route changed on the way: take it from here
        arrived = self.day.minute()
        try:
            if self._stops[stop_id]["state"] == "pending":
                await self.ping()  # the server takes the arrival from a trusted position at the stop
                try:
                    self._merge_route(await self.socket.command("stop.arrived", stop_id=stop_id))
                except ApiError as exc:
                    if exc.code != "already_arrived":  # a resent command whose first reply was lost
                        raise
            if stop["kind"] == "pickup":
                await self._pick_up(stop_id, arrived)
            else:
                await self._drop_off(stop_id, arrived)
        except ApiError as exc:
            self.log.errors.append(f"{stop['kind']} {stop_id}: {exc}")
            self._done.add(stop_id)

    async def _pick_up(self, stop_id: str, arrived: float) -> None:
        await self.day.sleep_until(arrived + self.half_pickup)
        while True:  # at the counter until the goods are marked ready (or the stop is taken away)
            self._changed.clear()
            job_ids = self._stops[stop_id]["job_ids"]
            if not self._open(stop_id):
                return
            # Goods of shops this process simulates come when posted; others are taken as ready (and waited
            # for if the server says they are not).
            waiting = [j for j in job_ids if self.board.expects(j) and not self.board.is_ready(j)]
            if not waiting:
                at = self.day.minute()
                await self.ping()  # a fresh trusted position at the counter
                try:
                    route = await self.socket.command("stop.completed", stop_id=stop_id)
                    break
                except ApiError as exc:
                    if exc.code != "job_not_ready":
                        raise
                    unready = [j for j in (exc.details or {}).get("job_ids", []) if j in job_ids]
                    for job_id in unready:
                        self.board.expect(job_id)
                    waiting = [j for j in unready if not self.board.is_ready(j)]
                    if not waiting:  # posted, yet not ready to the server: look again in a minute
                        await self.day.sleep_until(self.day.minute() + 1.0)
                        continue
            ready: asyncio.Future[list[None]] = asyncio.gather(*(self.board.wait(j) for j in waiting))
            changed: asyncio.Future[Any] = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait([ready, changed], return_when=asyncio.FIRST_COMPLETED)
            for pending in (ready, changed):
                pending.cancel()
                pending.add_done_callback(_consume)
        self._done.add(stop_id)
        self.log.pickups.append((at, stop_id, tuple(job_ids)))
        self._merge_route(route)
        await self.day.sleep_until(at + self.half_pickup)

    async def _drop_off(self, stop_id: str, arrived: float) -> None:
        order_id = self._stops[stop_id]["order_id"]
        # The resident has the code at hand when the courier rings: ask for it now, not after the first half
        # of the service, where the request's round trip would delay every hand-over.
        asking = asyncio.ensure_future(self.code_for(order_id))
        try:
            await self.day.sleep_until(arrived + self.half_dropoff)
            code = await asking
        finally:
            if not asking.done():
                asking.cancel()
                asking.add_done_callback(_consume)
        if not self._open(stop_id):
            return
        at = self.day.minute()
        route = await self.socket.command("stop.completed", stop_id=stop_id, code=code)
        self._done.add(stop_id)
        self.log.deliveries.append((at, stop_id, order_id))
        if self.on_delivered is not None:
            self.on_delivered(order_id, at)
        self._merge_route(route)
        await self.day.sleep_until(at + self.half_dropoff)

    async def close(self) -> None:
        await self.socket.close()


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a cancelled helper future's outcome, so asyncio does not warn about it."""
    if not future.cancelled():
        future.exception()
