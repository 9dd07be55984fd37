"""`dispatch serve`'s HTTP server: aiohttp's, with what a server on the open internet needs on top.

- The listening sockets are bound before anything starts, so a port in use is one clear `StartupError`.
- A request's headers must arrive within `DISPATCH_HEADER_TIMEOUT` seconds of its first byte (or of the
  connection, for the first request); past it a slow client gets a 408 and is disconnected. The body has
  `DISPATCH_BODY_TIMEOUT` (enforced where it is read, `dispatch.api.json.read_json`).
- At most `DISPATCH_MAX_CONNECTIONS` connections: one more gets a 503 and is closed at once.
- Malformed HTTP (bad bytes in a header, a request line over 8,190 bytes, not HTTP at all) gets the JSON
  error shape, is counted in /metrics under the route "malformed", and is logged in one line at most every
  few seconds, never with a traceback.
- SIGTERM or SIGINT stops it gracefully, as aiohttp's `run_app` does: stop accepting, close websockets with
  1001, let in-flight requests finish within `DISPATCH_SHUTDOWN_GRACE`, then close the app's resources. A
  worker of `--workers` does the same when its parent is gone.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import re
import signal
import socket
from typing import Any, cast

import orjson
import uvloop
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong

from dispatch.api.json import json_response
from dispatch.api.keys import METRICS, STARTUP
from dispatch.config import Settings
from dispatch.errors import BadRequest, DispatchError, ServiceUnavailable, StartupError
from dispatch.logs import Throttle

log = logging.getLogger("dispatch.http")
KEEPALIVE_S = 75.0  # an idle keep-alive connection is closed after this long (aiohttp's run_app default)
BACKLOG = 512
REFUSED_LINGER_S = 1.0  # a connection over the limit gets this long to read its 503 before it is closed
MALFORMED_LOG_EVERY_S = 10.0
ORPHAN_CHECK_S = 1.0  # how often a worker of --workers looks for its parent
# Objects allocated (net) between two young collections. CPython's 700 suits scripts; a server allocates
# thousands of short-lived objects a request, so at 700 the collector runs hundreds of times a second and
# promotes live request state into older generations, whose passes then walk the whole heap.
GC_YOUNG_THRESHOLD = 20_000


def serve(app: web.Application, settings: Settings) -> None:
    """Serve `app` until SIGTERM or SIGINT, on a uvloop event loop."""
    sockets = bind(settings.host, settings.port, reuse_port=settings.reuse_port)
    loop = uvloop.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_serve(app, settings, sockets))
    finally:
        for sock in sockets:
            sock.close()
        _cancel_remaining(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


def bind(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Listening-ready sockets for every address of `host`; StartupError if the port is taken. With
    `reuse_port`, other processes of ours may bind it too (the workers of `--workers`)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}: {exc.strerror}", code="bad_host") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does on Unix
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is in use (another server is listening on it); stop it, or choose "
                "another port with --port or DISPATCH_PORT",
                code="port_in_use",
            ) from None
        raise StartupError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", code="cannot_listen"
        ) from None
    return sockets


async def _serve(app: web.Application, settings: Settings, sockets: list[socket.socket]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = _Runner(app, settings)
    orphaned = None
    if settings.supervisor_pid is not None:
        orphaned = asyncio.create_task(_stop_when_orphaned(settings.supervisor_pid, stop))
    tuning = asyncio.create_task(_tune_collector_when_ready(app))
    try:
        await runner.setup()
        # A restarted worker of `--workers`: its peers serve meanwhile, so it takes no connection (to answer
        # 503) before it can serve them.
        if settings.listen_when_ready and not await _first(app[STARTUP].ready.wait(), stop.wait()):
            return
        for sock in sockets:
            await web.SockSite(runner, sock, backlog=BACKLOG).start()
        await stop.wait()
    finally:
        tuning.cancel()
        if orphaned is not None:
            orphaned.cancel()
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _tune_collector_when_ready(app: web.Application) -> None:
    """Once started, set aside what start-up built (imported modules, the zone and shop indexes: objects
    that live as long as the process) so the collector's full passes no longer walk them, and collect the
    young generation less often. Measured with `bench orders` at 150 orders/s: p99 order-to-offer 72 ms ->
    26-30 ms (full passes held the loop), CPU 3-4% lower."""
    await app[STARTUP].ready.wait()
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def _stop_when_orphaned(parent_pid: int, stop: asyncio.Event) -> None:
    """A worker whose parent is gone (killed with SIGKILL, or by the OOM killer: it could not pass on a
    SIGTERM) stops as if told to: left running it would keep serving on the port, out of anyone's control,
    and a new `dispatch serve` could not take the port back."""
    while os.getppid() == parent_pid:  # noqa: ASYNC110 (the kernel tells no one: look now and then)
        await asyncio.sleep(ORPHAN_CHECK_S)
    log.error("the parent process (pid %d) is gone; stopping", parent_pid)
    stop.set()


async def _first(wanted: Any, other: Any) -> bool:
    """Wait for whichever comes first; whether it was `wanted`."""
    tasks = [asyncio.ensure_future(wanted), asyncio.ensure_future(other)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return tasks[0] in done


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


class _Runner(web.AppRunner):
    def __init__(self, app: web.Application, settings: Settings) -> None:
        super().__init__(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=KEEPALIVE_S,
            shutdown_timeout=settings.shutdown_grace_s,
        )
        self._settings = settings

    async def _make_server(self) -> web.Server:
        # aiohttp's own server runs the app's start-up and gathers the handler args (ours and the app's, in
        # its _kwargs); ours takes them over and makes the protocols.
        plain = await super()._make_server()
        return _Server(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            app=self.app,
            settings=self._settings,
            **plain._kwargs,
        )


class _Server(web.Server):
    """Makes a `_Protocol` per connection and counts the open ones."""

    def __init__(self, handler: Any, *, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(self._handle, **kwargs)
        self._inner = handler
        self.app = app
        self.header_timeout_s = settings.header_timeout_s
        self.max_connections = settings.max_connections
        self.open_connections = 0
        self.malformed_log = Throttle(MALFORMED_LOG_EVERY_S)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        protocol = request.protocol
        if isinstance(protocol, _Protocol):
            protocol.request_started()
        try:
            response: web.StreamResponse = await self._inner(request)
            return response
        finally:
            if isinstance(protocol, _Protocol):
                protocol.request_finished()

    def __call__(self) -> web.RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class _Protocol(web.RequestHandler):
    """aiohttp's request handler with a header timeout, the connection limit and JSON low-level errors."""

    def __init__(self, manager: _Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._owner = manager
        self._counted = False
        self._refused = False
        self._busy = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of a request whose headers have not all arrived

    # --- connections -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        owner = self._owner
        owner.open_connections += 1
        self._counted = True
        if owner.open_connections > owner.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._owner.open_connections -= 1
        self._disarm_header_timer()
        if self._refused:
            return
        super().connection_lost(exc)
        # aiohttp leaves a websocket's response, request and this protocol in a reference cycle (this
        # callback is a bound method of the response); freed by refcounting instead of waiting for the
        # cyclic collector, a closed connection's memory comes back at once.
        self._data_received_cb = None

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        self._refused = True
        error = ServiceUnavailable(
            f"the server has {self._owner.max_connections} connections open (DISPATCH_MAX_CONNECTIONS); "
            "retry shortly",
            code="too_many_connections",
            retry_after=1,
        )
        stream = cast(asyncio.Transport, transport)  # uvloop transports are not asyncio.Transport subclasses
        stream.write(raw_response(503, "Service Unavailable", error))
        if stream.can_write_eof():
            stream.write_eof()
        # Closing with the request unread would reset the connection and lose the 503: linger a moment.
        asyncio.get_running_loop().call_later(REFUSED_LINGER_S, stream.close)

    # --- header timeout --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the request of a refused connection is read and dropped
        if data and not self._busy:
            self._partial = True
            if self._header_timer is None:
                self._arm_header_timer()
        super().data_received(data)

    def request_started(self) -> None:
        self._busy = True
        self._partial = False
        self._disarm_header_timer()

    def request_finished(self) -> None:
        self._busy = False

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._owner.header_timeout_s, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._busy or self.transport is None:
            return
        if self._partial:
            error = DispatchError(
                f"the request's headers did not arrive within {self._owner.header_timeout_s:g} s",
                code="request_timeout",
            )
            self.transport.write(raw_response(408, "Request Timeout", error))
        self.force_close()  # an idle connection is simply closed, as keep-alive timeouts are

    # --- malformed HTTP --------------------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 400:
            error: DispatchError = BadRequest(
                f"the request is not valid HTTP: {_what_was_wrong(exc)}", code="malformed_http"
            )
            self._note_malformed(request, error.message)
        else:  # a failure past the app's middlewares: a bug, logged with its traceback
            self.log_exception("error handling request to %s", request.path, exc_info=exc)
            error = DispatchError("internal error; it has been logged")
            error.status = status
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error")
        response = json_response(error.to_body(), status=status)
        response.force_close()
        return response

    def _note_malformed(self, request: web.BaseRequest, reason: str) -> None:
        metrics = self._owner.app.get(METRICS)
        if metrics is not None:
            metrics.requests.labels("malformed", "-", "400").inc()
        throttle = self._owner.malformed_log
        suppressed = throttle.suppressed
        if throttle.ready():
            more = f" ({suppressed} more since the last line)" if suppressed else ""
            log.info("malformed HTTP from %s: %s%s", request.remote, reason, more)


def _what_was_wrong(exc: BaseException | None) -> str:
    """A reason that never echoes the client's bytes back (nor into the log)."""
    if isinstance(exc, LineTooLong):
        return "a request line or header is too long"
    if isinstance(exc, BadHttpMethod):
        return "not an HTTP request"
    # aiohttp's messages quote the offending bytes after a colon or in quotes: keep what comes before.
    text = str(getattr(exc, "message", "") or "").strip().splitlines()
    reason = re.split(r"[:'\"]", text[0])[0].strip() if text else ""
    return reason[:80] or (type(exc).__name__ if exc is not None else "unreadable request")


def raw_response(status: int, reason: str, error: DispatchError) -> bytes:
    """A whole HTTP/1.1 response with the JSON error shape, for a connection aiohttp is not serving."""
    body = orjson.dumps(error.to_body())
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if error.retry_after is not None:
        head.append(f"Retry-After: {error.retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
