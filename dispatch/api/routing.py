"""Routes declared once, with what the OpenAPI document needs to describe them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: dict[str, str] = field(default_factory=dict)  # name -> description
    roles: tuple[str, ...] = ()  # empty: no token needed
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
        body: type[BaseModel] | None = None,
        query: dict[str, str] | None = None,
        roles: tuple[str, ...] = (),
        statuses: tuple[int, ...] = (),
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(method, path, handler, summary, self.tag, body, query or {}, roles, statuses)
            )
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for e in self.endpoints:
            app.router.add_route(e.method, e.path, e.handler)


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}


def openapi_document(tables: list[RouteTable], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    for table in tables:
        for e in table.endpoints:
            op: dict[str, Any] = {"summary": e.summary, "tags": [e.tag], "responses": {}}
            params: list[dict[str, Any]] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _path_params(e.path)
            ]
            params += [
                {"name": n, "in": "query", "required": False, "description": d, "schema": {}}
                for n, d in e.query.items()
            ]
            if params:
                op["parameters"] = params
            if e.body is not None:
                schema = e.body.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[e.body.__name__] = schema
                op["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{e.body.__name__}"}}
                    },
                }
            if e.roles:
                op["security"] = [{"bearer": []}]
                op["description"] = "Roles: " + ", ".join(e.roles)
            op["responses"]["200"] = {"description": "OK"}
            error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            codes = set(e.statuses) | ({401, 403} if e.roles else set())
            if e.body is not None:
                codes |= {400, 413, 422}
            for code in sorted(codes):
                op["responses"][str(code)] = {"description": "Error", "content": error_ref}
            paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Neighbourhood dispatch API", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]
