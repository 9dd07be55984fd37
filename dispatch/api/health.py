"""Operations endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web

from dispatch import views
from dispatch.api.json import json_response
from dispatch.api.keys import CLOCK, METRICS, POOL, REDIS, SERVICES, STARTUP, WEBSOCKETS
from dispatch.api.routing import RouteTable
from dispatch.clock import describe
from dispatch.errors import ServiceUnavailable
from dispatch.translate import translate

routes = RouteTable("operations")
READY_TIMEOUT_S = 2.0


@routes.route("GET", "/healthz", summary="The process is alive", output=views.Status)
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.route(
    "GET", "/readyz", summary="PostgreSQL and Redis are reachable", output=views.Status, statuses=(503,)
)
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


@routes.route("GET", "/metrics", summary="Prometheus metrics (text format)", content_type="text/plain")
async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    pool = request.app.get(POOL)
    if pool is not None:
        m.pool_size.set(pool.get_size())
        m.pool_idle.set(pool.get_idle_size())
    if request.app[STARTUP].ready.is_set():
        await _fleet_gauges(request.app)
    m.websockets.set(len(request.app[WEBSOCKETS]))
    return web.Response(body=m.render(), content_type="text/plain", charset="utf-8")


@routes.route(
    "GET",
    "/v1/clock",
    summary="The server's clock: now, and its speed, start and epoch if scaled",
    output=views.Clock,
)
async def clock(request: web.Request) -> web.Response:
    return json_response(describe(request.app[CLOCK]))


FLEET_EVERY_S = 5.0  # a scrape refreshes the fleet's counts at most this often (they cost two queries)


async def _fleet_gauges(app: web.Application) -> None:
    """Couriers on shift, busy (with a live route) and stale, as this node sees them now."""
    loop, metrics = asyncio.get_running_loop(), app[METRICS]
    if loop.time() - metrics.fleet_counted_at < FLEET_EVERY_S:
        return
    metrics.fleet_counted_at = loop.time()
    svc = app[SERVICES]
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            rows = await svc.pool.fetch(
                """SELECT c.id, EXISTS (SELECT 1 FROM routes r WHERE r.courier_id = c.id
                                        AND r.state IN ('offered', 'active')) AS busy
                   FROM couriers c WHERE c.on_shift AND c.active"""
            )
            positions = await svc.live.positions(r["id"] for r in rows)
    except Exception as exc:
        if translate(exc) is None:
            raise
        return  # a dependency is down: the gauges keep their last values
    now, stale_s = svc.clock.now(), svc.settings.courier_stale_s
    gauge = app[METRICS].couriers
    gauge.labels("on_shift").set(len(rows))
    gauge.labels("busy").set(sum(1 for r in rows if r["busy"]))
    gauge.labels("stale").set(sum(1 for r in rows if positions.silent(r["id"], now, stale_s)))
