"""The events outbox: events are rows written in the transaction of the change that caused them.

Each recipient (a shop, courier or resident id) has its own gapless `seq`. Publishing on Redis after commit
is only the fast path; a client that missed anything resumes from PostgreSQL with `events_after`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from dispatch import events
from dispatch.db import Conn


@dataclass(frozen=True)
class NewEvent:
    """An event to write: its type must be in the catalogue (dispatch/events.py)."""

    recipient: str
    type: str
    data: dict[str, Any]

    def __post_init__(self) -> None:
        events.check(self.type, self.data)


@dataclass(frozen=True)
class Event:
    recipient: str
    seq: int
    type: str
    data: dict[str, Any]
    at: datetime

    def to_message(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "at": self.at.isoformat(), "data": self.data}


def appending(first: int, gate: str = "") -> str:
    """The CTEs that number and insert events, for a statement of the caller's: parameters `$first` to
    `$first+3` are `event_arguments(...)`; the statement selects (recipient, seq) from `appended`.

    Each recipient's counter row is bumped by its number of events (rows locked in recipient order, so
    concurrent writers never deadlock) and the events take the numbers just below the new value. `gate`, a
    join onto the caller's CTEs (`JOIN go ON go.ok`), writes the events only when it matches."""
    r, ty, p, at = (f"${first + n}" for n in range(4))
    return f"""ev_input AS (
               SELECT t.r, t.ty, t.p, t.ord
               FROM unnest({r}::text[], {ty}::text[], {p}::text[]) WITH ORDINALITY AS t(r, ty, p, ord)
                    {gate}),
           ev_counts AS (SELECT r, count(*) AS n FROM ev_input GROUP BY r),
           ev_bumped AS (
               INSERT INTO recipient_seqs AS s (recipient, last_seq)
               SELECT r, n FROM ev_counts ORDER BY r
               ON CONFLICT (recipient) DO UPDATE SET last_seq = s.last_seq + EXCLUDED.last_seq
               RETURNING recipient, last_seq),
           appended AS (
               INSERT INTO events (recipient, seq, type, payload, created_at)
               SELECT i.r, b.last_seq - c.n + row_number() OVER (PARTITION BY i.r ORDER BY i.ord), i.ty,
                      i.p::jsonb, {at}
               FROM ev_input i JOIN ev_bumped b ON b.recipient = i.r JOIN ev_counts c ON c.r = i.r
               RETURNING recipient, seq)"""


def event_arguments(
    events: Sequence[NewEvent], at: datetime
) -> tuple[list[str], list[str], list[str], datetime]:
    """The four parameters of `appending`."""
    return (
        [e.recipient for e in events],
        [e.type for e in events],
        # jsonb travels as text: asyncpg's array codec does not use the connection's jsonb codec.
        [orjson.dumps(e.data).decode() for e in events],
        at,
    )


def numbered(
    events: Sequence[NewEvent], recipients: Sequence[str], seqs: Sequence[int], at: datetime
) -> list[Event]:
    """`events` with the seqs `appended` returned for them (as parallel lists, in any order).

    Within a recipient, seqs follow the events' order (row_number over ord); match them that way rather
    than trusting the order RETURNING happens to use."""
    by_recipient: dict[str, list[int]] = {}
    for recipient, seq in zip(recipients, seqs, strict=True):
        by_recipient.setdefault(recipient, []).append(seq)
    for numbers in by_recipient.values():
        numbers.sort(reverse=True)
    return [Event(e.recipient, by_recipient[e.recipient].pop(), e.type, e.data, at) for e in events]


_APPEND = f"WITH {appending(1)} SELECT recipient, seq FROM appended"


async def append_events(conn: Conn, events: Sequence[NewEvent], at: datetime) -> list[Event]:
    """Number and insert `events` inside the caller's transaction, in one statement however many."""
    if not events:
        return []
    rows = await conn.fetch(_APPEND, *event_arguments(events, at))
    return numbered(events, [r["recipient"] for r in rows], [r["seq"] for r in rows], at)


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
