"""A recipient's event stream as clients read it over HTTP (the websocket reads it through the hub)."""

from __future__ import annotations

from typing import Any

from dispatch.db import retried
from dispatch.outbox import events_after
from dispatch.services.context import Services


@retried
async def events_of(svc: Services, recipient: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
    return [e.to_message() for e in await events_after(svc.pool, recipient, after_seq, limit)]
