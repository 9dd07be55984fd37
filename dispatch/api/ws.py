"""`/v1/ws`: one websocket per app. Authenticate, then receive events and send commands.

The protocol itself (parsing, replies, rate limits) is in `websocket/protocol.py`; delivery, resume and
fan-out are in `websocket/hub.py`. This edge only authenticates and routes commands to services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from aiohttp import WSCloseCode, WSMsgType, web

from dispatch.api.auth import ensure_known, verify
from dispatch.api.keys import METRICS, REGISTRY, RUNTIME, WEBSOCKETS
from dispatch.api.routing import RouteTable
from dispatch.auth import Principal, bearer_token
from dispatch.errors import DispatchError, ServiceUnavailable, UpgradeRequired, ValidationFailed, field_error
from dispatch.logs import Throttle, new_request_id, request_id
from dispatch.services.ops_feed import RECIPIENT as OPS_RECIPIENT
from dispatch.translate import translate
from websocket.connection import TRY_AGAIN_LATER, Connection
from websocket.errors import ProtocolError, RealtimeError
from websocket.protocol import (
    ClientMessage,
    RateLimiter,
    after_seq_of,
    parse_client_message,
    reply_error,
    reply_ok,
)

log = logging.getLogger(__name__)
routes = RouteTable("realtime")

AUTH_TIMEOUT_S = 5.0
CLOSE_S = 5.0  # at shutdown, how long a websocket's close handshake may take
HEARTBEAT_S = 20.0
MAX_FRAME_BYTES = 1 << 20  # frames above this are refused by aiohttp (close 1009)
RATE_PER_S, BURST = 20.0, 40.0
COMMAND_QUEUE = 256  # commands received and waiting for their turn, per connection
_FREQUENT = frozenset({"ping", "courier.location"})
_outage_log = Throttle(1.0)
POLICY_VIOLATION = WSCloseCode.POLICY_VIOLATION


def _after_seq(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{where} after_seq must be a non-negative integer", code="bad_after_seq")
    return value


def _before_upgrade(request: web.Request) -> tuple[Principal | None, int | None]:
    """What can be refused with a plain HTTP error before the upgrade: a bad `after_seq` (422) and a bad
    token in the Authorization header (401/403). No header: the client authenticates with a message."""
    try:
        after_seq = _after_seq(request.query.get("after_seq"), "the query's")
    except ProtocolError as exc:
        raise ValidationFailed(
            exc.message, details=[field_error(["after_seq"], exc.message, exc.code)]
        ) from None
    header = request.headers.get("Authorization")
    if not header:
        return None, after_seq
    return verify(request.app, bearer_token(header)), after_seq  # its subject: the known_subject middleware


async def _authenticate(
    request: web.Request, ws: web.WebSocketResponse, after_seq: int | None
) -> tuple[Principal | None, int | None]:
    """Who the client is, by its first message, and the seq it resumes after (the query's, or the auth
    message's `after_seq`)."""
    app = request.app
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            while True:
                msg = await ws.receive()
                if msg.type != WSMsgType.TEXT:
                    return None, None
                try:
                    parsed = parse_client_message(msg.data)
                except ProtocolError as exc:
                    await ws.send_json(reply_error(exc.msg_id, exc.code, exc.message, exc.details))
                    continue
                token = parsed.body.get("token")
                if parsed.type != "auth" or not isinstance(token, str):
                    await ws.send_json(
                        reply_error(parsed.id, "auth_required", "send {type: auth, token} first")
                    )
                    continue
                try:
                    resume = _after_seq(parsed.body.get("after_seq"), "auth's")
                except ProtocolError as exc:
                    await ws.send_json(reply_error(parsed.id, exc.code, exc.message))
                    continue
                who = verify(app, token)
                await ensure_known(app, who)
                await ws.send_json(reply_ok(parsed.id, {"role": who.role.value, "subject": who.subject}))
                return who, resume if resume is not None else after_seq
    except TimeoutError:
        await ws.send_json(reply_error(None, "auth_timeout", f"no auth within {AUTH_TIMEOUT_S:g} s"))
        return None, None
    except (DispatchError, ProtocolError) as exc:
        await ws.send_json(reply_error(None, exc.code, exc.message))
        return None, None


@routes.route(
    "GET",
    "/v1/ws",
    summary="The realtime websocket (protocol: /asyncapi.json)",
    status=101,
    statuses=(401, 403, 422, 426),
)
async def websocket_handler(request: web.Request) -> web.StreamResponse:
    # Spread heartbeats: connections opened together would otherwise ping together, every 20 s.
    heartbeat = HEARTBEAT_S * random.uniform(0.8, 1.2)
    # Not compressed: the messages are small JSON, and at a city's rate deflating each costs more CPU than
    # the bytes it saves (the connection writes its frames itself, websocket.connection).
    ws = web.WebSocketResponse(heartbeat=heartbeat, max_msg_size=MAX_FRAME_BYTES, compress=False)
    if not ws.can_prepare(request).ok:
        raise UpgradeRequired(
            "this is the websocket endpoint: open it with a websocket client (protocol: /asyncapi.json)",
            code="websocket_upgrade_required",
        )
    who, after_seq = _before_upgrade(request)
    try:
        await ws.prepare(request)
    except ConnectionResetError:  # aiohttp's ClientConnectionResetError included
        log.info("websocket client left during the handshake")
        return ws
    app = request.app
    if who is None:
        who, after_seq = await _authenticate(request, ws, after_seq)
    if who is None:
        await ws.close(code=POLICY_VIOLATION, message=b"unauthorized")
        return ws
    hub = app[RUNTIME].hub
    # Operators share one stream, the consoles' hints (ops.changed); no event is addressed to an admin.
    conn = Connection(ws, OPS_RECIPIENT if who.is_admin else who.subject, request.transport)
    app[WEBSOCKETS].add(ws)
    commands: asyncio.Queue[ClientMessage] = asyncio.Queue(COMMAND_QUEUE)
    worker = asyncio.create_task(_run_commands(app, conn, who, commands), name=f"ws-commands-{who.subject}")
    try:
        try:
            last_seq = await hub.register(conn, after_seq)
        except Exception as exc:
            error = translate(exc)
            if not isinstance(error, ServiceUnavailable):
                raise
            # Without PostgreSQL the connection cannot know where the client's stream stands.
            conn.send(reply_error(None, error.code, error.message, error.details, error.retry_after))
            await conn.close(TRY_AGAIN_LATER, b"unavailable; reconnect and resume")
            return ws
        hello = {"type": "hello", "role": who.role.value, "subject": who.subject, "last_seq": last_seq}
        if after_seq is not None:
            hello["after_seq"] = conn.last_seq
        conn.send(hello)
        if after_seq is not None:
            await hub.catch_up(conn)
        limiter = RateLimiter(RATE_PER_S, BURST)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                _receive(conn, limiter, commands, msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.send(reply_error(None, "binary_not_supported", "send JSON text frames"))
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        app[WEBSOCKETS].discard(ws)
        await hub.unregister(conn)
        conn.closed.set()
    return ws


def _receive(
    conn: Connection, limiter: RateLimiter, commands: asyncio.Queue[ClientMessage], raw: str
) -> None:
    """Parse and rate-limit a message as it arrives, and queue it for this connection's command worker.

    Counting on arrival, not when a command has run, means a server slowed down by a dependency never
    turns a client that keeps to the rate into a rate-limited one."""
    try:
        msg = parse_client_message(raw)
        limiter.check(time.monotonic(), msg.id)
    except RealtimeError as exc:
        conn.send(reply_error(exc.msg_id, exc.code, exc.message, exc.details, exc.retry_after))
        return
    try:
        commands.put_nowait(msg)
    except asyncio.QueueFull:
        conn.send(
            reply_error(
                msg.id,
                "overloaded",
                f"{COMMAND_QUEUE} commands are waiting on this connection; retry shortly",
                retry_after=1,
            )
        )


async def _run_commands(
    app: web.Application, conn: Connection, who: Principal, commands: asyncio.Queue[ClientMessage]
) -> None:
    """Run a connection's commands one at a time, in the order they arrived."""
    while True:
        msg = await commands.get()
        await _handle(app, conn, who, msg)


async def _handle(app: web.Application, conn: Connection, who: Principal, msg: ClientMessage) -> None:
    """Run one command and reply; log its outcome (with a request id, as HTTP requests are) and count it."""
    started = time.perf_counter()
    registry = app[REGISTRY]
    rid = new_request_id()
    token = request_id.set(rid)
    result = "ok"
    try:
        if msg.type == "resume":
            last = await app[RUNTIME].hub.resume(conn, after_seq_of(msg.body))
            conn.send(reply_ok(msg.id, {"last_seq": last}))
        elif msg.type == "ping":
            conn.send(reply_ok(msg.id, {"pong": True}))
        elif msg.type in registry.commands:
            data = await registry.command(app, who, msg.type, msg.body)
            conn.send(reply_ok(msg.id, data))
        else:
            raise ProtocolError(f"unknown message type {msg.type!r}", code="unknown_type")
    except RealtimeError as exc:
        result = exc.code
        conn.send(reply_error(msg.id, exc.code, exc.message, exc.details, exc.retry_after))
    except Exception as exc:
        error = translate(exc)
        if error is None:
            log.exception("websocket command %s failed", msg.type)
            error = DispatchError("internal error; it has been logged")
        elif isinstance(error, ServiceUnavailable) and _outage_log.ready():
            log.warning("websocket %s: %s", msg.type, error.details or error.message)
        result = error.code
        conn.send(reply_error(msg.id, error.code, error.message, error.details, error.retry_after))
    finally:
        kind = msg.type if msg.type in registry.commands or msg.type in ("resume", "ping") else "other"
        app[METRICS].ws_commands.labels(kind, result).inc()
        # Pings and location fixes come every second from every app: they are counted, logged at debug.
        level = logging.DEBUG if kind in _FREQUENT else logging.INFO
        if log.isEnabledFor(level):
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            extra = {
                "command": kind,
                "result": result,
                "ms": elapsed,
                "subject": who.subject,
                "request_id": rid,
            }
            log.log(level, "ws %s %s", msg.type, result, extra=extra)
        request_id.reset(token)


async def close_all(app: web.Application) -> None:
    sockets = app[WEBSOCKETS]
    log.info("shutting down: closing %d websocket(s)", len(sockets), extra={"websockets": len(sockets)})
    # Closed together, each with a bound: a peer that never answers the close handshake must not hold up
    # the node's shutdown.
    closes = [
        asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down"), CLOSE_S)
        for ws in list(sockets)
    ]
    stuck = [r for r in await asyncio.gather(*closes, return_exceptions=True) if isinstance(r, TimeoutError)]
    if stuck:
        log.warning("shutting down: %d websocket(s) did not close within %.0f s", len(stuck), CLOSE_S)
