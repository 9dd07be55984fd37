"""Opening hours at the service layer: validate with the pure core, translate its errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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


# Parsed hours per shop, keyed by the row's updated_at: parsing is cheap but runs on every order.
_CACHE: dict[str, tuple[object, OpeningHours]] = {}
_CACHE_MAX = 50_000


def hours_of(shop_id: str, updated_at: object, raw: dict[str, Any]) -> OpeningHours:
    hit = _CACHE.get(shop_id)
    if hit is not None and hit[0] == updated_at:
        return hit[1]
    parsed = parse_opening_hours(raw)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[shop_id] = (updated_at, parsed)
    return parsed


# Opening hours change on whole minutes, so whether a shop is open is the same all through a minute.
_OPEN: dict[tuple[str, object, int], bool] = {}


def open_minute(at: datetime) -> int:
    """The minute `at` falls in, as is_open_at keys it (to work out once for many shops)."""
    return int(at.timestamp() // 60)


def is_open_at(
    shop_id: str, updated_at: object, raw: dict[str, Any], at: datetime, minute: int | None = None
) -> bool:
    key = (shop_id, updated_at, open_minute(at) if minute is None else minute)
    known = _OPEN.get(key)
    if known is None:
        if len(_OPEN) >= _CACHE_MAX:
            _OPEN.clear()
        known = _OPEN[key] = hours_of(shop_id, updated_at, raw).is_open(at)
    return known
