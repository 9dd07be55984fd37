"""Typed application state (aiohttp `web.AppKey`): what the app owns, set up by its cleanup contexts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from dispatch.clock import Clock
from dispatch.config import Settings
from dispatch.services.context import Services
from dispatch.services.subjects import KnownSubjects
from dispatch.services.zone_directory import ZoneDirectory
from dispatch.startup import StartupState
from dispatch.workers import ProcessWorkers
from websocket.fanout import Fanout
from websocket.hub import Hub

if TYPE_CHECKING:
    from dispatch.api.operations import Registry
    from dispatch.api.routing import RouteTable
    from dispatch.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
SECRET = web.AppKey("secret", str)
DATABASE_URL = web.AppKey("database_url", str)
REDIS_URL = web.AppKey("redis_url", str)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
WEBSOCKETS = web.AppKey("websockets", set[web.WebSocketResponse])
SUBJECTS = web.AppKey("subjects", KnownSubjects)
STARTUP = web.AppKey("startup", StartupState)
START_IN_BACKGROUND = web.AppKey("start_in_background", bool)
ON_DATABASE: web.AppKey[Callable[[str], Awaitable[None]] | None] = web.AppKey("on_database")
ON_FATAL: web.AppKey[Callable[[str], None]] = web.AppKey("on_fatal")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
PLAIN_ROUTES: web.AppKey[list[RouteTable]] = web.AppKey("plain_routes")


class Runtime:
    """What start-up builds while the node already answers (/healthz, /readyz, the pages): by then aiohttp
    has started the application, which must not change, so these live here; each is set once, when ready
    (read before that: AttributeError, as a missing key would be)."""

    zone_workers: ProcessWorkers
    fanout: Fanout
    hub: Hub
    zones: ZoneDirectory
    services: Services


RUNTIME = web.AppKey("runtime", Runtime)
