"""JSON in and out of aiohttp: orjson responses, and request bodies parsed into pydantic models.

Validation failures become one 422 listing every bad field with its path; malformed JSON is a 400; bodies
over the limit are a 413 before they are read whole.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from dispatch.api.keys import SETTINGS
from dispatch.errors import BadRequest, PayloadTooLarge, ValidationFailed, field_error

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
    raw = await request.read()  # aiohttp enforces client_max_size while streaming
    if not raw:
        raise BadRequest("request body is empty; a JSON object is expected", code="empty_body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="malformed_json") from None


def validate(model: type[M], data: Any, prefix: list[str | int] | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = validation_details(exc, prefix)
        raise ValidationFailed(f"{len(details)} field(s) are not valid", details=details) from None
