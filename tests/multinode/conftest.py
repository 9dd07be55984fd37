"""Real server processes sharing the test PostgreSQL and Redis: what several nodes in production are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatch.bench.stack import free_port, wait_ready
from tests.conftest import SECRET
from tests.timing import SECOND


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """Die at once, as a crashed machine would: no graceful close, no final publish."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def _wait_ready(node: Node, timeout: float = 30 * SECOND) -> None:
    try:
        wait_ready(node.url, node.proc, timeout)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}: {node.log.read_text()[-3000:]}") from None


@pytest.fixture
def start_nodes(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Callable[..., list[Node]]]:
    started: list[Node] = []

    def start(count: int, **env: str) -> list[Node]:
        nodes = []
        for n in range(count):
            port = free_port()
            log = tmp_path / f"node{len(started) + n}.log"
            environment = {
                **os.environ,
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "DISPATCH_SECRET": SECRET,
                "DISPATCH_LOG_LEVEL": "WARNING",
                "DISPATCH_DB_POOL_MAX": "5",
                "DISPATCH_DEFER_WAIT_MIN": "inf",  # rounds place work at once, as in-process tests
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
                    str(tmp_path / f"data{len(started) + n}"),
                ],
                env=environment,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            nodes.append(Node(port, proc, log))
        started.extend(nodes)
        for node in nodes:
            _wait_ready(node)
        return nodes

    yield start
    for node in started:
        node.stop()
