"""Opening hours at the service layer: validate with the pure core, translate its errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from dispatch.core.errors import CoreValidationError
from dispatch.core.hours import OpeningHours, parse_opening_hours
from dispatch.errors import ValidationFailed, field_error

ALWAYS_OPEN: dict[str, Any] = {
    "tz": "UTC",
    "weekly": {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
}


def validated_hours(obj: dict[str, Any] | None) -> dict[str, Any]:
    if obj is None:
        return ALWAYS_OPEN
    try:
        parse_opening_hours(obj)
    except CoreValidationError as exc:
        raise ValidationFailed(
            f"opening_hours is not valid: {exc.message}",
            details=[field_error(["opening_hours", *exc.path], exc.message, "invalid_hours")],
        ) from None
    return obj


# Parsed hours per shop, keyed by the stored document's text: parsing is cheap but runs on every order, and
# the text, unlike the row's updated_at (the node's clock, which a test or a replay may hold still), differs
# whenever the hours do.
_CACHE: dict[str, tuple[str, OpeningHours]] = {}
_CACHE_MAX = 50_000


def hours_of(shop_id: str, text: str) -> OpeningHours:
    """The shop's parsed hours from their stored text (`opening_hours::text`): the text is cheaper to
    read than the jsonb document, and decoded only when it changed."""
    hit = _CACHE.get(shop_id)
    if hit is not None and hit[0] == text:
        return hit[1]
    parsed = parse_opening_hours(orjson.loads(text))
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[shop_id] = (text, parsed)
    return parsed


# Opening hours change on whole minutes, so whether a shop is open is the same all through a minute.
_OPEN: dict[tuple[str, str, int], bool] = {}


def open_minute(at: datetime) -> int:
    """The minute `at` falls in, as is_open_at keys it (to work out once for many shops)."""
    return int(at.timestamp() // 60)


def is_open_at(shop_id: str, text: str, at: datetime, minute: int | None = None) -> bool:
    key = (shop_id, text, open_minute(at) if minute is None else minute)
    known = _OPEN.get(key)
    if known is None:
        if len(_OPEN) >= _CACHE_MAX:
            _OPEN.clear()
        known = _OPEN[key] = hours_of(shop_id, text).is_open(at)
    return known
