"""The aiohttp application: routes, middlewares, and the resources it owns through cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from dispatch.api import admin, health, orders, ws
from dispatch.api import couriers as courier_api  # couriers (issue 5)
from dispatch.api import zones as zone_api
from dispatch.api.json import json_response
from dispatch.api.keys import (
    CLOCK,
    DATABASE_URL,
    FANOUT,
    HUB,
    METRICS,
    POOL,
    REDIS,
    REDIS_URL,
    SECRET,
    SERVICES,
    SETTINGS,
    WEBSOCKETS,
    ZONES,
)
from dispatch.api.metrics import Metrics
from dispatch.api.middleware import errors, observe
from dispatch.api.routing import RouteTable, openapi_document
from dispatch.clock import Clock, SystemClock
from dispatch.config import Settings
from dispatch.db import create_pool
from dispatch.migrate import migrate
from dispatch.outbox import events_after
from dispatch.services import zones
from dispatch.services.context import Services
from dispatch.services.dispatching import run_dispatch  # couriers (issue 5)
from dispatch.services.locations import LiveLocations  # couriers (issue 5)
from dispatch.services.timers import run_timers
from dispatch.services.zone_directory import ZoneDirectory
from websocket.fanout import Fanout
from websocket.hub import Hub

log = logging.getLogger(__name__)

ROUTE_TABLES: list[RouteTable] = [
    health.routes,
    zone_api.routes,
    admin.routes,
    orders.routes,
    courier_api.routes,  # couriers (issue 5)
    ws.routes,
]


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(app[DATABASE_URL], settings.db_pool_min, settings.db_pool_max)
    async with pool.acquire() as conn:
        await migrate(conn)
    app[POOL] = pool
    yield
    await pool.close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    client = Redis.from_url(app[REDIS_URL], health_check_interval=15)
    app[REDIS] = client
    yield
    await client.aclose()


async def _realtime(app: web.Application) -> AsyncIterator[None]:
    """The node's Redis subscriber and its websocket hub, fed from the outbox in PostgreSQL."""
    pool = app[POOL]

    async def fetch_after(recipient: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        return [e.to_message() for e in await events_after(pool, recipient, after_seq, limit)]

    async def latest_seq(recipient: str) -> int:
        value = await pool.fetchval("SELECT last_seq FROM recipient_seqs WHERE recipient = $1", recipient)
        return int(value or 0)

    fanout = Fanout(app[REDIS])
    app[FANOUT] = fanout
    app[HUB] = Hub(app[REDIS], fanout, fetch_after, latest_seq)
    await fanout.start()
    yield
    await fanout.stop()


async def _zones(app: web.Application) -> AsyncIterator[None]:
    directory = ZoneDirectory(app[POOL], app[SETTINGS].h3_resolution)
    await directory.load_all()
    # Compile every cell's lookup now, before serving, so the first orders are not the slow ones.
    directory.index.warm()
    app[ZONES] = directory
    await app[FANOUT].subscribe(zones.CHANNEL, directory.on_message)
    resync = asyncio.create_task(directory.resync_forever(), name="zone-resync")
    yield
    resync.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await resync


async def _services(app: web.Application) -> AsyncIterator[None]:
    """The service context, and this node's share of the timers (offer deadlines)."""
    svc = Services(app[POOL], app[CLOCK], app[SETTINGS], app[ZONES], app[HUB])
    app[SERVICES] = svc
    # --- couriers (issue 5): live locations in Redis, and the dispatch loop next to the timers ---
    live = LiveLocations(app[REDIS], app[SETTINGS].courier_max_speed_m_s)
    await live.start()
    app[courier_api.LIVE] = live
    loops = []
    if app[SETTINGS].run_timers:
        loops.append(asyncio.create_task(run_timers(svc), name="timers"))
        loops.append(asyncio.create_task(run_dispatch(svc, live), name="dispatch"))
    yield
    for task in loops:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await live.stop()


async def _openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(ROUTE_TABLES, version("dispatch")))


def create_app(
    settings: Settings,
    *,
    secret: str,
    database_url: str,
    redis_url: str,
    clock: Clock | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[observe, errors],
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
    app.cleanup_ctx.append(_postgres)
    app.cleanup_ctx.append(_redis)
    app.cleanup_ctx.append(_realtime)
    app.cleanup_ctx.append(_zones)
    app.cleanup_ctx.append(_services)
    app.on_shutdown.append(ws.close_all)
    for table in ROUTE_TABLES:
        table.install(app)
    app.router.add_get("/openapi.json", _openapi)
    return app
