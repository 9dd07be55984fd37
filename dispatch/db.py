"""PostgreSQL access: the pool, one transaction at a time, and the bounded retry of transient failures.

A service decision is one `transaction(pool)`. Its failures fall in three kinds (see `dispatch.translate`):
- rolled back by PostgreSQL (deadlock victim, serialization failure), or the link lost *before* COMMIT was
  sent: nothing happened, so `@retried` runs the decision again, a few times with jitter, then answers 503;
- the link lost *while committing*: the outcome is unknown, so it is never retried here; the client gets
  503 `outcome_unknown` and retries with the same Idempotency-Key (or reads the state back);
- anything else propagates unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import ParamSpec, TypeVar

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from dispatch.errors import DispatchError, ServiceUnavailable
from dispatch.translate import is_rolled_back, is_unreachable, translate, unavailable

log = logging.getLogger(__name__)

Pool = asyncpg.Pool
# A plain connection or one borrowed from a pool: both run queries the same way.
Conn = asyncpg.Connection | PoolConnectionProxy

CONNECT_TIMEOUT_S = 5.0  # a partitioned host must not hold a request for asyncpg's default minute
COMMAND_TIMEOUT_S = 30.0
ATTEMPTS = 3  # runs of a decision whose transaction did not happen, before answering 503
_BACKOFF_S = 0.05  # first pause between attempts; doubled each time, with full jitter

# Transactions run again, by the exception that made them (process-wide; /metrics shows it).
RETRIES: Counter[str] = Counter()

P = ParamSpec("P")
T = TypeVar("T")


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def connect(url: str) -> asyncpg.Connection:
    """A single connection with the same codecs as the pool's (scripts, benchmarks, the CLI)."""
    conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    await _init_connection(conn)
    return conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections keep their session: ours carry no session state (no SET, LISTEN, session
    advisory lock or cursor), so asyncpg's default reset (`SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL;`) would cost a round trip per acquire for nothing. An open transaction is still
    rolled back on release (asyncpg does that before calling this)."""


async def create_pool(url: str, min_size: int, max_size: int) -> Pool:
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=COMMAND_TIMEOUT_S,
            timeout=CONNECT_TIMEOUT_S,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


class OutcomeUnknown(ServiceUnavailable):
    """The link to PostgreSQL broke while COMMIT was in flight: the change may or may not have happened."""

    code = "outcome_unknown"


@contextlib.asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[PoolConnectionProxy]:
    """One transaction on a pooled connection, committed when the block ends without an error."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        except BaseException:
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await tx.rollback()
            raise
        with committing(
            "PostgreSQL went away while this change was being committed; it may or may not have "
            "happened: retry with the same Idempotency-Key, or read the state back"
        ):
            await tx.commit()


@contextlib.contextmanager
def committing(message: str) -> Iterator[None]:
    """Around what commits (a COMMIT, or a statement that is its own transaction): a link lost there
    leaves the outcome unknown, so it becomes OutcomeUnknown (`message`), which is never retried."""
    try:
        yield
    except Exception as exc:
        if is_unreachable(exc):
            raise OutcomeUnknown(message, details={"dependency": "postgres"}) from exc
        raise


def retryable(exc: BaseException) -> bool:
    """The decision did not happen and may simply be run again."""
    if isinstance(exc, DispatchError):
        return False  # OutcomeUnknown included: it may have happened
    return is_rolled_back(exc) or is_unreachable(exc)


def retried(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run a service decision again when its transaction did not happen (see the module docstring).

    Only for functions whose every transaction is inside the attempt: one that commits and then fails
    in a second transaction must not be decorated. The pauses are wall time, not the business clock:
    they wait for PostgreSQL, not for the world."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                if not retryable(exc):
                    raise
                if attempt == ATTEMPTS:
                    raise unavailable(exc) from exc
                RETRIES[type(exc).__name__] += 1
                log.info(
                    "%s: retrying after %s (attempt %d of %d)",
                    fn.__name__,
                    type(exc).__name__,
                    attempt,
                    ATTEMPTS,
                )
                await asyncio.sleep(random.uniform(0, _BACKOFF_S * 2**attempt))
        raise AssertionError("unreachable")

    return run


@contextlib.asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """Constraint violations as our errors (409, 422) here rather than at the edge, for services that want
    them translated before their own handling. Retryable failures pass through for `@retried`."""
    try:
        yield
    except DispatchError:
        raise
    except Exception as exc:
        if retryable(exc):
            raise
        translated = translate(exc)
        if translated is None:
            raise
        raise translated from exc
