"""JSON in and out of aiohttp: orjson responses, and request bodies parsed into pydantic models.

Validation failures become one 422 listing every bad field with its path; malformed JSON is a 400; bodies
over the limit are a 413 before they are read whole, bodies slower than `DISPATCH_BODY_TIMEOUT` a 408.
Text anywhere in a body may not contain NUL (PostgreSQL cannot store it): a 422 naming each such field.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from dispatch.api.keys import SETTINGS
from dispatch.errors import BadRequest, PayloadTooLarge, RequestTimeout, ValidationFailed, field_error

M = TypeVar("M", bound=BaseModel)


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps(data, default=_default)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def validation_details(exc: ValidationError, prefix: list[str | int] | None = None) -> list[Any]:
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        path: list[str | int] = [*(prefix or []), *err["loc"]]
        details.append(field_error(path, err["msg"], err["type"]))
    return details


async def read_json(request: web.Request) -> Any:
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes", details={"limit": limit})
    timeout = request.app[SETTINGS].body_timeout_s
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()  # aiohttp enforces client_max_size while streaming
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout:g} s", details={"timeout_s": timeout}
        ) from None
    if not raw:
        raise BadRequest("request body is empty; a JSON object is expected", code="empty_body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="malformed_json") from None


def validate(model: type[M], data: Any, prefix: list[str | int] | None = None) -> M:
    nul = nul_paths(data)
    if nul:
        details = [
            field_error(
                [*(prefix or []), *path], "text may not contain NUL characters (\\u0000)", "nul_character"
            )
            for path in nul
        ]
        raise ValidationFailed(f"{len(details)} field(s) contain a NUL character", details=details)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = validation_details(exc, prefix)
        raise ValidationFailed(f"{len(details)} field(s) are not valid", details=details) from None


_NUL_IN_JSON = b"\\u0000"  # how orjson writes a NUL inside a string


def _has_nul(value: Any) -> bool:
    try:
        return _NUL_IN_JSON in orjson.dumps(value)  # C speed: a 1 MiB body in about a millisecond
    except TypeError:
        return True  # not JSON data: let the walk decide


def nul_paths(data: Any, limit: int = 20) -> list[list[str | int]]:
    """Paths of the strings (keys included) holding a NUL in parsed JSON, up to `limit`. Iterative (JSON
    may nest deeper than Python's recursion limit), and only into containers that hold a NUL."""
    if not _has_nul(data):
        return []
    if isinstance(data, str):
        return [[]] if "\x00" in data else []
    found: list[list[str | int]] = []
    stack: list[tuple[Any, list[str | int]]] = [(data, [])] if isinstance(data, dict | list) else []
    while stack and len(found) < limit:
        container, path = stack.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in items:
            if (isinstance(key, str) and "\x00" in key) or (isinstance(item, str) and "\x00" in item):
                found.append([*path, key])
            elif isinstance(item, dict | list) and _has_nul(item):
                stack.append((item, [*path, key]))
    return sorted(found[:limit], key=str)
