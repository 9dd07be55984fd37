"""Path and query parameters, validated with the same error shape as bodies."""

from __future__ import annotations

import math

from aiohttp import web

from dispatch.errors import NotFound, ValidationFailed, field_error
from dispatch.ids import is_valid_id


def path_id(request: web.Request, name: str, kind: str) -> str:
    """An id from the path. A malformed id names nothing, so it is a 404 like an unknown one."""
    value = request.match_info[name]
    if not is_valid_id(value, kind):
        raise NotFound(f"no {kind} with id {value!r}", code=f"{kind}_not_found")
    return value


def query_float(request: web.Request, name: str, lo: float, hi: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        raise ValidationFailed(
            f"query parameter {name} is required",
            details=[field_error([name], "required", "missing")],
        )
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValidationFailed(
            f"query parameter {name} must be a finite number",
            details=[field_error([name], f"not a finite number: {raw[:40]!r}", "float_parsing")],
        )
    if not lo <= value <= hi:
        raise ValidationFailed(
            f"query parameter {name} must be between {lo} and {hi}",
            details=[field_error([name], f"{value} is out of range [{lo}, {hi}]", "out_of_range")],
        )
    return value


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(
            f"query parameter {name} must be an integer",
            details=[field_error([name], f"not an integer: {raw[:40]!r}", "int_parsing")],
        ) from None
    if not lo <= value <= hi:
        raise ValidationFailed(
            f"query parameter {name} must be between {lo} and {hi}",
            details=[field_error([name], f"{value} is out of range [{lo}, {hi}]", "out_of_range")],
        )
    return value


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ValidationFailed(
            f"query parameter {name} must be one of {', '.join(choices)}",
            details=[field_error([name], f"unknown value {raw[:40]!r}", "enum")],
        )
    return raw
