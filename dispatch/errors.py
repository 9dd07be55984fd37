"""The one exception hierarchy of the dispatch package: every error a client can see.

    DispatchError               500 internal          (a bug: logged with its traceback, never shown)
    ├── BadRequest              400 bad_request       malformed_json, empty_body, bad_idempotency_key, ...
    ├── Unauthorized            401 unauthorized      missing, malformed, expired or forged token
    ├── Forbidden               403 forbidden         wrong_role, not_your_route, location_not_shared, ...
    ├── NotFound                404 not_found         order_not_found, ... (unknown or malformed id)
    ├── MethodNotAllowed        405 method_not_allowed
    ├── Conflict                409 conflict          already_accepted, no_courier_available, ...
    ├── PayloadTooLarge         413 payload_too_large
    ├── UpgradeRequired         426 websocket_upgrade_required (a plain GET of /v1/ws)
    ├── ValidationFailed        422 validation_failed details: [{"path", "message", "code"}, ...]
    ├── RateLimited             429 rate_limited      (retry_after)
    ├── ServiceUnavailable      503 unavailable       a dependency unreachable, starting (retry_after)
    │   └── OutcomeUnknown      503 outcome_unknown   (dispatch.db) the link broke while committing
    └── StartupError            ---                   printed as `dispatch: error: ...`, never served
        └── MigrationError

Each carries an HTTP `status`, a stable machine `code`, a human `message`, optional `details` and, when a
retry may help, `retry_after` seconds. Both edges (the HTTP middleware and the websocket dispatcher) render
them the same way. Errors of other packages are translated in one table, `dispatch.translate`: the pure
core's `TransitionError` / `CoreValidationError`, geo's `ZoneError`, the realtime layer's `ProtocolError` /
`RateLimited`, asyncpg's and redis's exceptions. Handlers never build error responses by hand.
"""

from __future__ import annotations

from typing import Any


class DispatchError(Exception):
    status = 500
    code = "internal"

    # Seconds after which a retry may succeed (429, 503): the `Retry-After` header over HTTP, and
    # `retry_after` in the error object on both transports. None: retrying will not help by itself.
    retry_after: int | None = None

    def __init__(
        self, message: str, *, code: str | None = None, details: Any = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        if retry_after is not None:
            self.retry_after = retry_after

    def error_object(self) -> dict[str, Any]:
        out = {"code": self.code, "message": self.message, "details": self.details}
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out

    def to_body(self) -> dict[str, Any]:
        return {"error": self.error_object()}


class BadRequest(DispatchError):
    status = 400
    code = "bad_request"


class Unauthorized(DispatchError):
    status = 401
    code = "unauthorized"


class Forbidden(DispatchError):
    status = 403
    code = "forbidden"


class NotFound(DispatchError):
    status = 404
    code = "not_found"


class MethodNotAllowed(DispatchError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(DispatchError):
    """408: the request (its headers or its body) did not arrive in time; the connection is closed."""

    status = 408
    code = "request_timeout"


class Conflict(DispatchError):
    status = 409
    code = "conflict"


class UpgradeRequired(DispatchError):
    status = 426
    code = "upgrade_required"


class PayloadTooLarge(DispatchError):
    status = 413
    code = "payload_too_large"


class ValidationFailed(DispatchError):
    """422. `details` is a list of {"path": [...], "message": ..., "code": ...}, one per bad field."""

    status = 422
    code = "validation_failed"


class RateLimited(DispatchError):
    status = 429
    code = "rate_limited"
    retry_after = 1


class ClientClosedRequest(DispatchError):
    """499 (nginx's convention): the client left before its request was read or answered. Nobody receives
    this answer; it keeps such requests apart from server errors in logs and metrics."""

    status = 499
    code = "client_closed_request"


class ServiceUnavailable(DispatchError):
    """503: PostgreSQL or Redis cannot be reached (or the node is still starting). Nothing was changed,
    or (`code` "outcome_unknown") the change may have committed: retry with the same Idempotency-Key."""

    status = 503
    code = "unavailable"
    retry_after = 1


class StartupError(DispatchError):
    """The server cannot start (data dir locked, migrations out of step, ...). Printed, never served."""

    code = "startup_failed"


class MigrationError(StartupError):
    code = "migration_failed"


def field_error(path: list[str | int], message: str, code: str = "invalid") -> dict[str, Any]:
    return {"path": path, "message": message, "code": code}
