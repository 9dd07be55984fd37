"""A real `dispatch serve` process on the test PostgreSQL and Redis, for clients that behave as attackers
do: raw sockets, bad bytes, slow or vanishing clients, heavy zones, forged or overlong tokens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatch.auth import Role, issue_token
from dispatch.bench.stack import free_port
from dispatch.clock import SystemClock
from tests.conftest import SECRET
from tests.timing import MS, SECOND


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_server(database_url: str, redis_url: str, root: Path, **env: str) -> Server:
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    log = root / f"server-{port}.log"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCH_SECRET": SECRET,
        "DISPATCH_LOG_FORMAT": "json",
        "DISPATCH_DB_POOL_MAX": "5",
        **env,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dispatch",
            "serve",
            "--no-demo",
            "--port",
            str(port),
            "--data-dir",
            str(root),
        ],
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server(port, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {server.logs()[-3000:]}")
        try:
            with urllib.request.urlopen(server.url + "/readyz", timeout=2 * SECOND) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(100 * MS)
    server.stop()
    raise AssertionError(f"server not ready: {server.logs()[-3000:]}")


@pytest.fixture(scope="module")
def server(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module, with the default settings."""
    running = start_server(database_url, redis_url, tmp_path_factory.mktemp("server"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def make_server(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A server with its own settings, stopped at the end of the test."""
    started: list[Server] = []

    def make(**env: str) -> Server:
        running = start_server(database_url, redis_url, tmp_path / f"s{len(started)}", **env)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def bearer(role: str, subject: str = "ops", ttl: int = 3600) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(SECRET, Role(role), subject, ttl, SystemClock().now())}


def raw_request(server: Server, data: bytes, timeout: float = 10 * SECOND) -> bytes:
    """Send bytes as they are and read the answer until the server closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, orjson.loads(body) if body else None


def assert_error_shape(body: Any, code: str | None = None) -> None:
    assert set(body) == {"error"}, body
    assert {"code", "message", "details"} <= set(body["error"]), body
    if code is not None:
        assert body["error"]["code"] == code, body


def metrics(server: Server) -> str:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5 * SECOND) as r:
        text: str = r.read().decode()
        return text
