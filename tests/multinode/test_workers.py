"""`dispatch serve --workers 2` as a user runs it: one port, one data dir (the embedded PostgreSQL and Redis
started once, by the parent), each dispatch round run once across the workers, a killed worker started
again, and SIGTERM stopping them all."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from dispatch.bench.stack import free_port, wait_ready
from dispatch.embedded import start_embedded
from tests.foundation.test_process_workers import alive
from tests.multinode.conftest import Node
from tests.timing import SECOND

pytestmark = pytest.mark.slow
ROUND_S = 0.2


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (state 0A), from the kernel's tables."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _listens(pid: int, port: int) -> bool:
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) in wanted for fd in fds.iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return False


class Output:
    """The server's JSON log lines, collected as they come by a thread of their own."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[dict[str, object]] = []
        self.rest: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))
            else:
                self.rest.append(line)

    def messages(self) -> list[str]:
        return [str(entry.get("message")) for entry in list(self.lines)]

    def wait_for(self, pattern: str, timeout: float = 60 * SECOND) -> re.Match[str]:
        """The first line (from the start) whose message matches, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages():
                if found := re.search(pattern, message):
                    return found
            if time.monotonic() > deadline or not self.reader.is_alive():
                raise AssertionError(f"no log line matching {pattern!r}: {self.messages()[-30:]} {self.rest}")
            time.sleep(0.05)

    def worker_pids(self) -> dict[int, int]:
        """Each worker's latest pid, from the parent's lines."""
        return worker_pids(self.messages())


def test_two_workers_share_the_port_and_data_dir_run_rounds_once_and_come_back(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DISPATCH_SECRET")}
    env |= {"DISPATCH_LOG_FORMAT": "json", "DISPATCH_WORKERS": "2", "DISPATCH_ROUND_S": str(ROUND_S)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatch", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Output(proc)
    try:
        out.wait_for(rf"dispatch server on http://127\.0\.0\.1:{port} with 2 workers")
        out.wait_for(r"worker 1 started")
        wait_ready(f"http://127.0.0.1:{port}", proc, 60 * SECOND)
        pids = out.worker_pids()
        assert len(pids) == 2 and proc.pid not in pids.values()
        # Both workers listen on the one port; the parent only holds it.
        deadline = time.monotonic() + 30 * SECOND
        while not all(_listens(pid, port) for pid in pids.values()):
            assert time.monotonic() < deadline, f"not every worker listens on {port}: {pids}"
            time.sleep(0.1)
        assert not _listens(proc.pid, port)
        # The demo was loaded once, whichever worker got there first.
        out.wait_for(r"demo data loaded: 36 shops")

        # A worker that dies is logged and started again, on the same port.
        os.kill(pids[0], signal.SIGKILL)
        out.wait_for(rf"worker 0 \(pid {pids[0]}\) exited with status -9; starting it again")
        deadline = time.monotonic() + 60 * SECOND
        while (new := out.worker_pids()[0]) == pids[0] or not _listens(new, port):
            assert time.monotonic() < deadline, "worker 0 was not started again"
            time.sleep(0.1)
        # It took no connection before it was ready: every new connection finds a ready worker.
        for _ in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5 * SECOND) as ready:
                assert ready.status == 200
        time.sleep(20 * ROUND_S)  # rounds keep coming while both run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60 * SECOND)
        out.reader.join(10 * SECOND)
    # SIGTERM stopped every worker, then the parent, cleanly.
    messages = out.messages()
    assert proc.returncode == 0, (messages[-30:], out.rest)
    assert "all workers stopped" in messages and messages[-1] == "stopped"
    for pid in out.worker_pids().values():
        assert not alive(pid)

    rounds = asyncio.run(_rounds(data_dir))
    assert len(rounds) >= 5, rounds
    # Numbered once each, in order: no due time was claimed twice, by however many workers polled it.
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    # Rounds keep the grid of DISPATCH_ROUND_S intervals from the first: each starts in an interval of its own
    # (one that starts late is followed by one on time, so two starts can be closer than an interval).
    slots = [(r["at"] - rounds[0]["at"]) // timedelta(seconds=ROUND_S) for r in rounds]
    assert all(a < b for a, b in itertools.pairwise(slots)), [r["at"] for r in rounds]


async def _rounds(data_dir: Path) -> list[asyncpg.Record]:
    services = start_embedded(data_dir, None, None, with_redis=False)
    try:
        assert services.database_url is not None
        conn = await asyncpg.connect(services.database_url)
        try:
            return await conn.fetch("SELECT round, node, at FROM dispatch_rounds ORDER BY round")
        finally:
            await conn.close()
    finally:
        services.stop()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _family(pid: int) -> list[int]:
    """`pid`'s descendants: workers, their forkservers and pool processes."""
    out, todo = [], [pid]
    while todo:
        children = _children(todo.pop())
        out += children
        todo += children
    return out


def test_workers_stop_when_their_parent_is_killed(start_nodes: Callable[..., list[Node]]) -> None:
    """A parent killed with SIGKILL (or by the OOM killer) cannot pass SIGTERM on: its workers used to keep
    serving on the port, out of anyone's control, holding the parent's output open for ever."""
    (node,) = start_nodes(1, DISPATCH_WORKERS="2", DISPATCH_LOG_FORMAT="json", DISPATCH_LOG_LEVEL="INFO")
    deadline = time.monotonic() + 30 * SECOND
    while len(workers := worker_pids(_log_messages(node.log))) < 2:
        assert time.monotonic() < deadline, node.log.read_text()[-3000:]
        time.sleep(0.1)
    family = _family(node.proc.pid)
    try:
        assert set(workers.values()) <= set(family)
        node.kill()
        # Every worker, and what it started (its zone pool), stops.
        deadline = time.monotonic() + 30 * SECOND
        while left := [pid for pid in family if alive(pid)]:
            assert time.monotonic() < deadline, (left, node.log.read_text()[-3000:])
            time.sleep(0.1)
        assert "is gone; stopping" in node.log.read_text()
        # The port is free for the next `dispatch serve` (which binds it as this does).
        assert not _listening_inodes(node.port)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", node.port))
    finally:
        for pid in family:  # whatever is left, on failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def worker_pids(messages: list[str]) -> dict[int, int]:
    """Each worker's latest pid, from the parent's "worker N started (pid P)" lines."""
    pids = {}
    for message in messages:
        found = re.fullmatch(r"worker (\d+) started \(pid (\d+)\)", message)
        if found:
            pids[int(found[1])] = int(found[2])
    return pids


def _log_messages(log: Path) -> list[str]:
    """The messages of a JSON log file."""
    lines = log.read_text().splitlines()
    return [str(json.loads(line).get("message")) for line in lines if line.startswith("{")]
