"""Event-loop lag: how late a short timer fires. Anything that holds the loop (CPU work, a blocking call)
delays every request and websocket of the node by as much; this makes it visible in /metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dispatch.logs import Throttle

log = logging.getLogger(__name__)
INTERVAL_S = 0.1
WINDOW_S = 10.0
WARN_S = 0.5  # a stall this long is worth a line in the log


async def watch_loop_lag(report: Callable[[float], None]) -> None:
    """Report the worst lateness of the current and previous `WINDOW_S` windows after every tick, so a
    single stall stays visible to a scraper for at least one window."""
    loop = asyncio.get_running_loop()
    warnings = Throttle(WINDOW_S)
    worst, worst_before = 0.0, 0.0
    window_ends = loop.time() + WINDOW_S
    while True:
        before = loop.time()
        await asyncio.sleep(INTERVAL_S)
        now = loop.time()
        lag = max(0.0, now - before - INTERVAL_S)
        if now >= window_ends:
            worst, worst_before, window_ends = 0.0, worst, now + WINDOW_S
        worst = max(worst, lag)
        report(max(worst, worst_before))
        if lag >= WARN_S and warnings.ready():
            log.warning("the event loop was blocked for %.2f s", lag, extra={"lag_s": round(lag, 3)})
