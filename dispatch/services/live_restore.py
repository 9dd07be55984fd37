"""Who sees which courier, and each courier's cached plan, put back in Redis from PostgreSQL.

Both live in Redis only, written when a route or stop changes. A Redis that restarts empty (or a grant that
failed while it was away) would leave a resident whose order is on its way, or a shop expecting its courier,
without positions until that courier's next change, and pings without ETA checks. PostgreSQL knows who should
see whom: a node restores the lot when it starts and whenever Redis comes back (`LiveLocations.on_return`).

Granting what PostgreSQL says cannot reopen a share that ended meanwhile: its change wrote the tombstone
before committing, and a grant never passes a tombstone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import asyncpg

from dispatch.core.routes import StopTiming
from dispatch.core.stops import LIVE_ROUTES, OPEN_STOPS, RouteState
from dispatch.db import Conn, connection
from dispatch.services.context import Services
from dispatch.services.locations import Grant
from dispatch.services.routes import core_stop, minutes, open_stops, plan_payload
from dispatch.translate import translate

log = logging.getLogger(__name__)
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # PostgreSQL away too: keep trying, less and less often


def shop_share(courier_id: str, stops: Sequence[asyncpg.Record]) -> Grant | None:
    """A shop sees the courier while its pickup is the courier's next stop on an active route."""
    if not stops:
        return None
    first = stops[0]
    if first["kind"] != "pickup" or first["route_state"] != RouteState.ACTIVE or first["shop_id"] is None:
        return None
    return Grant(courier_id, first["id"], first["shop_id"], {"stop_id": first["id"]})


def cached_plan(stops: Sequence[asyncpg.Record]) -> bytes | None:
    """The plan as the last change cached it, from the ETAs it stored (None: some stop has none yet)."""
    if any(r["eta_arrival"] is None or r["eta_service"] is None for r in stops):
        return None
    timings = [
        StopTiming(core_stop(r), minutes(r["eta_arrival"]), minutes(r["eta_service"]), 0.0) for r in stops
    ]
    return plan_payload([r["id"] for r in stops], timings)


async def resident_shares(conn: Conn) -> list[Grant]:
    """Each resident sees the courier carrying its order, from the pickup until the delivery (as the
    courier-location read decides it)."""
    rows = await conn.fetch(
        """SELECT DISTINCT r.courier_id, s.id, s.order_id, o.resident_id
           FROM stops s JOIN routes r ON r.id = s.route_id JOIN orders o ON o.id = s.order_id
           WHERE s.kind = 'dropoff' AND s.state = ANY ($1::text[]) AND r.state = 'active'
             AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = ANY (s.job_ids) AND j.state = 'picked_up')""",
        list(OPEN_STOPS),
    )
    return [Grant(r["courier_id"], r["id"], r["resident_id"], {"order_id": r["order_id"]}) for r in rows]


async def restore(svc: Services) -> tuple[int, int]:
    """Grant every share PostgreSQL says is current and cache every plan; (shares, plans) written."""
    async with connection(svc.pool) as conn:
        couriers = [
            r["courier_id"]
            for r in await conn.fetch(
                "SELECT DISTINCT courier_id FROM routes WHERE state = ANY ($1::text[])", list(LIVE_ROUTES)
            )
        ]
        stops: Mapping[str, Sequence[asyncpg.Record]] = await open_stops(conn, couriers)
        grants = await resident_shares(conn)
    grants += [g for c, rows in stops.items() if (g := shop_share(c, rows)) is not None]
    plans = {c: plan for c, rows in stops.items() if (plan := cached_plan(rows)) is not None}
    await svc.live.grant(grants)
    await svc.live.set_plans(plans, only_missing=True)  # one cached meanwhile is newer than this read
    return len(grants), len(plans)


class Restorer:
    """Runs `restore` once per request, one at a time: requests while one runs make it run once more."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._again = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    def request(self) -> None:
        if self._stopped:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="live-restore")

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        attempt = 0
        while True:
            self._again = False
            try:
                shares, plans = await restore(self.svc)
            except Exception as exc:
                if translate(exc) is None:
                    log.exception("could not restore couriers' live shares")
                    return
                delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                log.warning("could not restore couriers' live shares (%s); again in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                self._again = True
            else:
                attempt = 0
                log.info("restored %d live share(s) and %d courier plan(s) in Redis", shares, plans)
            if not self._again:
                return
