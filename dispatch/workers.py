"""A bounded process pool for CPU-heavy pure work (validating and covering delivery zones).

Zone covering can take seconds of CPU; on the event loop it would stall every request and websocket of the
node. Here it runs in worker processes, `processes` at a time, with at most `queue` more waiting; beyond
that a caller gets 503 `unavailable` with Retry-After at once rather than a place in an unbounded queue.

Workers are forked from a forkserver that has imported the work's modules once (`preload`), so a pool
starts in milliseconds and no worker is forked from the threaded server process itself.

A worker exits when the server process is gone, however it went: each holds the reading end of a pipe only
the server writes to, and the end of file a SIGKILL or the OOM killer leaves is its cue. Without it, a
worker (blocked on its task queue, whose both ends it holds) and so the forkserver lived for ever, holding
the server's stdout and stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from dispatch.errors import ServiceUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


def _worker_init(lifeline: Connection) -> None:
    # Ctrl-C reaches the whole process group; the server decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_the_server, args=(lifeline,), daemon=True).start()


def _exit_with_the_server(lifeline: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()  # nothing is ever sent: this returns when the server's end closes
    os._exit(1)


def _ready() -> bool:
    return True


class ProcessWorkers:
    def __init__(self, processes: int, queue: int, preload: Sequence[str] = (), what: str = "jobs") -> None:
        self.processes = processes
        self.limit = processes + queue
        self.what = what
        self._preload = list(preload)
        self._executor: ProcessPoolExecutor | None = None
        self._lifeline: tuple[Connection, Connection] | None = None  # (workers' end, ours)
        self._pending = 0

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished (running or queued)."""
        return self._pending

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("forkserver")
            if self._preload:
                context.set_forkserver_preload(self._preload)  # ignored once the forkserver runs
            if self._lifeline is None:
                self._lifeline = context.Pipe(duplex=False)
            self._executor = ProcessPoolExecutor(
                self.processes, mp_context=context, initializer=_worker_init, initargs=(self._lifeline[0],)
            )
        return self._executor

    async def start(self) -> None:
        """Start the workers now rather than on the first job (the first forkserver takes a second)."""
        try:  # not counted against the limit: it must not turn the first real job away
            pool = self._pool()
            await asyncio.wrap_future(await asyncio.to_thread(pool.submit, _ready))
        except Exception as exc:  # the first job will try again, and say why
            log.warning("could not start the %s workers: %s", self.what, exc)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker process (`fn` and its arguments must pickle); its exceptions are raised
        here. 503 when `limit` jobs are already pending or a worker died."""
        if self._pending >= self.limit:
            raise ServiceUnavailable(
                f"too many {self.what} are in progress on this node; retry shortly",
                details={"reason": f"{self._pending} {self.what} in progress or queued", "limit": self.limit},
                retry_after=1,
            )
        loop = asyncio.get_running_loop()
        pool = self._pool()

        def submit() -> Future[T]:
            try:
                future = pool.submit(fn, *args)
            except BaseException:
                _call_soon(loop, self._finished)
                raise
            # Counted until the worker is done, even if the caller stops waiting: a cancelled request does
            # not free a worker that is still busy with it.
            future.add_done_callback(lambda _: _call_soon(loop, self._finished))
            return future

        self._pending += 1
        try:
            # Submitting may fork a worker, which waits for the forkserver: not on the event loop.
            return await asyncio.wrap_future(await asyncio.to_thread(submit))
        except BrokenProcessPool:
            log.warning("a %s worker process died; starting new ones", self.what)
            if self._executor is pool:
                self._executor = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise ServiceUnavailable(
                f"a {self.what} worker stopped unexpectedly; retry shortly",
                details={"reason": "worker process died"},
                retry_after=1,
            ) from None

    def _finished(self) -> None:
        self._pending -= 1

    async def close(self) -> None:
        """Cancel queued jobs and wait for the running ones (each is bounded) and the workers to exit."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        lifeline, self._lifeline = self._lifeline, None
        for end in lifeline or ():
            end.close()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed first (process exit)
        loop.call_soon_threadsafe(callback)
