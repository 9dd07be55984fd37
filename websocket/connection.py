"""One client connection: a bounded send queue drained by its own writer task.

Senders never await the socket: they put into the queue. A client that cannot keep up fills its queue and is
disconnected with 1013 (try again later); it reconnects and resumes from its last seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

log = logging.getLogger(__name__)

TRY_AGAIN_LATER = WSCloseCode.TRY_AGAIN_LATER  # 1013
SLOW_CLIENT = TRY_AGAIN_LATER
SEND_TIMEOUT_S = 10.0


class Connection:
    def __init__(self, ws: web.WebSocketResponse, recipient: str, queue_size: int = 256) -> None:
        self.ws = ws
        self.recipient = recipient
        self.last_seq = 0  # the last event seq this connection has been given
        self.delivery = asyncio.Lock()  # orders live delivery against resume/backfill
        # At most `queue_size` messages wait, counting the batch being written: the writer takes what queued
        # up off the queue at once, and a stalled peer must not double what it may hold.
        self._limit = queue_size
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._in_flight = 0
        self._writer: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.cut_off = False

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.recipient}")

    def send(self, message: dict[str, Any] | bytes) -> bool:
        """Queue a message; False (and the client is cut off) when its queue is full."""
        if self.closed.is_set():
            return False
        if self._queue.qsize() + self._in_flight >= self._limit:
            self._cut_off()
            return False
        self._queue.put_nowait(message if isinstance(message, bytes) else orjson.dumps(message))
        return True

    def _cut_off(self) -> None:
        if not self.cut_off:
            self.cut_off = True
            log.warning("websocket client too slow; disconnecting", extra={"recipient": self.recipient})
            asyncio.get_running_loop().create_task(self.close(SLOW_CLIENT, b"too slow; resume later"))

    async def _write_loop(self) -> None:
        try:
            while True:
                batch = [await self._queue.get()]
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                self._in_flight = len(batch)
                # What queued up meanwhile goes out under one timeout, as the UTF-8 bytes it already is.
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    for item in batch:
                        if item is None:
                            return
                        await self.ws.send_frame(item, WSMsgType.TEXT)
                        self._in_flight -= 1
        except (ConnectionError, TimeoutError, RuntimeError):
            # The peer went away or stalled; the reader side notices and unregisters.
            with contextlib.suppress(Exception):
                await self.ws.close(code=SLOW_CLIENT)
        finally:
            self.closed.set()

    async def close(self, code: int = WSCloseCode.OK, message: bytes = b"") -> None:
        self.closed.set()
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=message)
        await self.stop_writer()

    async def stop_writer(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
