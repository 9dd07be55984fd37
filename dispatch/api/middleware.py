"""Middlewares: request ids, access logs and metrics, the one error shape for every failure, and tokens
whose subject does not exist."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from aiohttp import web
from aiohttp.http_exceptions import PayloadEncodingError

from dispatch.api import apps
from dispatch.api.auth import ensure_known, verify
from dispatch.api.json import json_response
from dispatch.api.keys import METRICS, STARTUP
from dispatch.api.routing import Handler
from dispatch.auth import bearer_token
from dispatch.errors import (
    ClientClosedRequest,
    DispatchError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from dispatch.logs import Throttle, new_request_id, request_id
from dispatch.translate import translate

log = logging.getLogger("dispatch.http")
# During an outage every request fails the same way: say so once a second, not once a request.
_outage_log = Throttle(1.0)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _route_label(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None:
        return "unmatched"
    resource = info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _allowed(request: web.Request, exc: web.HTTPMethodNotAllowed) -> list[str]:
    """The methods of the route the path names. aiohttp merges those of every route whose pattern matches
    (/v1/shops/nearby would also offer PATCH, from /v1/shops/{shop_id}); a fixed path wins over a pattern."""
    exact = {
        route.method
        for resource in request.app.router.resources()
        if resource.canonical == request.path
        for route in resource
    }
    return sorted(exact or exc.allowed_methods)


def _translate_http(request: web.Request, exc: web.HTTPException) -> DispatchError:
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such resource", code="not_found")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = _allowed(request, exc)
        return MethodNotAllowed(f"method not allowed; use {', '.join(allowed)}", details={"allowed": allowed})
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("request body is too large")
    err = DispatchError(exc.reason or "request failed", code=f"http_{exc.status}")
    err.status = exc.status
    return err


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-ID", "")
    rid = incoming if _REQUEST_ID.match(incoming) else new_request_id()
    token = request_id.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = rid
        return response
    except asyncio.CancelledError:
        status = ClientClosedRequest.status  # nobody is waiting for an answer: not a server error
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = _route_label(request)
        metrics = request.app[METRICS]
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency.labels(route).observe(elapsed)
        if route not in ("/healthz", "/metrics"):
            log.info(
                "%s %s %d",
                request.method,
                request.path,
                status,
                extra={"status": status, "ms": round(elapsed * 1000, 2), "route": route},
            )
        request_id.reset(token)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DispatchError as exc:
        return _render(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _render(_translate_http(request, exc))
    except Exception as exc:
        if _client_left(request, exc):
            log.info("client left before the end of %s %s: %s", request.method, request.path, exc)
            return _render(ClientClosedRequest("the client closed the connection"))
        translated = translate(exc)
        if translated is None:
            # A bug: log it with its traceback, but never show it to the client.
            log.exception("unhandled error on %s %s", request.method, request.path)
            return _render(DispatchError("internal error; it has been logged"))
        if isinstance(translated, ServiceUnavailable) and _outage_log.ready():
            log.warning("%s %s: %s", request.method, request.path, translated.details or translated.message)
        return _render(translated)


def _client_left(request: web.Request, exc: Exception) -> bool:
    """Reading the body failed because the client went away (not because a dependency did)."""
    return request.protocol.transport is None and isinstance(
        exc, ConnectionError | PayloadEncodingError | web.RequestPayloadError
    )


def _render(exc: DispatchError) -> web.Response:
    headers = {}
    if isinstance(exc, MethodNotAllowed) and isinstance(exc.details, dict):
        headers["Allow"] = ", ".join(exc.details.get("allowed", []))
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return json_response(exc.to_body(), status=exc.status, headers=headers or None)


# Served while the node waits for its dependencies: they need neither PostgreSQL nor Redis.
WITHOUT_DEPENDENCIES = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/asyncapi.json", "/v1/clock"}
)


@web.middleware
async def until_ready(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before start-up has reached PostgreSQL and Redis, everything but the operations endpoints is a 503."""
    state = request.app[STARTUP]
    if state.ready.is_set() or request.path in WITHOUT_DEPENDENCIES or request.path in apps.PATHS:
        return await handler(request)
    raise ServiceUnavailable(f"the server is {state.describe()}", details={"starting": True}, retry_after=2)


@web.middleware
async def known_subject(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A validly signed token must name a resident, shop or courier that exists: 401 `unknown_subject`
    before any handler runs. Invalid tokens are left to the handler, which says precisely why."""
    header = request.headers.get("Authorization")
    if header and request.path not in WITHOUT_DEPENDENCIES:
        try:
            who = verify(request.app, bearer_token(header))
        except DispatchError:
            pass
        else:
            await ensure_known(request.app, who)
    return await handler(request)
