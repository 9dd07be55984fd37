"""This node's timer loop. Timers are rows in PostgreSQL (offer deadlines on jobs); every node polls and
claims due ones with SKIP LOCKED, so each fires exactly once and a restart loses none."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from dispatch.services import jobs
from dispatch.services.context import Services
from dispatch.translate import translate

log = logging.getLogger(__name__)


async def run_timers(svc: Services) -> None:
    while True:
        try:
            fired = await jobs.expire_due(svc)
            if fired:
                log.info("offer deadlines fired", extra={"count": fired})
        except asyncio.CancelledError:
            raise
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("timer round failed: %s", exc)
        except Exception as exc:
            # An outage as the translation table knows it (asyncpg's broken pooled connections, a commit
            # whose outcome is unknown) is a line in the log; anything else is a bug.
            if translate(exc) is None:
                log.exception("timer round failed")
            else:
                log.warning("timer round failed: %s: %s", type(exc).__name__, exc)
        await svc.clock.sleep(svc.settings.timer_poll_s)
