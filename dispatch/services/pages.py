"""Cursor pagination (keyset): a page is the rows after the last one seen, in a fixed order, so pages stay
right while rows are added, and a page costs the same however deep it is.

A cursor is opaque to clients: the last row's (created_at, id), base64. A cursor that does not decode is a
422 on the `cursor` parameter, never a 500.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from dispatch.errors import ValidationFailed, field_error


@dataclass(frozen=True)
class After:
    created_at: datetime
    id: str


def encode(row: asyncpg.Record | dict[str, Any]) -> str:
    raw = f"{row['created_at'].isoformat()}|{row['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None) -> After | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, ident = raw.partition("|")
        after = After(datetime.fromisoformat(at), ident)
        if after.created_at.utcoffset() is None or not ident:
            raise ValueError(raw)
        return after
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed(
            "cursor is not one this server gave",
            details=[field_error(["cursor"], "unknown cursor", "cursor")],
        ) from None


def page(rows: list[asyncpg.Record], limit: int) -> tuple[list[asyncpg.Record], str | None]:
    """The page (`limit` rows; the query fetched one more to know) and the cursor of the next one."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode(rows[-1])
    return rows, None
