"""PostgreSQL access: the pool, one transaction at a time, and the bounded retry of transient failures.

A service decision is one `transaction(pool)`. Its failures fall in four kinds (see `dispatch.translate`):
- rolled back by PostgreSQL (deadlock victim, serialization failure), or the link lost *before* COMMIT was
  sent: nothing happened, so `@retried` runs the decision again, a few times with jitter, then answers 503;
- no answer in time (no free connection within ACQUIRE_TIMEOUT_S, a statement unanswered for
  COMMAND_TIMEOUT_S): the connection is dropped, so PostgreSQL rolls the transaction back, and the client
  gets 503 at once (`NotAnswering`): running it again would only wait again, holding the request longer;
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
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import asyncpg
import orjson
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from dispatch.errors import DispatchError, ServiceUnavailable
from dispatch.translate import dependency_of, is_rolled_back, is_unreachable, translate, unavailable

log = logging.getLogger(__name__)

Pool = asyncpg.Pool
# A plain connection or one borrowed from a pool: both run queries the same way.
Conn = asyncpg.Connection | PoolConnectionProxy

CONNECT_TIMEOUT_S = 5.0  # a partitioned host must not hold a request for asyncpg's default minute
# A PostgreSQL that stops answering without refusing (a paused or partitioned host, a failover in progress)
# must cost a request a 503 within seconds, not hold it for as long as the outage lasts. Our statements take
# milliseconds; these bounds leave room for a loaded machine. A statement that needs longer says so itself.
COMMAND_TIMEOUT_S = 5.0  # one statement
# Waiting for a free connection (connecting a new one included). Under overload requests queue here while
# PostgreSQL answers well; past this they get 503 rather than wait on: their clients have given up by then.
ACQUIRE_TIMEOUT_S = 10.0
# Once a statement has had no answer, PostgreSQL is taken as silent for a while: requests meanwhile wait only
# briefly for a connection, so a request's few reads (its token's subject, the fleet snapshot, its decision)
# answer 503 in about a second instead of each waiting out the full bound in turn. Only a silent statement or
# connection attempt says so: a long wait for a free connection is as likely our own overload.
SILENT_S = 5.0
SILENT_ACQUIRE_S = 0.5
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


class BoundedPool(asyncpg.Pool):  # generic in the stubs only, so not subscripted
    """asyncpg's pool, whose acquire (that of `fetch`, `execute`, ... included) waits at most
    `acquire_bound()` unless told otherwise: asyncpg's own default is to wait for ever."""

    _silent_until = 0.0  # monotonic

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, connect=self._connect, **kwargs)

    async def _connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(*args, **kwargs)
        except TimeoutError:  # a host that does not answer (one that refuses fails at once)
            self.went_silent()
            raise

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext[asyncpg.Record]:
        return super().acquire(timeout=self.acquire_bound() if timeout is None else timeout)

    def acquire_bound(self) -> float:
        return SILENT_ACQUIRE_S if self.silent() else ACQUIRE_TIMEOUT_S

    def silent(self) -> bool:
        return time.monotonic() < self._silent_until

    # The pool's own one-statement shortcuts take their connection as `connection()` does, with its bounds.
    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        async with connection(self) as conn:
            return await conn.execute(query, *args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        async with connection(self) as conn:
            return await conn.fetch(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        async with connection(self) as conn:
            return await conn.fetchrow(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        async with connection(self) as conn:
            return await conn.fetchval(query, *args, **kwargs)

    def went_silent(self) -> None:
        """A statement or a connection attempt had no answer: wait only briefly for connections for the next
        SILENT_S seconds."""
        self._silent_until = time.monotonic() + SILENT_S


async def create_pool(url: str, min_size: int, max_size: int) -> Pool:
    try:
        return await BoundedPool(
            url,
            min_size=min_size,
            max_size=max_size,
            max_queries=50_000,  # asyncpg.create_pool's defaults
            max_inactive_connection_lifetime=300.0,
            init=_init_connection,
            reset=_keep_session,
            loop=None,
            connection_class=asyncpg.Connection,
            record_class=asyncpg.Record,
            command_timeout=COMMAND_TIMEOUT_S,
            timeout=CONNECT_TIMEOUT_S,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc


class OutcomeUnknown(ServiceUnavailable):
    """The link to PostgreSQL broke while COMMIT was in flight: the change may or may not have happened."""

    code = "outcome_unknown"


class NotAnswering(ServiceUnavailable):
    """No connection came free in time, or PostgreSQL did not answer: nothing was changed."""


@contextlib.asynccontextmanager
async def connection(pool: Pool) -> AsyncIterator[PoolConnectionProxy]:
    """A pooled connection (for reads, or a statement that is its own transaction), with the bounds above: no
    connection within ACQUIRE_TIMEOUT_S or a statement unanswered is `NotAnswering`, and a link that failed
    or went silent is closed rather than handed back to be waited on again."""
    bounded = pool if isinstance(pool, BoundedPool) else None
    silent = bounded is not None and bounded.silent()
    bound = bounded.acquire_bound() if bounded else None
    try:
        conn = await pool.acquire(timeout=bound)
    except TimeoutError as exc:
        reason = f"no PostgreSQL connection within {bound or 0:g} s"
        # Unless PostgreSQL is known silent, as likely this node's own load.
        raise _not_answering(_SILENT if silent else _BUSY, reason) from exc
    try:
        yield conn
    except BaseException as exc:
        if isinstance(exc, OutcomeUnknown) or _link_failed(exc):
            _drop(conn)
        timed_out = isinstance(exc, TimeoutError) or isinstance(exc.__cause__, TimeoutError)  # a COMMIT's too
        if bounded and timed_out:
            bounded.went_silent()
        if isinstance(exc, TimeoutError):
            raise _not_answering(
                _SILENT, f"a statement had no answer within {COMMAND_TIMEOUT_S:g} s"
            ) from exc
        raise
    finally:
        await pool.release(conn)


@contextlib.asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[PoolConnectionProxy]:
    """One transaction on a pooled connection, committed when the block ends without an error."""
    async with connection(pool) as conn:
        tx = conn.transaction()
        try:
            await tx.start()
            yield conn
        except BaseException as exc:
            # After a failed or silent link, `connection` closes it, which rolls back too: waiting for a
            # ROLLBACK would wait on that same link.
            if not _link_failed(exc):
                with contextlib.suppress(Exception):  # a closed link has nothing to roll back
                    await tx.rollback()
            raise
        with committing(
            "PostgreSQL went away while this change was being committed; it may or may not have "
            "happened: retry with the same Idempotency-Key, or read the state back"
        ):
            await tx.commit()


def _link_failed(exc: BaseException) -> bool:
    """The link to PostgreSQL broke or went silent (a Redis failure inside a transaction is not that)."""
    return is_unreachable(exc) and dependency_of(exc) != "redis"


def _drop(conn: PoolConnectionProxy) -> None:
    """Close the link at once; the pool connects afresh. Once asyncpg has seen the link close itself, the
    pool has already taken the connection back and there is nothing to close."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


_SILENT = "PostgreSQL is not answering right now"
_BUSY = "this server is busy or PostgreSQL is slow: no database connection came free in time"


def _not_answering(what: str, reason: str) -> NotAnswering:
    return NotAnswering(
        f"{what}; nothing was changed, retry shortly",
        details={"dependency": "postgres", "reason": reason},
    )


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
    if isinstance(exc, TimeoutError):
        return False  # no answer in time: a second wait would only hold the request longer
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
