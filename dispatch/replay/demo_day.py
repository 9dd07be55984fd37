"""`python -m dispatch simulate`: a demo day against a running server (`make serve` with the demo data).

The replay's simulated apps (`dispatch/replay/apps.py`) drive the demo neighbourhood through the real API:
every demo courier goes on shift at a random point near the demo centre and follows the routes it is given
(driving at the server's travel speed, completing stops with the resident's code), every demo shop accepts
its jobs with a few minutes of preparation and marks them ready, and random demo residents place a few orders
a minute from the demo catalogues (the server chooses the shops, so some orders split). It runs on the
server's clock (scaled if the server was started with `DISPATCH_CLOCK_*`), for `--minutes` of that clock,
then prints what happened. Ids are read from the database (the embedded one under `--data-dir`, or
`DATABASE_URL`); everything else goes through the HTTP and websocket API with tokens signed by the data
dir's secret, as `dispatch token` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from dispatch.auth import Role, issue_token, load_or_create_secret
from dispatch.clock import ScaledClock, from_description
from dispatch.config import Settings
from dispatch.demo import CENTRE
from dispatch.errors import StartupError
from dispatch.replay.apps import Api, ApiError, CourierApp, DayClock, LatLng, ReadyBoard, ShopApp
from geo import TravelModel, destination

TOKEN_TTL_S = 7 * 24 * 3600
# After the last order, couriers deliver what is left for as long as deliveries keep coming: the day is called
# off only after this many minutes without one. A busy day's last orders can take most of an hour (every
# courier has a queue of trips), so a fixed hour from the last order would cut some of them off on the way.
FINISH_MINUTES = 60.0
ON_DUTY_MINUTES = 24 * 60.0  # couriers stay on until the day is called off


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default="http://127.0.0.1:8080", help="the running server's URL (%(default)s)")
    p.add_argument("--data-dir", help="the server's data dir: its secret and embedded database (./.dispatch)")
    p.add_argument(
        "--minutes", type=float, default=60.0, help="how long to run, in minutes of the server's clock (60)"
    )
    p.add_argument("--orders-per-minute", type=float, default=1.0, help="mean orders a clock minute (1)")
    p.add_argument("--couriers", type=int, help="how many demo couriers go on shift (default: all)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the day (1)")
    p.set_defaults(func=cmd_simulate)


async def server_clock(server: str) -> ScaledClock:
    """The running server's clock (`GET /v1/clock`), so the day runs at the server's speed whatever this
    process's environment says."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        try:
            async with session.get(server.rstrip("/") + "/v1/clock") as resp:
                described = await resp.json()
        except (aiohttp.ClientError, OSError) as exc:
            raise StartupError(f"cannot reach the server at {server}: {exc}") from None
    clock = from_description(described)
    if isinstance(clock, ScaledClock):
        return clock
    return ScaledClock(datetime.now(UTC), 1.0, time.time())


@dataclass
class DemoData:
    shops: list[str]
    couriers: list[str]
    residents: list[str]
    skus: list[str]


async def read_demo(database_url: str) -> DemoData:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        shops = [r["id"] for r in await conn.fetch("SELECT id FROM shops WHERE active ORDER BY id")]
        couriers = [r["id"] for r in await conn.fetch("SELECT id FROM couriers WHERE active ORDER BY id")]
        residents = [r["id"] for r in await conn.fetch("SELECT id FROM residents ORDER BY id")]
        skus = [
            r["sku"]
            for r in await conn.fetch(
                "SELECT DISTINCT sku FROM catalogue_items WHERE stock > 0 AND NOT preorder_only ORDER BY sku"
            )
        ]
    finally:
        await conn.close()
    return DemoData(shops, couriers, residents, skus)


class StreetWorld:
    """Stops (and each courier's start) on latitude/longitude; legs take the server's travel times."""

    def __init__(self, travel: TravelModel) -> None:
        self.travel = travel
        self.points: dict[str, LatLng] = {}

    def place_of(self, stop: dict[str, Any]) -> str:
        self.points[stop["id"]] = (stop["location"]["lat"], stop["location"]["lng"])
        return str(stop["id"])

    def leg_minutes(self, origin: str, destination: str) -> float:
        a, b = self.points[origin], self.points[destination]
        return self.travel.minutes(a[0], a[1], b[0], b[1])

    def along(self, origin: str, destination: str, fraction: float) -> LatLng:
        a, b = self.points[origin], self.points[destination]
        return a[0] + (b[0] - a[0]) * fraction, a[1] + (b[1] - a[1]) * fraction


@dataclass
class Tally:
    placed: int = 0
    refused: int = 0
    placed_at: dict[str, float] = field(default_factory=dict)
    delivered_at: dict[str, float] = field(default_factory=dict)  # orders the server says are delivered
    errors: list[str] = field(default_factory=list)  # what the apps were refused, and failed checks

    @property
    def delivered(self) -> int:
        return len(self.delivered_at)

    @property
    def click_to_door(self) -> list[float]:
        return [at - self.placed_at[order_id] for order_id, at in self.delivered_at.items()]


def cmd_simulate(args: argparse.Namespace) -> int:
    from dispatch.cli import _settings

    settings = _settings(args)
    secret = load_or_create_secret(settings.secret, settings.data_dir)
    database_url = settings.database_url
    if database_url is None:
        # The server's embedded PostgreSQL (pgserver shares it between processes). Only PostgreSQL: the
        # embedded Redis belongs to the server, and stopping our handle on it would stop it.
        from dispatch.embedded import start_postgres

        database_url, _ = start_postgres(settings.data_dir)
    data = asyncio.run(read_demo(database_url))
    if not data.shops or not data.couriers or not data.residents or not data.skus:
        print("no demo data: start the server with the demo (`make serve`) first")
        return 2
    clock = asyncio.run(server_clock(args.server))
    print(f"on the server's clock ({clock.speed:g}x), {args.minutes:g} minutes of it ...", flush=True)
    tally = asyncio.run(simulate(args, settings, secret, clock, data))
    mean = sum(tally.click_to_door) / len(tally.click_to_door) if tally.click_to_door else float("nan")
    print(
        f"demo day: {tally.placed} orders placed ({tally.refused} refused), {tally.delivered} delivered, "
        f"mean click-to-door {mean:.1f} min"
    )
    if tally.errors:
        print(f"{len(tally.errors)} error(s) in the apps, the first ones:")
        for error in tally.errors[:20]:
            print(f"  {error}")
    return 0


async def simulate(
    args: argparse.Namespace, settings: Settings, secret: str, clock: ScaledClock, data: DemoData
) -> Tally:
    rng = random.Random(args.seed)
    day = DayClock(clock, clock.now())
    travel = TravelModel(settings.speed_m_per_min, settings.detour_factor, round_up=settings.travel_round_up)
    world = StreetWorld(travel)
    board = ReadyBoard()
    tally = Tally()

    def token(role: Role, subject: str) -> str:
        return issue_token(secret, role, subject, TOKEN_TTL_S, clock.now())

    def prep(job: dict[str, Any]) -> tuple[int, float]:
        minutes = rng.randint(2, 8)
        return minutes, day.minute() + minutes

    resident_of: dict[str, str] = {}

    async def code_for(order_id: str) -> str | None:
        view = await api.call(
            "GET", f"/v1/orders/{order_id}/delivery", token(Role.RESIDENT, resident_of[order_id])
        )
        code: str | None = view.get("code")
        return code

    placing_done, all_delivered, progress = asyncio.Event(), asyncio.Event(), asyncio.Event()

    def check_done() -> None:
        progress.set()
        if placing_done.is_set() and len(tally.delivered_at) >= tally.placed:
            all_delivered.set()

    checks: set[asyncio.Task[None]] = set()

    async def confirm(order_id: str, minute: float) -> None:
        # An order split over two routes has a drop-off on each: it is delivered at its last, which only the
        # server knows (the other part may still be on its way).
        try:
            order = await api.call(
                "GET", f"/v1/orders/{order_id}", token(Role.RESIDENT, resident_of[order_id])
            )
        except ApiError as exc:
            tally.errors.append(f"order {order_id}: {exc}")
            return
        if order["state"] == "delivered":
            tally.delivered_at[order_id] = max(minute, tally.delivered_at.get(order_id, minute))
            check_done()

    def delivered(order_id: str, minute: float) -> None:
        task = asyncio.create_task(confirm(order_id, minute))
        checks.add(task)
        task.add_done_callback(checks.discard)

    connector = aiohttp.TCPConnector(limit=0)  # every app holds a websocket
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), connector=connector) as session:
        api = Api(session, args.server)
        shops = [ShopApp(s, api, token(Role.SHOP, s), day, board, prep) for s in data.shops]
        for shop in shops:
            await shop.start()
        couriers = []
        for courier_id in data.couriers[: args.couriers]:
            start = f"start:{courier_id}"
            world.points[start] = destination(*CENTRE, rng.uniform(0, 360), rng.uniform(0, 1500))
            with contextlib.suppress(ApiError):  # already on shift
                await api.call(
                    "POST", f"/v1/couriers/{courier_id}/shift/start", token(Role.COURIER, courier_id)
                )
            couriers.append(
                CourierApp(
                    courier_id,
                    api,
                    token(Role.COURIER, courier_id),
                    day,
                    world,
                    start_place=start,
                    on_minute=0.0,
                    off_minute=args.minutes,
                    board=board,
                    code_for=code_for,
                    pickup_service=settings.pickup_service_minutes,
                    dropoff_service=settings.dropoff_service_minutes,
                    # Once a wall second, but often enough to stay fresh (DISPATCH_COURIER_STALE_S).
                    ping_every=min(max(1 / 60, clock.speed / 60), settings.courier_stale_s / 60 / 3),
                    linger=ON_DUTY_MINUTES,
                    on_delivered=delivered,
                )
            )
        tasks = [asyncio.create_task(c.run()) for c in couriers]

        async def place_one() -> None:
            resident = rng.choice(data.residents)
            lat, lng = destination(*CENTRE, rng.uniform(0, 360), rng.uniform(0, 1200))
            items = [
                {"sku": sku, "qty": rng.randint(1, 2)} for sku in rng.sample(data.skus, rng.randint(1, 3))
            ]
            body = {
                "dropoff": {"lat": lat, "lng": lng},
                "items": items,
                "fulfilment": "delivery",
                "timing": "asap",
            }
            try:
                order = await api.call("POST", "/v1/orders", token(Role.RESIDENT, resident), body)
            except ApiError:
                tally.refused += 1  # nothing near that point has those items: a resident shrugs
                return
            tally.placed += 1
            resident_of[order["id"]] = resident
            tally.placed_at[order["id"]] = day.minute()

        try:
            minute = 0.0
            while minute < args.minutes:
                for _ in range(_poisson(rng, args.orders_per_minute)):
                    await place_one()
                minute += 1.0
                if minute % 10 == 0 or minute >= args.minutes:
                    print(
                        f"  minute {minute:g} of {args.minutes:g}: {tally.placed} placed, "
                        f"{tally.delivered} delivered",
                        flush=True,
                    )
                await day.sleep_until(minute)
            # Let the couriers deliver what was ordered, while they still deliver.
            placing_done.set()
            check_done()
            while not all_delivered.is_set():
                progress.clear()
                try:
                    await asyncio.wait_for(progress.wait(), day.wall_seconds(FINISH_MINUTES))
                except TimeoutError:
                    break  # nothing delivered for a long while: what is left is stuck
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*checks, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in couriers), *(s.close() for s in shops))
            tally.errors += [e for c in couriers for e in c.log.errors] + [e for s in shops for e in s.errors]
    return tally


def _poisson(rng: random.Random, mean: float) -> int:
    """Orders this minute: Poisson by counting exponential gaps."""
    n, t = 0, rng.expovariate(mean) if mean > 0 else float("inf")
    while t < 1.0:
        n += 1
        t += rng.expovariate(mean)
    return n
