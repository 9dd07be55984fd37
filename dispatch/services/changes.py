"""A job's decided transition, its order's new state and their events, written in one statement.

The decision holds the order's and the job's row locks, so every row it changes is known before it is
written: the answer and the events are built from those rows, and one statement applies the
compare-and-set update of the job, the order's state and the events (three round trips become one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from dispatch.core.jobs import JobTransition
from dispatch.db import Conn
from dispatch.outbox import Event, NewEvent, appending, event_arguments, numbered


def row_after(row: asyncpg.Record | Mapping[str, Any], **columns: Any) -> dict[str, Any]:
    """`row` with `columns` set, as PostgreSQL will read it back (times in UTC)."""
    after = dict(row.items())
    for name, value in columns.items():
        after[name] = value.astimezone(UTC) if isinstance(value, datetime) else value
    return after


async def apply_transition(
    conn: Conn,
    decision: JobTransition,
    columns: Mapping[str, Any],
    order: Mapping[str, Any],
    events: Sequence[NewEvent],
    at: datetime,
) -> list[Event] | None:
    """Set the job's state (and `columns`) if it still is in one of the decision's states, the order's
    state, total and time as in `order`, and write `events`; or None, and nothing, if the job changed."""
    sets = "".join(f", {name} = ${n + 14}" for n, name in enumerate(columns))
    row = await conn.fetchrow(
        f"""WITH changed AS (
                UPDATE jobs SET state = $5, updated_at = $6{sets}
                WHERE id = $7 AND state = ANY($8::text[]) AND ($9::timestamptz IS NULL OR deadline_at > $9)
                RETURNING 1),
            go AS (SELECT count(*) = 1 AS ok FROM changed),
            order_set AS (
                UPDATE orders o SET state = $10, total_cents = $11, updated_at = $12
                FROM go WHERE go.ok AND o.id = $13),
            {appending(1, gate="JOIN go ON go.ok")}
            SELECT (SELECT ok FROM go) AS ok,
                   ARRAY(SELECT recipient FROM appended) AS recipients,
                   ARRAY(SELECT seq FROM appended) AS seqs""",
        *event_arguments(events, at),
        decision.to_state.value,
        decision.at,
        decision.job_id,
        [s.value for s in decision.from_states],
        decision.deadline_after,
        order["state"],
        order["total_cents"],
        order["updated_at"],
        order["id"],
        *columns.values(),
    )
    assert row is not None
    if not row["ok"]:
        return None
    return numbered(events, row["recipients"], row["seqs"], at)
