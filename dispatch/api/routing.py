"""Plain routes: the few endpoints that are not operations (health, metrics, the websocket upgrade, the
contracts themselves), declared with what the OpenAPI document needs to describe them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from dispatch.views import View

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    output: type[View] | None = None
    content_type: str = "application/json"
    status: int = 200
    statuses: tuple[int, ...] = ()


class RouteTable:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        output: type[View] | None = None,
        content_type: str = "application/json",
        status: int = 200,
        statuses: tuple[int, ...] = (),
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(method, path, handler, summary, self.tag, output, content_type, status, statuses)
            )
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for e in self.endpoints:
            app.router.add_route(e.method, e.path, e.handler)
