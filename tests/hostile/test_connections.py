"""Connections as an attacker holds them: malformed HTTP, clients that leave mid-body, slow headers and
bodies, more connections than allowed, a port already taken. Raw sockets against a real server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import orjson
import pytest

from dispatch.bench.stack import free_port
from tests.hostile.conftest import (
    Server,
    assert_error_shape,
    bearer,
    metrics,
    raw_request,
    split_response,
)
from tests.timing import MS, SECOND

pytestmark = pytest.mark.slow


def _log_lines(server: Server) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in server.logs().splitlines() if line.startswith("{")]


def test_malformed_http_gets_the_json_shape_and_a_rate_limited_one_line_log(server: Server) -> None:
    bad = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",  # an invalid header value
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a request line over 8,190 bytes
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS on the HTTP port
    ]
    for data in bad:
        status, headers, body = split_response(raw_request(server, data))
        assert status == 400
        assert headers["content-type"].startswith("application/json")
        assert_error_shape(body, "malformed_http")
        assert b"aaaa" not in orjson.dumps(body) and "\\u0001" not in body["error"]["message"]  # no echo
    for _ in range(200):
        raw_request(server, bad[0])
    lines = [e for e in _log_lines(server) if "malformed HTTP" in str(e["message"])]
    assert 1 <= len(lines) <= 3, lines  # one line per 10 s at most, each saying how many it stands for
    assert "Traceback" not in server.logs()
    assert re.search(
        r'dispatch_http_requests_total\{method="-",route="malformed",status="400"\} (\d+)', metrics(server)
    )


def test_a_client_leaving_mid_body_is_not_a_server_error(server: Server) -> None:
    token = bearer("admin")["Authorization"].encode()
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"POST /v1/couriers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: " + token + b'\r\nContent-Length: 100\r\n\r\n{"name":'
            )
            time.sleep(20 * MS)
    deadline = time.monotonic() + 10
    while (left := re.search(r'route="/v1/couriers",status="499"\} (\d+)', metrics(server))) is None or int(
        left[1]
    ) < 30:
        assert time.monotonic() < deadline, metrics(server)
        time.sleep(100 * MS)
    text = metrics(server)
    assert not re.search(r'route="/v1/couriers",status="5\d\d"', text), text
    assert "Traceback" not in server.logs()
    levels = {e["level"] for e in _log_lines(server) if "client left" in str(e["message"])}
    assert levels == {"info"}


def test_slow_headers_and_bodies_are_cut_off(make_server: Callable[..., Server]) -> None:
    server = make_server(DISPATCH_HEADER_TIMEOUT="1", DISPATCH_BODY_TIMEOUT="1")
    baseline = server.open_fds()
    slow = []
    for _ in range(200):  # slowloris: a request that never ends its headers
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow.append(sock)
    try:
        for sock in slow:
            sock.settimeout(15)  # a bounded wait for what must happen: the server answers and closes
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            status, _, body = split_response(answer)
            assert status == 408
            assert_error_shape(body, "request_timeout")
    finally:
        for sock in slow:
            sock.close()
    deadline = time.monotonic() + 10
    while server.open_fds() > baseline + 5:
        assert time.monotonic() < deadline, (server.open_fds(), baseline)
        time.sleep(100 * MS)
    # A body that trickles: 408 once DISPATCH_BODY_TIMEOUT has passed.
    token = bearer("admin")["Authorization"].encode()
    status, _, body = split_response(
        raw_request(
            server,
            b"POST /v1/couriers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: " + token + b'\r\nContent-Length: 100\r\n\r\n{"name":',
            timeout=20 * SECOND,
        )
    )
    assert status == 408
    assert_error_shape(body, "request_timeout")
    # Clients that are not slow are served as before, keep-alive included.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10 * SECOND) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(1.5)  # longer than the header timeout between requests: idle is not slow


def test_connections_beyond_the_limit_get_a_503(make_server: Callable[..., Server]) -> None:
    server = make_server(DISPATCH_MAX_CONNECTIONS="20")
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        time.sleep(500 * MS)  # all 20 accepted
        status, headers, body = split_response(
            raw_request(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        )
        assert status == 503 and headers["retry-after"] == "1"
        assert_error_shape(body, "too_many_connections")
    finally:
        for sock in held[:5]:
            sock.close()
    try:
        deadline = time.monotonic() + 10
        while True:  # the server counts the closed ones out as it notices them
            status, _, _ = split_response(
                raw_request(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            )
            if status == 200:
                break
            assert time.monotonic() < deadline
            time.sleep(100 * MS)
    finally:
        for sock in held[5:]:
            sock.close()


def test_a_port_in_use_is_one_line_and_a_non_zero_exit(
    database_url: str, redis_url: str, tmp_path: object
) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "DISPATCH_LOG_LEVEL": "WARNING",
        }
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "dispatch",
                "serve",
                "--no-demo",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60 * SECOND,
        )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"dispatch: error: port {port} on 127.0.0.1 is in use"), errors
    assert "Traceback" not in done.stdout + done.stderr
