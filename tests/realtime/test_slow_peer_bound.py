"""A peer that stops reading holds a bounded number of unsent bytes: past the bound it is cut off with 1013,
and the link is dropped if it does not take even its close frame. A real socket that never reads, on a real
server."""

from __future__ import annotations

import asyncio
import base64
import os
import socket

import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestServer

import websocket.connection as connection_module
from websocket.connection import Connection, close_frame, text_frame

LIMIT = 64 * 1024
MESSAGE = b'{"type":"courier.position","data":{"lat":51.5,"lng":-0.12,"pad":"' + b"x" * 900 + b'"}}'


def test_frames_carry_their_length_as_rfc_6455_says() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"x" * 70_000)[:10] == b"\x81\x7f" + (70_000).to_bytes(8, "big")
    assert close_frame(1013, b"later") == b"\x88\x07\x03\xf5later"
    assert len(close_frame(1013, b"x" * 500)) == 2 + 125  # a control frame's payload is at most 125 bytes


async def test_a_peer_that_stops_reading_is_cut_off_at_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "CLOSE_GRACE_S", 0.5)
    await _stop_reading_and_be_cut_off()


def test_the_same_on_uvloop_as_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """`dispatch serve` runs on uvloop, whose transports are not asyncio's classes."""
    monkeypatch.setattr(connection_module, "CLOSE_GRACE_S", 0.5)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_stop_reading_and_be_cut_off())


async def _stop_reading_and_be_cut_off() -> None:
    outcome: dict[str, object] = {}
    done, ended = asyncio.Event(), asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        assert sock is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # the kernel holds little for it
        conn = Connection(ws, "res_1", request.transport, buffer_limit=LIMIT)
        sent = 0
        while conn.send(MESSAGE):
            sent += 1
            if sent % 50 == 0:
                await asyncio.sleep(0)  # let the loop write what the kernel takes
            if sent > 100_000:
                break
        outcome.update(sent=sent, cut_off=conn.cut_off, closed=conn.closed.is_set())
        outcome["refused_after"] = conn.send(MESSAGE)
        done.set()
        try:
            async for _ in ws:  # until the link is dropped
                pass
        finally:
            ended.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with TestServer(app) as server:
        peer = socket.socket()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        peer.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        peer.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        try:
            await asyncio.wait_for(done.wait(), 10)
            # Never read: everything the server accepted sits in its buffer or the two kernels'.
            sent = outcome["sent"]
            assert isinstance(sent, int)
            assert outcome["cut_off"] is True
            assert outcome["closed"] is True
            assert outcome["refused_after"] is False
            kernels = 4 * 1024 * 1024  # generous: both sockets' buffers, as the kernel sizes them
            assert sent * len(MESSAGE) <= LIMIT + kernels
            # The close frame cannot reach it behind the backlog: the link is dropped after the grace,
            # while the peer still reads nothing.
            await asyncio.wait_for(ended.wait(), 5)
            peer.setblocking(False)
            loop = asyncio.get_running_loop()
            received = 0
            async with asyncio.timeout(10):
                while True:
                    try:
                        chunk = await loop.sock_recv(peer, 65536)
                    except ConnectionResetError:
                        break
                    if not chunk:
                        break
                    received += len(chunk)
            assert received < sent * (len(MESSAGE) + 4) + 1024
        finally:
            peer.close()
