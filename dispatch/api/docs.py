"""The published contracts, served as generated: `/openapi.json` (HTTP), `/asyncapi.json` (the websocket)."""

from __future__ import annotations

from importlib.metadata import version

from aiohttp import web

from dispatch.api.contracts import asyncapi, openapi
from dispatch.api.json import json_response
from dispatch.api.keys import PLAIN_ROUTES, REGISTRY
from dispatch.api.routing import RouteTable

routes = RouteTable("contracts")


@routes.route("GET", "/openapi.json", summary="This document: the HTTP API (OpenAPI 3.1)")
async def openapi_json(request: web.Request) -> web.Response:
    tables: list[RouteTable] = request.app[PLAIN_ROUTES]
    return json_response(openapi(request.app[REGISTRY], tables, version("dispatch")))


@routes.route("GET", "/asyncapi.json", summary="The realtime protocol of /v1/ws (AsyncAPI 3.0)")
async def asyncapi_json(request: web.Request) -> web.Response:
    return json_response(asyncapi(request.app[REGISTRY], version("dispatch")))
