"""A stalled peer holds at most `queue_size` messages, counting the batch the writer has taken off the queue:
the writer drains what queued up in one go, and that must not let a dead mobile link hold twice the bound."""

from __future__ import annotations

import asyncio
from typing import cast

from aiohttp import WSMsgType, web

from websocket.connection import Connection


class _StalledPeer:
    """A websocket whose peer stopped reading: every frame waits for ever."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.closed_with: int | None = None

    async def send_frame(self, data: bytes, opcode: WSMsgType, compress: int | None = None) -> None:
        self.started.set()
        await asyncio.Event().wait()

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed_with = code
        return True


async def test_the_batch_in_hand_counts_against_the_bound() -> None:
    peer = _StalledPeer()
    conn = Connection(cast(web.WebSocketResponse, peer), "res_1", queue_size=10)
    conn.start()
    try:
        # Six queue up before the writer runs; it takes all six and stalls on the first.
        assert all(conn.send({"seq": n}) for n in range(6))
        await asyncio.wait_for(peer.started.wait(), 5)
        accepted = [conn.send({"seq": 6 + n}) for n in range(10)]
        assert accepted == [True] * 4 + [False] * 6  # 6 in hand + 4 queued = the bound of 10
        assert conn.cut_off
        await asyncio.wait_for(conn.closed.wait(), 5)
        assert peer.closed_with == 1013  # try again later: the client resumes from its last seq
    finally:
        await conn.stop_writer()
