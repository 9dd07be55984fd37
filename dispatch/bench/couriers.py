"""`python -m dispatch bench couriers`: live courier pings and the dispatch round (issue 5's benchmark).

One run, on a fresh embedded PostgreSQL and Redis (temporary data dir), measures two things:

1. The dispatch round, in this process on the real service path (`run_round`): `--round-jobs` jobs waiting
   (15% of orders split over two shops) and `--round-couriers` idle couriers on shift with positions in Redis.
   The same state is dispatched three times (reset between runs); the median is reported.
2. Live pings: the server runs in its own process (`python -m dispatch serve`). Each courier sends
   `courier.location` on its websocket once a second; one resident per courier (`--followers`) follows it,
   as the courier carries the resident's order (picked up, not delivered). Measured over `--duration`
   seconds after a warm-up: pings answered per second, ping-to-resident latency (from the ping's scheduled
   time, so a late load generator counts against us), the server's peak memory (VmHWM) and CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from dispatch.auth import Role, issue_token
from dispatch.bench.stack import CpuMeter, free_port, process_tree, wait_ready
from dispatch.migrate import fresh_database

CENTRE = (45.7640, 4.8357)
TARGET_P99_MS, TARGET_ROUND_S, TARGET_CPU_US_PER_PING = 100.0, 1.0, 50.0
# A city's worth (10,000 couriers at 1 Hz, on every core) may take a little longer to reach the resident.
CITY_COURIERS, CITY_P99_MS = 10_000, 250.0
SLOTS = 100  # a second of pings is spread over this many ticks
CONNECT_CONCURRENCY = 64


def register(kinds: Any) -> None:
    p = kinds.add_parser(
        "couriers", help="courier pings to followers over websockets, and the dispatch round"
    )
    p.add_argument("--couriers", type=_positive, default=5000, help="couriers pinging once a second (5000)")
    p.add_argument("--followers", type=int, default=None, help="residents following a courier (default: all)")
    p.add_argument("--duration", type=_positive, default=60, help="measured seconds")
    p.add_argument("--warmup", type=int, default=5, help="seconds of pings before measuring (5)")
    p.add_argument(
        "--servers", type=_positive, default=1, help="server processes sharing PostgreSQL and Redis"
    )
    p.add_argument(
        "--workers", type=_positive, default=1, help="worker processes per server (`serve --workers N`) (1)"
    )
    p.add_argument("--profile", metavar="DIR", help="write each server process's cProfile stats into DIR")
    p.add_argument("--round-jobs", type=_positive, default=1000, help="jobs in the measured round (1000)")
    p.add_argument(
        "--round-couriers", type=_positive, default=2000, help="couriers in the measured round (2000)"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (1)")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.set_defaults(func=cmd_bench_couriers)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _progress(message: str) -> None:
    print(f"bench couriers: {message}", file=sys.stderr, flush=True)


def cmd_bench_couriers(args: argparse.Namespace) -> int:
    followers = args.couriers if args.followers is None else min(args.followers, args.couriers)
    report = asyncio.run(
        run(
            args.couriers,
            followers,
            args.duration,
            args.warmup,
            args.round_jobs,
            args.round_couriers,
            args.seed,
            args.servers,
            args.workers,
            args.profile,
        )
    )
    print(orjson.dumps(report).decode() if args.json else render(report))
    return 0


async def run(
    couriers: int,
    followers: int,
    duration: int,
    warmup: int,
    round_jobs: int,
    round_couriers: int,
    seed: int,
    servers: int = 1,
    workers: int = 1,
    profile: str | None = None,
) -> dict[str, Any]:
    from dispatch.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="bench-couriers-", ignore_cleanup_errors=True) as tmp:
        services = start_embedded(Path(tmp), None, None)
        try:
            assert services.database_url is not None and services.redis_url is not None
            round_url = await fresh_database(services.database_url, "bench_round")
            _progress(f"dispatch round: {round_jobs} jobs, {round_couriers} couriers")
            rounds = await _round_phase(
                round_url, services.redis_url + "?db=1", round_jobs, round_couriers, seed
            )
            live_url = await fresh_database(services.database_url, "bench_live")
            live = await _live_phase(
                live_url,
                services.redis_url,
                Path(tmp),
                couriers,
                followers,
                duration,
                warmup,
                seed,
                servers,
                workers,
                profile,
            )
        finally:
            await _shut_down_redis(services.redis_url)
            services.stop()
    ping_rate = live["pings_per_s"]
    p99 = live["resident_latency_ms"]["p99"]
    return {
        "couriers": couriers,
        "followers": followers,
        "duration_s": duration,
        "live": live,
        "round": rounds,
        "targets": {
            # Every courier's ping answered, every second.
            "pings_per_s": _target(ping_rate, round(0.98 * couriers), higher=True),
            "resident_p99_ms": _target(p99, _p99_goal_ms(couriers), higher=False),
            "server_cpu_us_per_ping": _target(
                live["cpu"]["server_cpu_us_per_ping"], TARGET_CPU_US_PER_PING, higher=False
            ),
            "round_s": _target(rounds["median_s"], TARGET_ROUND_S, higher=False)
            if round_jobs >= 1000 and round_couriers >= 2000
            else None,
            # A round that holds the event loop longer than the p99 goal delays every ping meanwhile past it.
            "round_loop_held_s": _target(rounds["loop_held_max_s"], TARGET_P99_MS / 1000, higher=False),
        },
    }


def _p99_goal_ms(couriers: int) -> float:
    return CITY_P99_MS if couriers >= CITY_COURIERS else TARGET_P99_MS


async def _shut_down_redis(url: str | None) -> None:
    """The embedded Redis stays up while any client lingers; this run's data is throwaway, so end it."""
    from redis.asyncio import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    if url is None:
        return
    client = Redis.from_url(url)
    with contextlib.suppress(RedisConnectionError, OSError):
        await client.shutdown(nosave=True)
    with contextlib.suppress(Exception):
        await client.aclose()


def _target(value: float | None, limit: float, *, higher: bool) -> dict[str, Any]:
    met = value is not None and (value >= limit * 0.99 if higher else value < limit)
    return {"value": value, "limit": limit, "met": met}


def _scatter(rng: np.random.Generator, n: int, radius_m: float) -> list[tuple[float, float]]:
    r = radius_m * np.sqrt(rng.random(n))
    theta = rng.random(n) * 2 * np.pi
    lat = CENTRE[0] + r * np.cos(theta) / 111_320
    lng = CENTRE[1] + r * np.sin(theta) / (111_320 * np.cos(np.radians(CENTRE[0])))
    return list(zip(lat.tolist(), lng.tolist(), strict=True))


def _ids(kind: str, n: int) -> list[str]:
    from dispatch.ids import new_id

    return [new_id(kind) for _ in range(n)]


# --- the dispatch round ------------------------------------------------------------------------------------


async def _round_phase(
    database_url: str, redis_url: str, jobs: int, couriers: int, seed: int
) -> dict[str, Any]:
    from redis.asyncio import Redis

    from dispatch.clock import SystemClock
    from dispatch.config import Settings
    from dispatch.db import create_pool
    from dispatch.metrics import Metrics
    from dispatch.services.context import Services
    from dispatch.services.dispatching import run_round
    from dispatch.services.locations import LiveLocations, Ping
    from dispatch.services.zone_directory import ZoneDirectory
    from dispatch.services.zones import zone_workers
    from websocket.fanout import Fanout
    from websocket.hub import Hub

    async def nothing_after(recipient: str, after: int, limit: int) -> list[dict[str, Any]]:
        return []

    async def no_seq(recipient: str) -> int:
        return 0

    async def no_seqs(recipients: Sequence[str]) -> dict[str, int]:
        return {}

    # Every job placed in the round (none held for later): the most the round can have to write.
    settings = Settings(defer_wait_minutes=math.inf)
    pool = await create_pool(database_url, 2, 4)
    redis = Redis.from_url(redis_url)
    clock = SystemClock()
    live = LiveLocations(redis, settings.courier_max_speed_m_s, clock)
    await live.start()
    svc = Services(
        pool,
        clock,
        settings,
        ZoneDirectory(pool, 9),
        Hub(redis, Fanout(redis), nothing_after, no_seq, no_seqs),
        live,
        Metrics(),
        zone_workers(settings),  # never started: the round changes no zone
    )
    rng = np.random.default_rng(seed)
    try:
        courier_ids, spots = await _seed_round(pool, rng, jobs, couriers)
        runs = []
        for _ in range(3):
            await _reset_round(pool, redis)
            now = svc.clock.now()
            await asyncio.gather(
                *(
                    live.ping(Ping(c, lat, lng, 5.0, now), False)
                    for c, (lat, lng) in zip(courier_ids, spots, strict=True)
                )
            )
            started = time.perf_counter()
            watch = LoopWatch()
            async with watch:
                report = await run_round(svc, live)
            elapsed = time.perf_counter() - started
            assert report is not None
            placed = await pool.fetchval("SELECT count(*) FROM jobs WHERE route_id IS NOT NULL")
            runs.append(
                {
                    "seconds": round(elapsed, 3),
                    "routes": report.routes,
                    "jobs_placed": placed,
                    "laps": report.seconds,
                    "loop_held_max_s": round(watch.longest_s, 3),
                }
            )
            _progress(
                f"round: {elapsed:.3f} s, {report.routes} routes, {placed} of {jobs} jobs placed; the event "
                f"loop held at most {watch.longest_s:.3f} s at a time"
            )
    finally:
        await live.stop()
        await redis.aclose()
        await pool.close()
    return {
        "jobs": jobs,
        "couriers": couriers,
        "median_s": statistics.median(r["seconds"] for r in runs),
        "loop_held_max_s": max(r["loop_held_max_s"] for r in runs),
        "runs": runs,
        "how": "run_round (claim, load from PostgreSQL and Redis, route candidates, H3 rings, "
        "linear_sum_assignment, write routes/stops/events in one transaction, publish) on an idle server",
    }


class LoopWatch:
    """The longest the event loop went without running a task, while inside: what every request, ping and
    websocket on the node would have waited on top of its own time."""

    TICK_S = 0.001

    def __init__(self) -> None:
        self.longest_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._watch())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _watch(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(self.TICK_S)
            now = time.perf_counter()
            self.longest_s = max(self.longest_s, now - last - self.TICK_S)
            last = now


async def _seed_round(
    pool: Any, rng: np.random.Generator, jobs: int, couriers: int
) -> tuple[list[str], list[Any]]:
    now = datetime.now(UTC)
    shop_ids = _ids("shop", max(20, jobs // 4))
    shop_spots = _scatter(rng, len(shop_ids), 3000)
    courier_ids, courier_spots = _ids("cou", couriers), _scatter(rng, couriers, 4000)
    # 15% of orders are split over two shops: jobs = singles + 2 * splits
    splits = int(jobs * 0.15 / 2)
    singles = jobs - 2 * splits
    order_ids = _ids("ord", singles + splits)
    resident_ids = _ids("res", len(order_ids))
    doors = _scatter(rng, len(order_ids), 3000)
    job_rows = []
    for n, order_id in enumerate(order_ids):
        shops = rng.choice(len(shop_ids), 2 if n >= singles else 1, replace=False)
        for s in shops:
            ready = now + timedelta(minutes=float(rng.uniform(0, 20)))
            qty = int(rng.integers(1, 3))
            lines = orjson.dumps([{"sku": "bench", "qty": qty, "unit_price_cents": 100}]).decode()
            job_rows.append((_ids("job", 1)[0], order_id, shop_ids[int(s)], lines, ready))
    async with pool.acquire() as conn, conn.transaction():
        await _shops_and_couriers(conn, shop_ids, shop_spots, courier_ids, now)
        await _orders(conn, order_ids, resident_ids, doors, "accepted", now)
        await conn.execute(
            """INSERT INTO jobs (id, order_id, shop_id, state, lines, accepted_at, prep_minutes, ready_at,
                                 created_at, updated_at)
               SELECT id, order_id, shop_id, 'accepted', lines::jsonb, $6, 10, ready_at, $6, $6
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                    AS t(id, order_id, shop_id, lines, ready_at)""",
            *[list(col) for col in zip(*job_rows, strict=True)],
            now,
        )
    return courier_ids, courier_spots


async def _shops_and_couriers(
    conn: Any, shop_ids: list[str], shop_spots: Any, courier_ids: list[str], now: datetime
) -> None:
    """Always-open shops at `shop_spots` and on-shift couriers, in bulk."""
    from dispatch.services.hours import ALWAYS_OPEN

    await conn.execute(
        """INSERT INTO shops (id, name, lat, lng, opening_hours)
           SELECT id, 'Shop', lat, lng, $4
           FROM unnest($1::text[], $2::float8[], $3::float8[]) AS t(id, lat, lng)""",
        shop_ids,
        [p[0] for p in shop_spots],
        [p[1] for p in shop_spots],
        ALWAYS_OPEN,
    )
    await conn.execute(
        """INSERT INTO couriers (id, name, capacity, on_shift, shift_started_at)
           SELECT id, 'Rider', 4, true, $2 FROM unnest($1::text[]) AS id""",
        courier_ids,
        now,
    )


async def _orders(
    conn: Any, order_ids: list[str], resident_ids: list[str], doors: list[Any], state: str, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO residents (id, name) SELECT id, 'Resident' FROM unnest($1::text[]) AS id", resident_ids
    )
    await conn.execute(
        """INSERT INTO orders (id, resident_id, state, fulfilment, drop_lat, drop_lng, created_at, updated_at)
           SELECT id, resident_id, $5, 'delivery', lat, lng, $6, $6
           FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[]) AS t(id, resident_id, lat, lng)""",
        order_ids,
        resident_ids,
        [d[0] for d in doors],
        [d[1] for d in doors],
        state,
        now,
    )


async def _reset_round(pool: Any, redis: Any) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE jobs SET route_id = NULL")
        await conn.execute("UPDATE orders SET delivery_code = NULL")
        await conn.execute("DELETE FROM stops")
        await conn.execute("DELETE FROM routes")
        await conn.execute("TRUNCATE events, recipient_seqs, dispatch_rounds")
        await conn.execute("UPDATE timers SET due_at = '-infinity'")
    await redis.flushdb()


# --- live pings ---------------------------------------------------------------------------------------------


@dataclass
class _Stats:
    window: tuple[float, float] = (0.0, 0.0)  # wall-clock seconds measured
    sent: int = 0
    replies: int = 0
    all_replies: int = 0  # warm-up included, for the CPU per ping over the whole run
    all_positions: int = 0
    errors: list[str] = field(default_factory=list)
    positions: int = 0
    reply_ms: list[float] = field(default_factory=list)
    resident_ms: list[float] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)

    def counts(self, at: float) -> bool:
        return self.window[0] <= at < self.window[1]


async def _live_phase(
    database_url: str,
    redis_url: str,
    tmp: Path,
    couriers: int,
    followers: int,
    duration: int,
    warmup: int,
    seed: int,
    servers: int,
    workers: int,
    profile: str | None,
) -> dict[str, Any]:
    secret = secrets.token_urlsafe(48)
    rng = np.random.default_rng(seed + 1)
    _progress(f"live: seeding {couriers} couriers, {followers} of them bringing a resident's order")
    courier_ids, resident_ids, spots = await _seed_live(database_url, redis_url, rng, couriers, followers)
    ports = [free_port() for _ in range(servers)]
    logs = [(tmp / f"server{n}.log").open("wb") for n in range(servers)]
    procs = [
        _start_server(database_url, redis_url, secret, port, tmp / f"server{n}", log, workers, profile)
        for n, (port, log) in enumerate(zip(ports, logs, strict=True))
    ]
    try:
        for port, proc in zip(ports, procs, strict=True):
            in_a_row = 1 if workers == 1 else 20 * workers  # every worker, likely
            await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}", proc, in_a_row=in_a_row)
        now = datetime.now(UTC)
        tokens = {s: issue_token(secret, Role.COURIER, s, 24 * 3600, now) for s in courier_ids}
        tokens |= {s: issue_token(secret, Role.RESIDENT, s, 24 * 3600, now) for s in resident_ids}
        live = await _drive(
            ports, [p.pid for p in procs], courier_ids, resident_ids, spots, tokens, duration, warmup
        )
        live["workers"] = workers
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
    if live["errors"] or live["pings_answered"] < live["pings_sent"]:
        live["server_log_tail"] = [(tmp / f"server{n}.log").read_text()[-3000:] for n in range(servers)]
    return live


async def _seed_live(
    database_url: str, redis_url: str, rng: np.random.Generator, couriers: int, followers: int
) -> tuple[list[str], list[str], list[Any]]:
    """Couriers on shift, each of the first `followers` carrying one resident's order (picked up)."""
    from redis.asyncio import Redis

    from dispatch.clock import SystemClock
    from dispatch.db import create_pool
    from dispatch.services.locations import Grant, LiveLocations

    now = datetime.now(UTC)
    courier_ids, spots = _ids("cou", couriers), _scatter(rng, couriers, 4000)
    shop_ids, shop_spots = _ids("shop", 200), _scatter(rng, 200, 3000)
    order_ids, resident_ids = _ids("ord", followers), _ids("res", followers)
    job_ids, route_ids = _ids("job", followers), _ids("rte", followers)
    pickups, dropoffs = _ids("stp", followers), _ids("stp", followers)
    doors = _scatter(rng, followers, 3000)
    carriers = courier_ids[:followers]
    shop_of = [shop_ids[int(i)] for i in rng.integers(0, len(shop_ids), followers)]
    pool = await create_pool(database_url, 1, 2)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await _shops_and_couriers(conn, shop_ids, shop_spots, courier_ids, now)
            await _orders(conn, order_ids, resident_ids, doors, "in_delivery", now)
            await conn.execute(
                """INSERT INTO routes (id, courier_id, state, offered_at, accepted_at, updated_at)
                   SELECT id, courier_id, 'active', $3, $3, $3
                   FROM unnest($1::text[], $2::text[]) t(id, courier_id)""",
                route_ids,
                carriers,
                now,
            )
            await conn.execute(
                """INSERT INTO jobs (id, order_id, shop_id, state, lines, route_id, created_at, updated_at)
                   SELECT id, order_id, shop_id, 'picked_up',
                          '[{"sku": "bench", "qty": 1, "unit_price_cents": 100}]', route_id, $5, $5
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                        t(id, order_id, shop_id, route_id)""",
                job_ids,
                order_ids,
                shop_of,
                route_ids,
                now,
            )
            await conn.execute(
                """INSERT INTO stops (id, route_id, seq, kind, shop_id, order_id, job_ids, lat, lng, items,
                                      state, eta_arrival, eta_service, completed_at)
                   SELECT p, r, 0, 'pickup', s, NULL, ARRAY[j], 0, 0, 1, 'completed', $7::timestamptz,
                          $7::timestamptz, $7::timestamptz
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) t(p, r, s, j)
                   UNION ALL
                   SELECT d, r, 1, 'dropoff', NULL, o, ARRAY[j], lat, lng, 1, 'pending', arrival, service,
                          NULL
                   FROM unnest($5::text[], $2::text[], $6::text[], $4::text[], $8::float8[], $9::float8[],
                               $10::timestamptz[], $11::timestamptz[])
                        t(d, r, o, j, lat, lng, arrival, service)""",
                pickups,
                route_ids,
                shop_of,
                job_ids,
                dropoffs,
                order_ids,
                now,
                [d[0] for d in doors],
                [d[1] for d in doors],
                *_door_etas(now, spots[:followers], doors),
            )
    finally:
        await pool.close()
    redis = Redis.from_url(redis_url)
    live = LiveLocations(redis, 40.0, SystemClock())
    try:
        await live.start()
        await live.grant(
            Grant(c, d, r, {"order_id": o})
            for c, d, r, o in zip(carriers, dropoffs, resident_ids, order_ids, strict=True)
        )
    finally:
        await live.stop()
        await redis.aclose()
    return courier_ids, resident_ids, spots


def _door_etas(
    now: datetime, starts: Sequence[tuple[float, float]], doors: Sequence[tuple[float, float]]
) -> tuple[list[datetime], list[datetime]]:
    """Each drop-off's arrival and hand-over as the server would time them from the courier's first ping:
    the ETAs a route change would have stored, so that a ping's ETA check finds them right (they move by
    less than a minute over the run) and the run measures pings, not a wave of ETA corrections."""
    from dispatch.config import Settings
    from dispatch.core.routes import ServiceTimes, Stop, simulate
    from dispatch.services.routes import instant, minutes
    from geo.distance import TravelModel

    settings = Settings()
    model = TravelModel(settings.speed_m_per_min, settings.detour_factor, round_up=settings.travel_round_up)
    service = ServiceTimes(settings.pickup_service_minutes, settings.dropoff_service_minutes)
    arrivals, services = [], []
    for start, door in zip(starts, doors, strict=True):
        (timing,) = simulate(
            start,
            minutes(now),
            [Stop("dropoff", door, ("job",), items=1)],
            lambda a, b: model.minutes(*a, *b),
            service,
        )
        arrivals.append(instant(timing.arrival))
        services.append(instant(timing.service_at))
    return arrivals, services


def _start_server(
    database_url: str,
    redis_url: str,
    secret: str,
    port: int,
    data_dir: Path,
    log: Any,
    workers: int,
    profile: str | None,
) -> subprocess.Popen[bytes]:
    """The server in its own process(es), as in production: `python -m dispatch serve`."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCH_SECRET": secret,
        "DISPATCH_LOG_LEVEL": "WARNING",
        "DISPATCH_WORKERS": str(workers),
        **({"DISPATCH_PROFILE_DIR": str(Path(profile).resolve())} if profile else {}),
    }
    command = [sys.executable, "-m", "dispatch", "serve", "--no-demo", "--port", str(port)]
    return subprocess.Popen(
        [*command, "--data-dir", str(data_dir)], env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def _drive(
    ports: list[int],
    pids: list[int],
    courier_ids: list[str],
    resident_ids: list[str],
    spots: list[Any],
    tokens: dict[str, str],
    duration: int,
    warmup: int,
) -> dict[str, Any]:
    """Courier k talks to server k mod n and its resident to the next one: with several servers, every
    position crosses nodes through Redis, as it would behind a load balancer."""
    urls = [f"http://127.0.0.1:{port}/v1/ws" for port in ports]
    stats = _Stats()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(subject: str, server: int) -> aiohttp.ClientWebSocketResponse:
            async with gate:
                headers = {"Authorization": f"Bearer {tokens[subject]}"}
                ws = await http.ws_connect(urls[server % len(urls)], headers=headers, autoping=True)
                await ws.receive()  # hello
                return ws

        _progress(
            f"live: connecting {len(resident_ids)} residents and {len(courier_ids)} couriers "
            f"to {len(urls)} server(s)"
        )
        started = time.perf_counter()
        residents = await asyncio.gather(*(connect(r, k + 1) for k, r in enumerate(resident_ids)))
        couriers = await asyncio.gather(*(connect(c, k) for k, c in enumerate(courier_ids)))
        connect_s = time.perf_counter() - started
        # The load generator's own garbage collector would stall its readers and count against the
        # server: freeze what exists and pause it for the run (reference counting still frees messages).
        gc.collect()
        gc.freeze()
        gc.disable()
        readers = [asyncio.create_task(_read_positions(ws, stats)) for ws in residents]
        readers += [asyncio.create_task(_read_replies(ws, stats)) for ws in couriers]
        start_ms = (int(time.time()) + 2) * 1000
        stats.window = ((start_ms / 1000) + warmup, (start_ms / 1000) + warmup + duration)
        meter = CpuMeter(pids)
        meter.start()
        _progress(f"live: {len(courier_ids)} couriers pinging for {warmup} s warm-up + {duration} s")
        await _send_pings(couriers, spots, start_ms, warmup + duration, stats)
        await asyncio.sleep(1.0)  # let the last answers arrive
        meter.stop()
        memory = [_memory_kib(pid) for root in pids for pid in process_tree(root)]
        gc.enable()
        for task in readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in [*residents, *couriers]), return_exceptions=True)
    return {
        "servers": len(ports),
        "connect_s": round(connect_s, 2),
        "pings_sent": stats.sent,
        "pings_answered": stats.replies,
        "pings_per_s": round(stats.replies / duration, 1),
        "errors": len(stats.errors),
        "error_sample": stats.errors[:5],
        "positions_received": stats.positions,
        "positions_expected": round(stats.sent * len(resident_ids) / max(1, len(courier_ids))),
        "reply_latency_ms": _percentiles(stats.reply_ms),
        "resident_latency_ms": _percentiles(stats.resident_ms),
        "send_lateness_ms": _percentiles(stats.late_ms),
        "cpu": meter.report({"ping": stats.all_replies, "position": stats.all_positions}),
        "server_peak_rss_mib": [round(peak / 1024, 1) for peak, _ in memory],
        "server_rss_end_mib": [round(rss / 1024, 1) for _, rss in memory],
        "cores": os.cpu_count(),
    }


async def _send_pings(
    couriers: list[aiohttp.ClientWebSocketResponse],
    spots: list[Any],
    start_ms: int,
    seconds: int,
    stats: _Stats,
) -> None:
    """Courier k pings at start + k/len seconds, then every second, creeping north 1 m a second."""
    slots = [list(range(s, len(couriers), SLOTS)) for s in range(SLOTS)]
    for second in range(seconds):
        for s, members in enumerate(slots):
            due_ms = start_ms + second * 1000 + s * (1000 // SLOTS)
            delay = due_ms / 1000 - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            at = datetime.fromtimestamp(due_ms / 1000, UTC).isoformat()
            counted = stats.counts(due_ms / 1000)
            if counted:
                stats.late_ms.append(time.time() * 1000 - due_ms)
            for k in members:
                lat, lng = spots[k]
                message = {
                    "type": "courier.location",
                    "id": due_ms,
                    "lat": lat + second * 9e-6,
                    "lng": lng,
                    "accuracy": 5,
                    "at": at,
                }
                try:
                    await couriers[k].send_str(orjson.dumps(message).decode())
                except (ConnectionError, RuntimeError) as exc:
                    stats.errors.append(f"send: {exc}")
                    continue
                if counted:
                    stats.sent += 1


async def _read_replies(ws: aiohttp.ClientWebSocketResponse, stats: _Stats) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        data = orjson.loads(msg.data)
        if data.get("type") != "reply" or not isinstance(data.get("id"), int):
            continue
        sent_at = data["id"] / 1000
        stats.all_replies += 1
        if not stats.counts(sent_at):
            continue
        stats.replies += 1
        stats.reply_ms.append(time.time() * 1000 - data["id"])
        if not data.get("ok"):
            stats.errors.append(str(data.get("error")))


async def _read_positions(ws: aiohttp.ClientWebSocketResponse, stats: _Stats) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        data = orjson.loads(msg.data)
        if data.get("type") != "courier.position":
            continue
        at = datetime.fromisoformat(data["data"]["at"]).timestamp()
        stats.all_positions += 1
        if stats.counts(at):
            stats.positions += 1
            stats.resident_ms.append((time.time() - at) * 1000)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    array = np.asarray(values)
    return {
        "p50": round(float(np.percentile(array, 50)), 2),
        "p99": round(float(np.percentile(array, 99)), 2),
        "max": round(float(array.max()), 2),
    }


def _memory_kib(pid: int) -> tuple[int, int]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(status["VmHWM"].split()[0]), int(status["VmRSS"].split()[0])


def render(report: dict[str, Any]) -> str:
    live, rounds = report["live"], report["round"]
    cpu = live["cpu"]

    def pct(d: dict[str, Any]) -> str:
        return f"p50 {d['p50']} ms, p99 {d['p99']} ms, max {d['max']} ms"

    lines = [
        f"bench couriers: {report['couriers']} couriers pinging once a second, "
        f"{report['followers']} followed by a resident, {report['duration_s']} s measured",
        "",
        f"pings answered          {live['pings_answered']} of {live['pings_sent']} sent: "
        f"{live['pings_per_s']}/s ({live['errors']} errors)",
        f"reply latency           {pct(live['reply_latency_ms'])}",
        f"ping to resident        {pct(live['resident_latency_ms'])} "
        f"({live['positions_received']} of ~{live['positions_expected']} positions)",
        f"load generator lateness {pct(live['send_lateness_ms'])}",
        f"server CPU              {cpu['server_cpu_s_per_s']} s/s ({live['workers']} worker(s) per server): "
        f"{cpu['server_cpu_us_per_ping']} µs per ping with its fan-out; "
        f"load generator {cpu['generator_cpu_s_per_s']} s/s ({live['cores']} cores)",
        f"server memory           peak {live['server_peak_rss_mib']} MiB, "
        f"at the end {live['server_rss_end_mib']} MiB ({live['servers']} server process(es))",
        f"connecting              {live['connect_s']} s",
        "",
        f"dispatch round          {rounds['jobs']} jobs x {rounds['couriers']} couriers: median "
        f"{rounds['median_s']} s over {len(rounds['runs'])} runs",
    ]
    for n, r in enumerate(rounds["runs"], 1):
        lines.append(
            f"  run {n}: {r['seconds']} s, {r['routes']} routes, {r['jobs_placed']} jobs placed, "
            f"the event loop held at most {r['loop_held_max_s']} s at a time; {r['laps']}"
        )
    for tail in live.get("server_log_tail", []):
        lines += ["", "server log (tail):", tail]
    lines += ["", "targets:"]
    for name, t in report["targets"].items():
        if t is None:
            lines.append(f"  {name}: not evaluated (needs --round-jobs 1000 --round-couriers 2000)")
        else:
            lines.append(f"  {name}: {t['value']} vs {t['limit']}: {'met' if t['met'] else 'MISSED'}")
    return "\n".join(lines)
