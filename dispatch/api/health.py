"""Operations endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web

from dispatch.api.json import json_response
from dispatch.api.keys import CLOCK, METRICS, POOL, REDIS, STARTUP, WEBSOCKETS
from dispatch.api.routing import RouteTable
from dispatch.clock import describe
from dispatch.errors import ServiceUnavailable

routes = RouteTable("operations")
READY_TIMEOUT_S = 2.0


@routes.route("GET", "/healthz", summary="The process is alive")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.route("GET", "/readyz", summary="PostgreSQL and Redis are reachable", statuses=(503,))
async def readyz(request: web.Request) -> web.Response:
    state = request.app[STARTUP]
    if not state.ready.is_set():
        raise ServiceUnavailable(
            f"not ready: {state.describe()}", code="not_ready", details={"startup": state.describe()}
        )
    problems: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await request.app[POOL].fetchval("SELECT 1")
    except Exception as exc:  # any failure means "not ready"; say which and why
        problems["postgres"] = f"{type(exc).__name__}: {exc}"[:300] or "timeout"
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await request.app[REDIS].ping()
    except Exception as exc:
        problems["redis"] = f"{type(exc).__name__}: {exc}"[:300] or "timeout"
    if problems:
        raise ServiceUnavailable(
            "not ready: " + ", ".join(f"{k} unreachable" for k in problems),
            code="not_ready",
            details=problems,
        )
    return json_response({"status": "ready"})


@routes.route("GET", "/metrics", summary="Prometheus metrics (text format)")
async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    pool = request.app.get(POOL)
    if pool is not None:
        m.pool_size.set(pool.get_size())
        m.pool_idle.set(pool.get_idle_size())
    m.websockets.set(len(request.app[WEBSOCKETS]))
    return web.Response(body=m.render(), content_type="text/plain", charset="utf-8")


@routes.route(
    "GET", "/v1/clock", summary="The server's clock: now, and its speed, start and epoch when scaled"
)
async def clock(request: web.Request) -> web.Response:
    return json_response(describe(request.app[CLOCK]))
