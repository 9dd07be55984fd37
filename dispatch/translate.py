"""Foreign errors into `DispatchError`: the one table both edges (the HTTP middleware and the websocket
dispatcher) and the transaction retry use.

| raised by                                            | meaning                       | becomes             |
|------------------------------------------------------|-------------------------------|---------------------|
| asyncpg deadlock (40P01), serialization (40001)      | rolled back; may be run again | retried, then 503   |
| OSError, TimeoutError; asyncpg connection (08xxx),   | PostgreSQL or Redis cannot be | 503 `unavailable`   |
| shutdown (57P0x), too many connections, read-only,   | reached right now             | with Retry-After    |
| closed or broken connection; redis ConnectionError...|                               |                     |
| asyncpg unique / foreign key / check / not-null      | a constraint caught bad input | 409 / 422           |
| violation; text PostgreSQL cannot store (NUL)        | (the edge should have first)  |                     |
| core TransitionError / CoreValidationError           | the state or input forbids it | 409 / 422 with path |
| anything else                                        | a bug                         | None: logged, 500   |
"""

from __future__ import annotations

import asyncpg
from redis import exceptions as redis_errors

from dispatch.core.errors import CoreValidationError, TransitionError
from dispatch.errors import Conflict, DispatchError, ServiceUnavailable, ValidationFailed, field_error

# The transaction did not happen; running it again is safe.
_ROLLED_BACK = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

_PG_UNREACHABLE = (
    asyncpg.PostgresConnectionError,  # 08xxx, ConnectionDoesNotExistError included
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.ReadOnlySQLTransactionError,  # 25006: a failover left us on a replica
)
_REDIS_UNREACHABLE = (
    redis_errors.ConnectionError,  # BusyLoadingError and MaxConnectionsError included
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
)


def is_rolled_back(exc: BaseException) -> bool:
    """A deadlock victim or serialization failure: PostgreSQL rolled the transaction back."""
    return isinstance(exc, _ROLLED_BACK)


def is_unreachable(exc: BaseException) -> bool:
    """PostgreSQL or Redis could not be reached, or the link to it broke."""
    if isinstance(exc, (OSError, TimeoutError, *_PG_UNREACHABLE, *_REDIS_UNREACHABLE)):
        return True
    # A pooled connection that PostgreSQL dropped while it sat idle can be handed out before asyncpg has seen
    # the socket close: its first query then fails with InternalClientError ("cannot switch to state ...").
    # The pool discards it when it comes back (its reset fails), so a retry gets a fresh connection.
    if isinstance(exc, asyncpg.InternalClientError):
        return True
    # asyncpg raises a plain InterfaceError for "connection is closed"; its subclasses (DataError for a bad
    # argument, ...) are programming errors.
    return type(exc) is asyncpg.InterfaceError


def dependency_of(exc: BaseException) -> str:
    if isinstance(exc, redis_errors.RedisError):
        return "redis"
    if isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError)):
        return "postgres"
    return "postgres or redis"


def unavailable(exc: BaseException) -> ServiceUnavailable:
    which = dependency_of(exc)
    name = {"postgres": "PostgreSQL", "redis": "Redis"}.get(which, "a dependency")
    return ServiceUnavailable(
        f"{name} is unavailable right now; nothing was changed, retry shortly",
        details={"dependency": which, "reason": f"{type(exc).__name__}: {exc}"[:200]},
    )


def translate(exc: BaseException) -> DispatchError | None:
    """The client-facing error for `exc`, or None when it is a bug (the edge logs it and answers 500)."""
    if isinstance(exc, DispatchError):
        return exc
    if is_unreachable(exc) or is_rolled_back(exc):
        return unavailable(exc)
    if isinstance(exc, TransitionError):
        return Conflict(exc.message, code=exc.code, details=exc.details)
    if isinstance(exc, CoreValidationError):
        return ValidationFailed(exc.message, details=[field_error(list(exc.path), exc.message)])
    if isinstance(exc, asyncpg.UniqueViolationError):
        return Conflict("that already exists", code="already_exists", details=_constraint(exc))
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return ValidationFailed(
            "refers to something that does not exist", code="unknown_reference", details=_constraint(exc)
        )
    if isinstance(exc, asyncpg.CheckViolationError):
        return ValidationFailed("a value is out of its allowed range", details=_constraint(exc))
    if isinstance(exc, asyncpg.NotNullViolationError):
        column = getattr(exc, "column_name", None)
        return ValidationFailed(f"{column or 'a required value'} may not be null", details={"column": column})
    if isinstance(exc, asyncpg.CharacterNotInRepertoireError | asyncpg.UntranslatableCharacterError):
        return ValidationFailed("text holds a character PostgreSQL cannot store (NUL?)", code="bad_text")
    return None


def _constraint(exc: asyncpg.PostgresError) -> dict[str, object]:
    return {"constraint": getattr(exc, "constraint_name", None)}
