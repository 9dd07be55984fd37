"""One client connection: messages written straight into its socket's send buffer, bounded in bytes.

Senders never await the socket: `send` frames the message and hands it to the transport, which sends what
the kernel takes now and keeps the rest until the peer reads. At a city's rate a queue and a writer task per
connection cost more than the write itself (two frames a courier ping). A client that cannot keep up lets
its unsent bytes pile up past the bound and is disconnected with 1013 (try again later); it reconnects and
resumes from its last seq. A peer that stops answering altogether is found by the websocket heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import Any, cast

import orjson
from aiohttp import WSCloseCode, web

log = logging.getLogger(__name__)

TRY_AGAIN_LATER = WSCloseCode.TRY_AGAIN_LATER  # 1013
SLOW_CLIENT = TRY_AGAIN_LATER
BUFFER_LIMIT = 1 << 20  # unsent bytes a client may have before it counts as too slow
CLOSE_GRACE_S = 5.0  # a client cut off gets this long to take its close frame before the link is dropped
CLOSE_POLL_S = 0.05

_TEXT = 0x81  # FIN + text: every message is one frame, never compressed (small JSON, sent once each)
_CLOSE = 0x88


def text_frame(payload: bytes) -> bytes:
    """A server-to-client websocket frame (RFC 6455 5.2: servers do not mask) holding one UTF-8 message."""
    size = len(payload)
    if size < 126:
        return bytes((_TEXT, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", _TEXT, 126, size) + payload
    return struct.pack("!BBQ", _TEXT, 127, size) + payload


def close_frame(code: int, reason: bytes) -> bytes:
    """A close frame (RFC 6455 5.5.1): the status code, then up to 123 bytes of reason."""
    payload = struct.pack("!H", code) + reason[:123]
    return bytes((_CLOSE, len(payload))) + payload


class Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        recipient: str,
        transport: asyncio.BaseTransport | None,
        buffer_limit: int = BUFFER_LIMIT,
    ) -> None:
        self.ws = ws
        self.recipient = recipient
        self.last_seq = 0  # the last event seq this connection has been given
        self.delivery = asyncio.Lock()  # orders live delivery against resume/backfill
        # uvloop's transports do the write-transport methods without deriving from asyncio's classes.
        self._transport = cast(asyncio.WriteTransport | None, transport)
        self.buffer_limit = buffer_limit
        self.closed = asyncio.Event()
        self.cut_off = False
        if self._transport is None:
            self.closed.set()  # the peer left before the connection was made

    def send(self, message: dict[str, Any] | bytes) -> bool:
        """Write a message; False when the connection is closed, or when the client is this far behind (it is
        then cut off)."""
        transport = self._transport
        if self.closed.is_set() or transport is None:
            return False
        if self.ws.closed or transport.is_closing():
            self.closed.set()
            return False
        if transport.get_write_buffer_size() > self.buffer_limit:
            self._cut_off()
            return False
        transport.write(text_frame(message if isinstance(message, bytes) else orjson.dumps(message)))
        return True

    def backlogged(self) -> bool:
        """Half its bound waits unread: a catch-up should leave the rest for later, so a resume of thousands
        of events on a slow link comes in bursts instead of cutting the client off (and again on each
        reconnect)."""
        transport = self._transport
        return transport is not None and transport.get_write_buffer_size() > self.buffer_limit // 2

    def _cut_off(self) -> None:
        if not self.cut_off:
            self.cut_off = True
            self.closed.set()
            log.warning("websocket client too slow; disconnecting", extra={"recipient": self.recipient})
            asyncio.get_running_loop().create_task(self._close_slow())

    async def _close_slow(self) -> None:
        """Say 1013 behind what the client has not read yet. A client that reads on takes it and answers
        with its own close frame, and the link ends as a websocket's should; one that has not taken it all
        within the grace is dropped (a graceful close would wait on a stalled peer for ever)."""
        transport = self._transport
        if transport is None:
            return
        transport.write(close_frame(SLOW_CLIENT, b"too slow; resume later"))
        try:
            async with asyncio.timeout(CLOSE_GRACE_S):
                # A transport tells no one when its buffer has gone out: look now and then.
                while not transport.is_closing() or transport.get_write_buffer_size() > 0:  # noqa: ASYNC110
                    await asyncio.sleep(CLOSE_POLL_S)
            return
        except TimeoutError:
            log.info(
                "dropping a client that did not take its close frame", extra={"recipient": self.recipient}
            )
        transport.abort()

    async def close(self, code: int = WSCloseCode.OK, message: bytes = b"") -> None:
        self.closed.set()
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message)
