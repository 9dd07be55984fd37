"""Start-up that waits for its dependencies, as a service started beside its database must.

Each step that needs PostgreSQL or Redis is retried with backoff while the dependency is unreachable, one
log line per attempt, until one deadline shared by all steps (`DISPATCH_STARTUP_TIMEOUT`). Meanwhile the
HTTP server already answers: `/healthz` 200, `/readyz` 503 saying what it waits for, everything else 503
`unavailable` with Retry-After. Past the deadline start-up fails with one clear `StartupError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from dispatch.errors import ServiceUnavailable, StartupError
from dispatch.translate import is_unreachable

log = logging.getLogger("dispatch.startup")

T = TypeVar("T")
FIRST_PAUSE_S = 0.25
MAX_PAUSE_S = 5.0


@dataclass
class StartupState:
    """What the node is doing before it is ready (read by /readyz and the middleware)."""

    ready: asyncio.Event = field(default_factory=asyncio.Event)
    waiting_for: str | None = "PostgreSQL"
    last_error: str | None = None
    failed: str | None = None

    def describe(self) -> str:
        if self.failed:
            return f"start-up failed: {self.failed}"
        text = f"starting: waiting for {self.waiting_for or 'start-up'}"
        return f"{text} ({self.last_error})" if self.last_error else text


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = asyncio.get_running_loop().time() + seconds

    def remaining(self) -> float:
        return self._at - asyncio.get_running_loop().time()


async def wait_for(what: str, step: Callable[[], Awaitable[T]], deadline: Deadline, state: StartupState) -> T:
    """Run `step` until it succeeds, retrying while `what` is unreachable; StartupError past the deadline.
    Any other error (a wrong password, a failing migration) fails at once."""
    state.waiting_for = what
    pause = FIRST_PAUSE_S
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await step()
        except Exception as exc:
            if not (is_unreachable(exc) or isinstance(exc, ServiceUnavailable)):
                raise
            reason = f"{type(exc).__name__}: {exc}"[:300]
            state.last_error = reason
            remaining = deadline.remaining()
            if remaining <= 0:
                raise StartupError(
                    f"{what} was not reachable within {deadline.seconds:g} s (DISPATCH_STARTUP_TIMEOUT); "
                    f"last error: {reason}",
                    code="dependency_unreachable",
                ) from None
            log.warning(
                "waiting for %s (attempt %d, %.0f s left): %s",
                what,
                attempt,
                remaining,
                reason,
                extra={"dependency": what, "attempt": attempt},
            )
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, MAX_PAUSE_S)
            continue
        if attempt > 1:
            log.info("%s is reachable (after %d attempts)", what, attempt)
        state.last_error = None
        return result
