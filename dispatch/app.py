"""The aiohttp application: routes, middlewares, and the resources it owns through cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

import asyncpg
from aiohttp import web

from dispatch.api import admin, apps, docs, health, orders, ws
from dispatch.api import console as console_api
from dispatch.api import couriers as courier_api  # couriers (issue 5)
from dispatch.api import zones as zone_api
from dispatch.api.keys import (
    CLOCK,
    DATABASE_URL,
    METRICS,
    ON_DATABASE,
    ON_FATAL,
    PLAIN_ROUTES,
    REDIS_URL,
    REGISTRY,
    RUNTIME,
    SECRET,
    SETTINGS,
    START_IN_BACKGROUND,
    STARTUP,
    SUBJECTS,
    WEBSOCKETS,
    Runtime,
)
from dispatch.api.middleware import errors, known_subject, observe, until_ready
from dispatch.api.operations import Registry
from dispatch.api.routing import RouteTable
from dispatch.clock import Clock, SystemClock
from dispatch.config import Settings
from dispatch.db import RETRIES as db_retries
from dispatch.db import create_pool
from dispatch.errors import DispatchError, StartupError
from dispatch.events import check_payloads
from dispatch.logs import Throttle
from dispatch.looplag import watch_loop_lag
from dispatch.metrics import Metrics
from dispatch.migrate import migrate
from dispatch.outbox import events_after
from dispatch.redis_link import open_redis
from dispatch.services import zones
from dispatch.services.context import Services
from dispatch.services.dispatching import run_dispatch  # couriers (issue 5)
from dispatch.services.live_restore import Restorer
from dispatch.services.locations import LiveLocations  # couriers (issue 5)
from dispatch.services.ops_feed import FLUSH_S
from dispatch.services.ops_feed import RECIPIENT as OPS_RECIPIENT
from dispatch.services.subjects import KnownSubjects
from dispatch.services.timers import run_timers
from dispatch.services.zone_directory import ZoneDirectory
from dispatch.startup import Deadline, StartupState, wait_for
from dispatch.translate import translate
from websocket.fanout import Fanout
from websocket.hub import Hub

log = logging.getLogger(__name__)
STOP_S = 5.0  # at shutdown, how long a background task may take to stop once cancelled

# Plain routes: what is not an operation (health, metrics, the clock, the websocket upgrade, the contracts,
# the apps' pages and files).
ROUTE_TABLES: list[RouteTable] = [health.routes, ws.routes, docs.routes, apps.routes]


def operations() -> Registry:
    """Every operation of the API, declared once in its module."""
    return Registry(
        zone_api.OPERATIONS,
        admin.OPERATIONS,
        orders.OPERATIONS,
        courier_api.OPERATIONS,
        console_api.OPERATIONS,
    )


async def _node(app: web.Application) -> AsyncIterator[None]:
    """Everything the node owns, started in order by `_start` and closed in reverse."""
    async with contextlib.AsyncExitStack() as stack:
        _background(stack, watch_loop_lag(app[METRICS].loop_lag.set), "loop-lag")
        starting = asyncio.create_task(_start(app, stack), name="startup")
        if not app[START_IN_BACKGROUND]:
            await starting  # library use and tests: serve only once ready, raising what failed
        yield
        if not starting.done():
            starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting


async def _start(app: web.Application, stack: contextlib.AsyncExitStack) -> None:
    settings, state = app[SETTINGS], app[STARTUP]
    deadline = Deadline(settings.startup_timeout_s)
    try:
        await _start_steps(app, stack, deadline, state)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if not app[START_IN_BACKGROUND]:
            raise
        error = exc if isinstance(exc, DispatchError) else StartupError(f"{type(exc).__name__}: {exc}")
        state.failed = error.message
        if not isinstance(exc, DispatchError):
            log.exception("start-up failed")
        log.error("start-up failed: %s", error.message)
        app[ON_FATAL](error.message)
        return
    state.waiting_for = None
    state.ready.set()
    log.info("ready", extra={"port": settings.port})


async def _start_steps(
    app: web.Application, stack: contextlib.AsyncExitStack, deadline: Deadline, state: StartupState
) -> None:
    settings = app[SETTINGS]
    # Zone covering runs in worker processes; they start while the dependencies are awaited.
    workers = zones.zone_workers(settings)
    stack.push_async_callback(workers.close)
    app[RUNTIME].zone_workers = workers
    app[METRICS].zone_changes.set_function(lambda: workers.pending)
    _background(stack, workers.start(), "zone-workers")

    async def open_pool() -> asyncpg.Pool:
        return await create_pool(app[DATABASE_URL], settings.db_pool_min, settings.db_pool_max)

    pool = await wait_for("PostgreSQL", open_pool, deadline, state)
    stack.push_async_callback(pool.close)

    async def apply_migrations() -> None:
        async with pool.acquire() as conn:
            await migrate(conn)

    await wait_for("PostgreSQL", apply_migrations, deadline, state)
    on_database = app[ON_DATABASE]
    if on_database is not None:
        await wait_for("PostgreSQL", lambda: on_database(app[DATABASE_URL]), deadline, state)

    client = open_redis(app[REDIS_URL])
    stack.push_async_callback(client.aclose)
    await wait_for("Redis", client.ping, deadline, state)

    # The node's Redis subscriber and its websocket hub, fed from the outbox in PostgreSQL.
    async def fetch_after(recipient: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        return [e.to_message() for e in await events_after(pool, recipient, after_seq, limit)]

    async def latest_seq(recipient: str) -> int:
        value = await pool.fetchval("SELECT last_seq FROM recipient_seqs WHERE recipient = $1", recipient)
        return int(value or 0)

    async def latest_seqs(recipients: Sequence[str]) -> dict[str, int]:
        rows = await pool.fetch(
            "SELECT recipient, last_seq FROM recipient_seqs WHERE recipient = ANY ($1::text[])", recipients
        )
        return {r["recipient"]: r["last_seq"] for r in rows}

    fanout = Fanout(client)
    hub = Hub(client, fanout, fetch_after, latest_seq, latest_seqs)
    metrics = app[METRICS]
    metrics.count(
        "dispatch_realtime_events",
        "events this node's realtime layer handled: published on Redis, publish_failed (then delivered "
        "locally and by sweeps), publish_dropped (left unpublished while Redis stalled; sweeps deliver "
        "them), backfilled (sent from PostgreSQL)",
        lambda: {
            "published": hub.published,
            "publish_failed": hub.publish_failures,
            "publish_dropped": hub.publish_dropped,
            "backfilled": hub.backfilled,
        },
        "outcome",
    )
    metrics.count(
        "dispatch_transaction_retries",
        "transactions run again because PostgreSQL rolled them back or the link dropped before commit",
        lambda: dict(db_retries),
        "reason",
    )
    await wait_for("Redis", fanout.start, deadline, state)
    stack.push_async_callback(fanout.stop)
    app[RUNTIME].fanout, app[RUNTIME].hub = fanout, hub

    directory = ZoneDirectory(pool, settings.h3_resolution)
    await wait_for("PostgreSQL", directory.load_all, deadline, state)
    # Compile every cell's lookup now, before serving, so the first orders are not the slow ones.
    directory.index.warm()
    app[RUNTIME].zones = directory
    await fanout.subscribe(zones.CHANNEL, directory.on_message)
    _background(stack, directory.resync_forever(), "zone-resync")

    clock = app[CLOCK]
    live = LiveLocations(client, settings.courier_max_speed_m_s, clock)
    await wait_for("Redis", live.start, deadline, state)
    stack.push_async_callback(live.stop)
    fanout.on_reconnect.append(live.redis_returned)
    svc = Services(pool, clock, settings, directory, hub, live, metrics, workers)
    app[RUNTIME].services = svc
    # Shares and plans live in Redis only: put back what PostgreSQL says now, and whenever Redis returns.
    restorer = Restorer(svc)
    live.on_return.append(restorer.request)
    stack.push_async_callback(restorer.stop)
    restorer.request()
    _background(stack, sweep_forever(hub, settings.catchup_s), "outbox-sweep")
    _background(stack, ops_hints_forever(svc, hub), "ops-hints")
    if settings.run_timers:
        _background(stack, run_timers(svc), "timers")
        _background(stack, run_dispatch(svc, live), "dispatch")


def _background(stack: contextlib.AsyncExitStack, work: Coroutine[Any, Any, None], name: str) -> None:
    task = asyncio.create_task(work, name=name)

    async def stop() -> None:
        task.cancel()
        # Bounded: work that does not stop when cancelled must not hold up the node's shutdown; say which.
        done, _ = await asyncio.wait({task}, timeout=STOP_S)
        if not done:
            log.warning("shutting down: background task %s did not stop within %.0f s", name, STOP_S)
        elif not task.cancelled() and task.exception() is not None:
            log.warning("background task %s ended with %r", name, task.exception())

    stack.push_async_callback(stop)


async def sweep_forever(hub: Hub, interval_s: float) -> None:
    """Backfill local connections that fell behind the outbox (a publish lost anywhere)."""
    failures = Throttle(30.0)
    while True:
        await asyncio.sleep(interval_s)
        try:
            behind = await hub.sweep()
        except Exception as exc:
            if translate(exc) is None:
                log.exception("outbox sweep failed")
            elif failures.ready():
                log.warning("outbox sweep skipped: %s", exc)
            continue
        if behind:
            log.info("outbox sweep caught up %d connection(s)", behind)


async def ops_hints_forever(svc: Services, hub: Hub) -> None:
    """Operators' consoles hear what changed on this node, at most every FLUSH_S (a lost hint is harmless:
    consoles read things back, and everything again after a reconnect)."""
    while True:
        await asyncio.sleep(FLUSH_S)
        hint = svc.ops.take()
        if hint is not None:
            await hub.publish_live([(OPS_RECIPIENT, hint)])


def create_app(
    settings: Settings,
    *,
    secret: str,
    database_url: str,
    redis_url: str,
    clock: Clock | None = None,
    start_in_background: bool = False,
    on_database: Callable[[str], Awaitable[None]] | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> web.Application:
    """The node. With `start_in_background` (as `dispatch serve` runs it) the HTTP server answers at once
    and dependencies are awaited behind it (see `dispatch.startup`); `on_fatal` is told if start-up gives
    up. Otherwise the app is served only once ready. `on_database` runs once PostgreSQL is migrated."""
    app = web.Application(
        middlewares=[observe, errors, until_ready, known_subject],
        client_max_size=settings.max_body_bytes,
        # aiohttp rounds timeouts above this to whole seconds, which makes heartbeats fire in bursts.
        handler_args={"timeout_ceil_threshold": 3600},
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app[SECRET] = secret
    app[DATABASE_URL] = database_url
    app[REDIS_URL] = redis_url
    app[METRICS] = Metrics()
    app[WEBSOCKETS] = set[web.WebSocketResponse]()
    app[STARTUP] = StartupState()
    app[RUNTIME] = Runtime()
    app[SUBJECTS] = KnownSubjects()
    app[START_IN_BACKGROUND] = start_in_background
    app[ON_DATABASE] = on_database
    app[ON_FATAL] = on_fatal or (lambda message: None)
    app.cleanup_ctx.append(_node)
    app.on_shutdown.append(ws.close_all)
    registry = operations()
    app[REGISTRY] = registry
    app[PLAIN_ROUTES] = ROUTE_TABLES
    registry.install(app)
    for table in ROUTE_TABLES:
        table.install(app)
    if settings.strict_views:
        check_payloads(True)
    return app
