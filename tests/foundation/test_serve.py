"""`dispatch serve` as a user runs it: embedded PostgreSQL and Redis, data kept across restarts, one server
per data dir, graceful stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dispatch.bench.stack import free_port as _free_port
from dispatch.bench.stack import wait_ready
from tests.timing import SECOND

pytestmark = pytest.mark.slow


def _start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["DISPATCH_LOG_FORMAT"] = "json"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dispatch",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _get(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5 * SECOND) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_ready(proc: subprocess.Popen[str], port: int, timeout: float = 30 * SECOND) -> float:
    try:
        return wait_ready(f"http://127.0.0.1:{port}", proc, timeout)
    except RuntimeError as exc:
        if proc.poll() is None:
            proc.kill()
        try:  # bounded: whatever it started may outlive it and keep its output open
            out, _ = proc.communicate(timeout=10 * SECOND)
        except subprocess.TimeoutExpired as timeout:
            out = timeout.output or ""
        raise AssertionError(f"{exc}:\n{out}") from None


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30 * SECOND)
    assert proc.returncode == 0, out
    return out


def _admin_token(data_dir: Path) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dispatch",
            "token",
            "--role",
            "admin",
            "--subject",
            "ops",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_serve_restart_keeps_data_and_one_server_per_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    first = _start(data_dir, port)
    try:
        _wait_ready(first, port)
        token = _admin_token(data_dir)
        status, body = _get(port, "/v1/couriers/cou_aaaaaaaaaaaaaaaa", token)
        assert status == 404 and body["error"]["code"] == "courier_not_found"  # type: ignore[index]

        # A second server on the same data dir refuses to start, clearly, and harms nothing.
        second = _start(data_dir, _free_port())
        out, _ = second.communicate(timeout=30 * SECOND)
        assert second.returncode != 0
        assert "already running on the data dir" in out
        assert _get(port, "/readyz")[0] == 200
        # A one-off command meanwhile shares the embedded PostgreSQL and leaves the server's Redis alone.
        migrate = subprocess.run(
            [sys.executable, "-m", "dispatch", "migrate", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=120 * SECOND,
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        assert "applied 0 migration(s)" in migrate.stdout
        status, ready = _get(port, "/readyz")
        assert status == 200, ready
        # On SIGTERM a connected websocket is closed with 1001 (going away).
        close_code = _close_code_on_sigterm(first, port, token)
    finally:
        out = _stop(first)
    assert close_code == 1001
    assert "demo data loaded: 36 shops" in out
    assert "--role shop --subject shop_" in out
    # The token command it prints is one that works from here: this interpreter, this data dir.
    assert f"{sys.executable} -m dispatch token --data-dir {data_dir} --role admin --subject ops" in out
    # Every line is a JSON log line (the banner, the demo's instructions and Python warnings included), with
    # a request id on request logs, and the shutdown says so.
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert any(entry.get("request_id") for entry in entries)
    messages = [entry["message"] for entry in entries]
    assert any(m.startswith("dispatch server on http://") for m in messages)
    assert any(m.startswith("shutting down: closing 1 websocket") for m in messages)
    assert messages[-1] == "stopped"

    again = _start(data_dir, port)
    try:
        _wait_ready(again, port)
        token = _admin_token(data_dir)
        # The demo is not loaded twice, and the first run's data is still there.
        shops = _count_shops(port, token, data_dir)
        assert shops == 36
    finally:
        out = _stop(again)
    assert "demo data loaded" not in out


def _count_shops(port: int, token: str, data_dir: Path) -> int:
    status, body = _get(port, "/v1/shops?limit=100", token)
    assert status == 200, body
    items = body["items"]
    assert isinstance(items, list)
    return len(items)


def _close_code_on_sigterm(proc: subprocess.Popen[str], port: int, token: str) -> int | None:
    import asyncio

    import aiohttp

    async def run() -> int | None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"http://127.0.0.1:{port}/v1/ws", headers={"Authorization": f"Bearer {token}"}
            ) as ws,
        ):
            hello = await ws.receive_json(timeout=5 * SECOND)
            assert hello["type"] == "hello"
            proc.send_signal(signal.SIGTERM)
            msg = await ws.receive(timeout=15 * SECOND)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
            return ws.close_code

    code = asyncio.run(run())
    proc.wait(30)  # the shutdown finishes by itself: no second signal
    return code


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_after_a_killed_server_the_next_one_stops_the_embedded_database_when_it_stops(tmp_path: Path) -> None:
    """SIGKILL leaves the embedded PostgreSQL and Redis running; the next server on the data dir takes them
    over, and they stop when it stops (before, PostgreSQL outlived it for ever)."""
    data_dir = tmp_path / "data"
    port = _free_port()
    first = _start(data_dir, port)
    _wait_ready(first, port)
    postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    settings = json.loads((data_dir / "redis" / "dispatch.rdb.settings").read_text())
    redis_server = int(Path(settings["pidfile"]).read_text())
    first.kill()  # no chance to stop anything
    first.communicate(timeout=30 * SECOND)
    # Orphaned, both still serving the data dir.
    assert _pid_running(postmaster) and _pid_running(redis_server)
    second = _start(data_dir, port)
    try:
        _wait_ready(second, port)
        assert _get(port, "/readyz")[0] == 200
    finally:
        _stop(second)
    for _ in range(100):
        if not _pid_running(postmaster) and not _pid_running(redis_server):
            break
        time.sleep(0.1)
    assert not _pid_running(postmaster), "the embedded PostgreSQL outlived the server that took it over"
    assert not _pid_running(redis_server), "the embedded Redis outlived the server that took it over"
