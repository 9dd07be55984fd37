"""How the node's dependencies and fleet are doing: what /readyz and /metrics report."""

from __future__ import annotations

import asyncio

from dispatch.metrics import Metrics
from dispatch.services.context import Services
from dispatch.translate import translate

READY_TIMEOUT_S = 2.0


async def problems(svc: Services) -> dict[str, str]:
    """Each unreachable dependency, and why (empty: ready)."""
    found: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await svc.pool.fetchval("SELECT 1")
    except Exception as exc:  # any failure means "not ready"; say which and why
        found["postgres"] = f"{type(exc).__name__}: {exc}"[:300] or "timeout"
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await svc.redis.ping()
    except Exception as exc:
        found["redis"] = f"{type(exc).__name__}: {exc}"[:300] or "timeout"
    return found


FLEET_EVERY_S = 5.0  # a scrape refreshes the fleet's counts at most this often (a query and a Redis count)


async def gauges(svc: Services, metrics: Metrics) -> None:
    """The pool's size, and couriers on shift, busy (with a live route) and stale, as this node sees them."""
    metrics.pool_size.set(svc.pool.get_size())
    metrics.pool_idle.set(svc.pool.get_idle_size())
    loop = asyncio.get_running_loop()
    if loop.time() - metrics.fleet_counted_at < FLEET_EVERY_S:
        return
    metrics.fleet_counted_at = loop.time()
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            fleet = await svc.pool.fetchrow(
                """SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM routes r WHERE r.courier_id = c.id
                                                         AND r.state IN ('offered', 'active'))) AS busy,
                          coalesce(array_agg(c.id), '{}') AS ids
                   FROM couriers c WHERE c.on_shift AND c.active"""
            )
            assert fleet is not None
            stale = await svc.live.count_silent(fleet["ids"], svc.clock.now(), svc.settings.courier_stale_s)
    except Exception as exc:
        if translate(exc) is None:
            raise
        return  # a dependency is down: the gauges keep their last values
    metrics.couriers.labels("on_shift").set(len(fleet["ids"]))
    metrics.couriers.labels("busy").set(fleet["busy"])
    metrics.couriers.labels("stale").set(stale)
