"""Operations endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from dispatch import views
from dispatch.api.json import json_response
from dispatch.api.keys import CLOCK, METRICS, RUNTIME, STARTUP, WEBSOCKETS
from dispatch.api.routing import RouteTable
from dispatch.clock import describe
from dispatch.errors import ServiceUnavailable
from dispatch.services import health

routes = RouteTable("operations")


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
    problems = await health.problems(request.app[RUNTIME].services)
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
    if request.app[STARTUP].ready.is_set():
        await health.gauges(request.app[RUNTIME].services, m)
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
