"""The realtime layer's exception hierarchy. Errors a client sees carry a code like HTTP errors do."""

from __future__ import annotations

from typing import Any


class RealtimeError(Exception):
    """`msg_id` is the id of the client message it answers, when the message got far enough to have one."""

    code = "realtime_error"
    retry_after: int | None = None

    def __init__(
        self, message: str, *, code: str | None = None, details: Any = None, msg_id: str | int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.msg_id = msg_id


class ProtocolError(RealtimeError):
    """A message the server cannot act on: malformed, unknown type, too large. The connection stays open."""

    code = "bad_message"


class RateLimited(RealtimeError):
    code = "rate_limited"
    retry_after = 1
