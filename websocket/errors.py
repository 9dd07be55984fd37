"""The realtime layer's exception hierarchy. Errors a client sees carry a code like HTTP errors do."""

from __future__ import annotations

from typing import Any


class RealtimeError(Exception):
    code = "realtime_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class ProtocolError(RealtimeError):
    """A message the server cannot act on: malformed, unknown type, too large. The connection stays open."""

    code = "bad_message"


class RateLimited(RealtimeError):
    code = "rate_limited"
