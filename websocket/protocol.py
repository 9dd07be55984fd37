"""The websocket protocol, sans I/O: parsing client messages and building server messages.

Client → server: `{"type": ..., "id": ..., ...}`; `id` (string or integer, optional) is echoed in the reply.
Server → client:
  events   `{"seq": 41, "type": "job.offered", "at": "...", "data": {...}}`
  replies  `{"type": "reply", "id": ..., "ok": true, "data": {...}}`
           `{"type": "reply", "id": ..., "ok": false, "error": {"code", "message", "details"}}`
  control  `{"type": "hello", ...}`, `{"type": "pong", ...}`
Nothing here knows about sockets, the database or the clock: time comes in as a parameter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from websocket.errors import ProtocolError, RateLimited

MAX_MESSAGE_BYTES = 16 * 1024

# Redis channels, one for events and one for live messages, each message a batch of lines. Every node hears
# every batch and delivers the lines of the clients it holds: a commit costs one PUBLISH and each node one
# message to read, however many recipients its events have, and a client connecting or leaving costs Redis
# nothing (no SUBSCRIBE per recipient: a node restarting under ten thousand clients would send as many).
# Events (with seq, stored in the outbox first): lines "recipient<TAB>seq<TAB>message JSON" (`event_batch`).
# Live messages (courier positions, the consoles' hints: no seq, not stored, delivered only to connected
# clients): lines "recipient<TAB>message JSON" (`live_batch`).
EVENTS_CHANNEL = "dispatch:events"
LIVE_CHANNEL = "dispatch:live"


def live_batch(messages: Sequence[tuple[str, bytes]]) -> bytes:
    """One message for LIVE_CHANNEL. Neither part may hold a tab or newline (ids are ours; JSON as orjson
    writes it has none outside strings, where they are escaped)."""
    return b"\n".join(recipient.encode() + b"\t" + message for recipient, message in messages)


def live_lines(batch: bytes) -> Iterator[tuple[str, bytes]]:
    """The (recipient, message) lines of a LIVE_CHANNEL message; a malformed line is skipped."""
    for line in batch.split(b"\n"):
        recipient, tab, message = line.partition(b"\t")
        if tab:
            yield recipient.decode(errors="replace"), message


def event_batch(events: Sequence[tuple[str, int, bytes]], origin: bytes = b"") -> bytes:
    """One message for EVENTS_CHANNEL: (recipient, seq, message JSON) lines, under live_batch's rules.
    With `origin` (the publishing node's id) a first line "from<TAB>origin" says who sent it: `origin_of`
    reads it, and `event_lines` skips it (as nodes of an older version do, a line of two parts)."""
    lines = b"\n".join(
        b"%s\t%d\t%s" % (recipient.encode(), seq, message) for recipient, seq, message in events
    )
    return b"from\t" + origin + b"\n" + lines if origin else lines


def origin_of(batch: bytes) -> bytes | None:
    """The id of the node that published an EVENTS_CHANNEL message, if it said."""
    if not batch.startswith(b"from\t"):
        return None
    end = batch.find(b"\n")
    return batch[5:] if end < 0 else batch[5:end]


def event_lines(batch: bytes) -> Iterator[tuple[str, int, bytes]]:
    """The (recipient, seq, message) lines of an EVENTS_CHANNEL message; a malformed line is skipped."""
    for line in batch.split(b"\n"):
        parts = line.split(b"\t", 2)
        if len(parts) == 3 and parts[1].isdigit():
            yield parts[0].decode(errors="replace"), int(parts[1]), parts[2]


_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+)*$")


@dataclass(frozen=True)
class ClientMessage:
    type: str
    id: str | int | None
    body: dict[str, Any]


def parse_client_message(raw: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> ClientMessage:
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise ProtocolError(
            f"message is {size} bytes; the limit is {max_bytes}",
            code="message_too_large",
            details={"limit": max_bytes},
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"message is not valid JSON: {exc}", code="malformed_json") from None
    if not isinstance(data, dict):
        raise ProtocolError("message must be a JSON object", code="bad_message")
    msg_id = data.get("id")
    if msg_id is not None and (
        isinstance(msg_id, bool)
        or not isinstance(msg_id, (str, int))
        or (isinstance(msg_id, str) and len(msg_id) > 100)
    ):
        raise ProtocolError("id must be a string (up to 100 characters) or an integer", code="bad_id")
    kind = data.get("type")
    if not isinstance(kind, str) or not _TYPE.match(kind) or len(kind) > 64:
        raise ProtocolError(
            "message needs a string 'type' such as 'resume' or 'job.accept'", code="bad_type", msg_id=msg_id
        )
    body = {k: v for k, v in data.items() if k not in ("type", "id")}
    return ClientMessage(kind, msg_id, body)


def reply_ok(msg_id: str | int | None, data: Any = None) -> dict[str, Any]:
    return {"type": "reply", "id": msg_id, "ok": True, "data": data}


def reply_error(
    msg_id: str | int | None, code: str, message: str, details: Any = None, retry_after: int | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "details": details}
    if retry_after is not None:
        error["retry_after"] = retry_after
    return {"type": "reply", "id": msg_id, "ok": False, "error": error}


def after_seq_of(body: dict[str, Any]) -> int:
    value = body.get("after_seq")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError("resume needs after_seq, a non-negative integer", code="bad_after_seq")
    return value


@dataclass
class RateLimiter:
    """Token bucket: `rate` messages per second on average, bursts up to `burst`."""

    rate: float
    burst: float
    _tokens: float = field(default=-1.0)
    _last: float = field(default=math.nan)

    def check(self, now: float, msg_id: str | int | None = None) -> None:
        """Take a token for a message that arrived at `now`, or raise RateLimited (echoing `msg_id`)."""
        if self._tokens < 0:
            self._tokens, self._last = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            raise RateLimited(
                f"more than {self.rate:g} messages per second; slow down",
                details={"rate": self.rate, "burst": self.burst},
                msg_id=msg_id,
            )
        self._tokens -= 1
