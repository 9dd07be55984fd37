"""Start-up beside a dependency that is not there yet: wait (live, not ready), then serve; or, past
DISPATCH_STARTUP_TIMEOUT, one clear line and a non-zero exit. The dependencies are really down."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatch.bench.faults import NODE_ENV
from dispatch.bench.stack import ManagedPostgres, ManagedRedis, Node, free_port
from dispatch.migrate import recreate_database
from tests.timing import MS, SECOND

pytestmark = pytest.mark.slow


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[tuple[ManagedPostgres, ManagedRedis, str]]:
    pg, redis = ManagedPostgres(tmp_path / "pg"), ManagedRedis(tmp_path / "redis")
    pg.init()
    pg.start()
    database_url = asyncio.run(recreate_database(pg.url, "dispatch"))
    try:
        yield pg, redis, database_url
    finally:
        redis.destroy()
        pg.destroy()


def _get(url: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=5 * SECOND) as r:
            return r.status, dict(r.headers), orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), orjson.loads(e.read())


def _post(url: str) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        url, data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5 * SECOND) as r:
            return r.status, dict(r.headers), orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), orjson.loads(e.read())


def _wait_live(node: Node) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert node.proc is not None and node.proc.poll() is None, node.tail()
        try:
            if _get(node.url + "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(50 * MS)
    raise AssertionError(f"never live: {node.tail()}")


def _assert_waiting(node: Node, what: str) -> None:
    _wait_live(node)
    deadline = time.monotonic() + 10
    while True:  # first PostgreSQL, then Redis: wait until it says it waits for `what`
        status, _, body = _get(node.url + "/readyz")
        assert status == 503 and body["error"]["code"] == "not_ready", body
        if f"waiting for {what}" in body["error"]["message"]:
            break
        assert time.monotonic() < deadline, body
        time.sleep(50 * MS)
    status, headers, body = _post(node.url + "/v1/orders")
    assert status == 503 and body["error"]["code"] == "unavailable", body
    assert int(headers["Retry-After"]) >= 1, headers
    deadline = time.monotonic() + 10
    while f"waiting for {what} (attempt" not in node.tail(10**6):
        assert time.monotonic() < deadline, node.tail()
        time.sleep(50 * MS)


def _node(tmp_path: Path, database_url: str, redis_url: str, **env: str) -> Node:
    environment = {**NODE_ENV, "DATABASE_URL": database_url, "REDIS_URL": redis_url, **env}
    return Node("node", free_port(), tmp_path / "node", environment, tmp_path / "node.log")


def test_waits_for_postgres_then_serves(
    deps: tuple[ManagedPostgres, ManagedRedis, str], tmp_path: Path
) -> None:
    pg, redis, database_url = deps
    pg.stop("fast")
    redis.start()
    node = _node(tmp_path, database_url, redis.url)
    node.start(wait=False)
    try:
        _assert_waiting(node, "PostgreSQL")
        pg.start()
        node.wait_ready()
        assert node.proc is not None and node.proc.poll() is None
        assert "Traceback" not in node.tail(10**6)
    finally:
        node.stop()


def test_waits_for_redis_then_serves(deps: tuple[ManagedPostgres, ManagedRedis, str], tmp_path: Path) -> None:
    _, redis, database_url = deps
    node = _node(tmp_path, database_url, f"redis://127.0.0.1:{redis.port}/0")
    node.start(wait=False)
    try:
        _assert_waiting(node, "Redis")
        redis.start()
        node.wait_ready()
        assert "Traceback" not in node.tail(10**6)
    finally:
        node.stop()


@pytest.mark.parametrize("missing", ["postgres", "redis"])
def test_gives_up_past_the_startup_timeout_with_one_line(
    deps: tuple[ManagedPostgres, ManagedRedis, str], tmp_path: Path, missing: str
) -> None:
    pg, redis, database_url = deps
    if missing == "postgres":
        pg.stop("fast")
    else:
        redis.start()
        redis.stop()
    env = {
        **os.environ,
        **NODE_ENV,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis.url,
        "DISPATCH_STARTUP_TIMEOUT": "2",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dispatch",
            "serve",
            "--no-demo",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60 * SECOND,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("dispatch: error: "), done.stderr
    assert ("PostgreSQL" if missing == "postgres" else "Redis") in errors[0]
    assert "DISPATCH_STARTUP_TIMEOUT" in errors[0]
    assert "Traceback" not in done.stdout + done.stderr
