"""The process pool for CPU-heavy work (`dispatch.workers.ProcessWorkers`): its processes end with the server,
however the server ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.timing import MS, SECOND

# A server in miniature: a pool whose worker says its pid, kept (as a server keeps it) until the process is
# killed. (Dropped, the pool would shut its worker down by itself, racing the test.)
SERVER = textwrap.dedent(
    """
    import asyncio, os
    from dispatch.workers import ProcessWorkers

    async def main():
        pool = ProcessWorkers(1, 0)
        await pool.start()
        print(await pool.run(os.getpid), flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited and not yet reaped, does not)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_worker_exits_when_the_server_is_killed() -> None:
    """SIGKILL (or the OOM killer) gives the server no chance to stop its pool: the worker, blocked on its
    task queue, lived on for ever (with the forkserver), holding the server's stdout."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert server.stdout is not None
        worker = int(server.stdout.readline())
        assert worker != server.pid and alive(worker)
        server.send_signal(signal.SIGKILL)
        server.wait(10 * SECOND)
        deadline = time.monotonic() + 10 * SECOND
        while alive(worker):
            assert time.monotonic() < deadline, f"worker {worker} outlived its server"
            time.sleep(50 * MS)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of it, on failure
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(10 * SECOND)
