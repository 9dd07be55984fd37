"""The check at placement (`core.admission`) against a per-node snapshot of the fleet and the waiting work.

Reading every on-shift courier (PostgreSQL and Redis) and up to 1,000 waiting jobs, then weighing that
backlog, for each order is what a city's evening peak cannot afford: a node builds the picture at most
every `DISPATCH_ADMISSION_REFRESH_S` wall seconds, outside any order's transaction, one build at a time,
and each order is then weighed against it in O(parts x couriers), taking its couriers in it. Orders placed
on other nodes meanwhile are seen at the next build: the check is advice to the resident (or a refusal of
what no courier could collect), not a reservation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from dispatch.core.admission import UPCOMING_MINUTES, Capacity, Upcoming
from dispatch.db import connection
from dispatch.errors import ServiceUnavailable
from dispatch.services.context import Services
from dispatch.services.dispatching import fleet_now, travel_many_of, waiting_work
from dispatch.services.routes import minutes, service_times, travel_of


@dataclass(frozen=True)
class Snapshot:
    largest: int | None  # the most items any active courier carries (None: no courier at all)
    capacity: Capacity


async def snapshot(svc: Services, now: datetime) -> Snapshot | None:
    """The node's picture, read again when older than `DISPATCH_ADMISSION_REFRESH_S`; None when where the
    couriers are cannot be read (Redis away: orders still go on). Called before the order's transaction:
    the read takes a connection of its own."""
    try:
        return await svc.admission.get(svc.settings.admission_refresh_s, lambda: _read(svc, now))
    except ServiceUnavailable:
        return None


async def _read(svc: Services, now: datetime) -> Snapshot:
    svc.metrics.admission_reads.inc()
    minute = minutes(now)
    async with connection(svc.pool) as conn:
        largest = await conn.fetchval("SELECT max(capacity) FROM couriers WHERE active")
        if largest is None:  # no courier at all: nothing more to read (a server with no fleet stays quick)
            return Snapshot(None, Capacity.build([], [], [], minute, travel_of(svc), service_times(svc)))
        couriers = await fleet_now(conn, svc, svc.live, now)
        upcoming = [
            Upcoming(r["courier_id"], minutes(r["start_at"]), minutes(r["end_at"]), r["capacity"])
            for r in await conn.fetch(
                """SELECT s.courier_id, s.start_at, s.end_at, c.capacity
                   FROM shifts s JOIN couriers c ON c.id = s.courier_id
                   WHERE s.state = 'planned' AND s.end_at > $1 AND c.active
                   ORDER BY s.start_at, s.id LIMIT 1000""",
                now,
            )
        ]
        # No courier now or soon: nothing to weigh the waiting work against.
        soon = couriers or any(u.start <= minute + UPCOMING_MINUTES for u in upcoming)
        ahead = await waiting_work(conn, svc, now) if soon else []
    # O(backlog x fleet): 0.16 s for 1,000 jobs and 2,000 couriers, in a thread so that the loop (pings,
    # other requests; orders take the previous snapshot meanwhile) is not held that long at once.
    capacity = await asyncio.to_thread(
        Capacity.build,
        ahead,
        couriers,
        upcoming,
        minute,
        travel_of(svc),
        service_times(svc),
        travel_many_of(svc),
    )
    return Snapshot(largest, capacity)
