"""The aiohttp application: routes, middlewares, and the resources it owns through cleanup contexts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from importlib.metadata import version

from aiohttp import WSCloseCode, web
from redis.asyncio import Redis

from dispatch.api import admin, health
from dispatch.api.json import json_response
from dispatch.api.keys import (
    CLOCK,
    DATABASE_URL,
    METRICS,
    POOL,
    REDIS,
    REDIS_URL,
    SECRET,
    SETTINGS,
    WEBSOCKETS,
)
from dispatch.api.metrics import Metrics
from dispatch.api.middleware import errors, observe
from dispatch.api.routing import RouteTable, openapi_document
from dispatch.clock import Clock, SystemClock
from dispatch.config import Settings
from dispatch.db import create_pool
from dispatch.migrate import migrate

log = logging.getLogger(__name__)

ROUTE_TABLES: list[RouteTable] = [health.routes, admin.routes]


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


async def _close_websockets(app: web.Application) -> None:
    sockets = app[WEBSOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


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
    app = web.Application(middlewares=[observe, errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app[SECRET] = secret
    app[DATABASE_URL] = database_url
    app[REDIS_URL] = redis_url
    app[METRICS] = Metrics()
    app[WEBSOCKETS] = set[web.WebSocketResponse]()
    app.cleanup_ctx.append(_postgres)
    app.cleanup_ctx.append(_redis)
    app.on_shutdown.append(_close_websockets)
    for table in ROUTE_TABLES:
        table.install(app)
    app.router.add_get("/openapi.json", _openapi)
    return app
