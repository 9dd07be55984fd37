"""`dispatch serve --workers N`: N full server processes on one port, kept running by a parent.

The parent owns what must be one per machine: the data dir's lock, the embedded PostgreSQL and Redis (when
their URLs are not given), the generated secret, and the port (it checks it is free, then holds it with
SO_REUSEPORT, so a port in use is still one clear error and nobody else takes it between workers). Each
worker is an ordinary `dispatch serve` given the URLs; it binds the same port with SO_REUSEPORT and the
kernel spreads connections over the workers.
Nothing is shared in a worker's memory that matters: timers and dispatch rounds are claimed in PostgreSQL,
so they run once per interval however many workers (or machines) there are.

A worker that dies is logged and started again (backing off if it keeps dying); one that fails its start-up
(status 2: a dependency never came, a bad setting) stops the whole server with that status. SIGTERM or
SIGINT is passed to every worker, which stops gracefully; the parent then stops the embedded services.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dispatch.config import Settings
from dispatch.errors import StartupError

log = logging.getLogger("dispatch.supervisor")
STARTUP_FAILED = 2  # a worker's exit status when its start-up gave up (dispatch: error: ...)
QUICK_DEATH_S = 10.0  # a worker dying sooner than this after its start counts towards a back-off
MAX_BACKOFF_S = 30.0


@dataclass
class Worker:
    number: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restarts: int = field(default=0)


class Supervisor:
    def __init__(self, argv: Sequence[str], env: Mapping[str, str], count: int, grace_s: float) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.workers = [Worker(n) for n in range(count)]
        self.grace_s = grace_s
        self.stopping = False
        self.failed: int | None = None

    def _start(self, worker: Worker) -> None:
        # A first start listens at once (`/readyz` says what it waits for); a restart, while its peers
        # serve, only once it is ready.
        env = self.env | ({"DISPATCH_LISTEN_WHEN_READY": "true"} if worker.restarts else {})
        worker.proc = subprocess.Popen(self.argv, env=env)
        worker.started_at = time.monotonic()
        log.info(
            "worker %d started (pid %d)", worker.number, worker.proc.pid, extra={"worker": worker.number}
        )

    def run(self) -> int:
        """Start the workers and keep them running until a signal; returns the exit status."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for worker in self.workers:
                self._start(worker)
            while not self.stopping:
                self._reap()
                time.sleep(0.2)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.failed or 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _reap(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            proc = worker.proc
            if proc is None or proc.poll() is None:
                continue
            if proc.returncode == STARTUP_FAILED:
                log.error("worker %d could not start (status 2); stopping", worker.number)
                self.failed, self.stopping = STARTUP_FAILED, True
                return
            quick = now - worker.started_at < QUICK_DEATH_S
            worker.quick_deaths = worker.quick_deaths + 1 if quick else 0
            delay = min(MAX_BACKOFF_S, 0.5 * 2 ** (worker.quick_deaths - 1)) if quick else 0.0
            log.warning(
                "worker %d (pid %d) exited with status %s; starting it again%s",
                worker.number,
                proc.pid,
                proc.returncode,
                f" in {delay:g} s" if delay else "",
                extra={"worker": worker.number, "status": proc.returncode},
            )
            worker.proc = None
            worker.restarts += 1
            if delay:
                time.sleep(delay)
            if not self.stopping:
                self._start(worker)

    def _stop_all(self) -> None:
        running = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + 10
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait(10)
        log.info("all workers stopped")


def worker_env(settings: Settings, database_url: str, redis_url: str) -> dict[str, str]:
    """A worker's environment: this one, plus what the parent owns, and one worker each. The secret is not
    in it: a given one is already in the environment, a generated one is in the data dir for every worker."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCH_WORKERS": "1",
        "DISPATCH_REUSE_PORT": "true",
        "DISPATCH_SUPERVISOR_PID": str(os.getpid()),
        "DISPATCH_HOST": settings.host,
        "DISPATCH_PORT": str(settings.port),
        "DISPATCH_DATA_DIR": str(settings.data_dir),
        "DISPATCH_DEMO": "true" if settings.demo else "false",
    }


def worker_argv() -> list[str]:
    return [sys.executable, "-m", "dispatch", "serve"]


def workers_for(settings: Settings) -> int:
    """`DISPATCH_WORKERS`, or one per core (0: auto)."""
    if settings.workers < 0:
        raise StartupError("DISPATCH_WORKERS must be 0 (one per core) or more")
    return settings.workers or (os.cpu_count() or 1)
