"""The events outbox: events are rows written in the transaction of the change that caused them.

Each recipient (a shop, courier or resident id) has its own gapless `seq`. Publishing on Redis after commit
is only the fast path; a client that missed anything resumes from PostgreSQL with `events_after`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from dispatch.db import Conn

CHANNEL_PREFIX = "dispatch:events:"


@dataclass(frozen=True)
class NewEvent:
    recipient: str
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Event:
    recipient: str
    seq: int
    type: str
    data: dict[str, Any]
    at: datetime

    def to_message(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "at": self.at.isoformat(), "data": self.data}


async def append_events(conn: Conn, events: Sequence[NewEvent], at: datetime) -> list[Event]:
    """Number and insert `events` inside the caller's transaction. Two statements, however many events."""
    if not events:
        return []
    counts = Counter(e.recipient for e in events)
    recipients = sorted(counts)  # a fixed lock order, so concurrent writers never deadlock
    rows = await conn.fetch(
        """INSERT INTO recipient_seqs AS s (recipient, last_seq)
           SELECT r, n FROM unnest($1::text[], $2::bigint[]) AS t(r, n) ORDER BY r
           ON CONFLICT (recipient) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq
           RETURNING recipient, last_seq""",
        recipients,
        [counts[r] for r in recipients],
    )
    next_seq = {r["recipient"]: r["last_seq"] - counts[r["recipient"]] + 1 for r in rows}
    out: list[Event] = []
    for e in events:
        seq = next_seq[e.recipient]
        next_seq[e.recipient] = seq + 1
        out.append(Event(e.recipient, seq, e.type, e.data, at))
    # jsonb travels as text here: asyncpg's array codec does not use the connection's jsonb codec.
    await conn.execute(
        """INSERT INTO events (recipient, seq, type, payload, created_at)
           SELECT r, s, t, p::jsonb, $5
           FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS u(r, s, t, p)""",
        [e.recipient for e in out],
        [e.seq for e in out],
        [e.type for e in out],
        [orjson.dumps(e.data).decode() for e in out],
        at,
    )
    return out


async def events_after(
    conn: Conn | asyncpg.Pool, recipient: str, after_seq: int, limit: int = 500
) -> list[Event]:
    rows = await conn.fetch(
        """SELECT seq, type, payload, created_at FROM events
           WHERE recipient = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
        recipient,
        after_seq,
        limit,
    )
    return [Event(recipient, r["seq"], r["type"], r["payload"], r["created_at"]) for r in rows]


def encode_for_channel(event: Event) -> bytes:
    return orjson.dumps({"recipient": event.recipient, **event.to_message()})
