"""An order's writes in one statement: its stock, the order, its jobs, their events and its Idempotency-Key.

A placement is decided in Python (the split, the timing, the warning) and every row it writes is known
before it is written, so the write is a single statement and its own transaction: the stock lines are
locked in (shop, sku) order and checked, and only if every line still has the stock (and the key was not
taken meanwhile) does anything change. All or nothing, as the transaction of old, with the writes in one
round trip instead of six (BEGIN, order, stock, jobs, events, COMMIT).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dispatch.db import Conn, committing
from dispatch.outbox import Event, NewEvent, appending, event_arguments, numbered
from dispatch.services.offers import StockKey, job_arrays, new_jobs_from

NewRow = dict[str, Any]  # a row as PostgreSQL will hold it, built before it is written


def order_row(
    order_id: str, resident_id: str, fields: Mapping[str, Any], state: str, total: int, now: datetime
) -> NewRow:
    """The order's row: every column, as `SELECT *` would read it back."""
    at = now.astimezone(UTC)
    return {
        "id": order_id,
        "resident_id": resident_id,
        "state": state,
        "total_cents": total,
        "created_at": at,
        "updated_at": at,
        "delivery_code": None,
        "allow_proximity": False,
        **fields,
    }


@dataclass(frozen=True)
class Claim:
    """The Idempotency-Key to take with the order, and the answer to keep under it."""

    key: str
    request_hash: str
    response: dict[str, Any]


@dataclass(frozen=True)
class Written:
    events: list[Event]


class Short:
    """Not written: a line's stock moved since it was read (or its item left the catalogue)."""


class KeyTaken:
    """Not written: a request with the same Idempotency-Key committed first."""


_EVENTS = 1  # $1..$4: the events (see `appending`)
_WRITE = f"""
WITH wanted AS (SELECT * FROM unnest($5::text[], $6::text[], $7::int[]) AS w(shop_id, sku, qty)),
     held AS (SELECT i.shop_id, i.sku, i.stock, w.qty
              FROM catalogue_items i JOIN wanted w ON w.shop_id = i.shop_id AND w.sku = i.sku
              ORDER BY i.shop_id, i.sku
              FOR UPDATE OF i),
     stocked AS (SELECT count(*) = cardinality($5::text[]) AS ok FROM held WHERE stock >= qty),
     claim AS (INSERT INTO idempotency_keys (subject, key, request_hash, status, response, created_at)
               SELECT $9::text, $21::text, $22::text, 201, $23::jsonb, $12::timestamptz
               FROM stocked WHERE ok AND $21::text IS NOT NULL
               ON CONFLICT DO NOTHING RETURNING true AS taken),
     go AS (SELECT s.ok AND ($21::text IS NULL OR EXISTS (SELECT FROM claim)) AS ok FROM stocked s),
     reserved AS (UPDATE catalogue_items c SET stock = c.stock - h.qty
                  FROM held h, go WHERE go.ok AND c.shop_id = h.shop_id AND c.sku = h.sku RETURNING 1),
     placed AS (INSERT INTO orders (id, resident_id, state, fulfilment, drop_lat, drop_lng, slot_start,
                                    slot_end, note, items, created_at, updated_at, total_cents, warning)
                SELECT $8::text, $9::text, $10::text, $11::text, $13::float8, $14::float8, $15::timestamptz,
                       $16::timestamptz, $17::text, $18::jsonb, $12, $12, $19::int, $20::jsonb
                FROM go WHERE go.ok RETURNING 1),
     jobs_in AS (INSERT INTO jobs (id, order_id, shop_id, state, lines, offered_at, deadline_at,
                                   accepted_at, prep_minutes, ready_at, created_at, updated_at)
                 SELECT t.id, $8::text, t.shop_id, t.state, t.lines::jsonb, $12, t.deadline_at, t.accepted_at,
                        t.prep, t.ready_at, $12, $12
                 FROM {new_jobs_from(24)}, go
                 WHERE go.ok RETURNING 1),
     {appending(_EVENTS, gate="JOIN go ON go.ok")}
SELECT (SELECT ok FROM stocked) AS stocked,
       (SELECT ok FROM go) AS written,
       ARRAY(SELECT recipient FROM appended) AS recipients,
       ARRAY(SELECT seq FROM appended) AS seqs
"""


async def write_placement(
    conn: Conn,
    order: NewRow,
    jobs: Sequence[NewRow],
    reserve: Mapping[StockKey, int],
    events: Sequence[NewEvent],
    claim: Claim | None,
) -> Written | Short | KeyTaken:
    """Write the placement, or nothing. Not in a transaction of the caller's: the statement is its own,
    so a link lost while it runs leaves the outcome unknown (503 `outcome_unknown`, never run again)."""
    at = order["created_at"]
    keys = sorted(reserve)
    with committing(
        "PostgreSQL went away while the order was being written; it may or may not have been placed: "
        "retry with the same Idempotency-Key, or list your orders"
    ):
        row = await conn.fetchrow(
            _WRITE,
            *event_arguments(events, at),
            [k[0] for k in keys],
            [k[1] for k in keys],
            [reserve[k] for k in keys],
            order["id"],
            order["resident_id"],
            order["state"],
            order["fulfilment"],
            at,
            order["drop_lat"],
            order["drop_lng"],
            order["slot_start"],
            order["slot_end"],
            order["note"],
            order["items"],
            order["total_cents"],
            order["warning"],
            None if claim is None else claim.key,
            None if claim is None else claim.request_hash,
            None if claim is None else claim.response,
            *job_arrays(jobs),
        )
    assert row is not None
    if not row["stocked"]:
        return Short()
    if not row["written"]:
        return KeyTaken()
    return Written(numbered(events, row["recipients"], row["seqs"], at))
