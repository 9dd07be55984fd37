"""This node's timer loop. Timers are rows in PostgreSQL (offer deadlines on jobs); every node polls and
claims due ones with SKIP LOCKED, so each fires exactly once and a restart loses none."""

from __future__ import annotations

import asyncio
import logging

from dispatch.logs import Throttle
from dispatch.services import jobs
from dispatch.services.context import Services
from dispatch.translate import translate

log = logging.getLogger(__name__)


async def run_timers(svc: Services) -> None:
    outage = Throttle(5.0)
    while True:
        try:
            fired = await jobs.expire_due(svc)
            if fired:
                log.info("offer deadlines fired", extra={"count": fired})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if translate(exc) is None:
                log.exception("timer round failed")
            elif outage.ready():  # PostgreSQL away: one line now and then, the loop goes on
                log.warning("timer round failed: %s: %s", type(exc).__name__, exc)
        await svc.clock.sleep(svc.settings.timer_poll_s)
