"""`python -m dispatch simulate` against `dispatch serve` with the demo data, both on one scaled clock: orders
go from placement to delivery through the real API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatch.bench.stack import free_port as _free_port
from tests.foundation.test_serve import _stop, _wait_ready
from tests.timing import SECOND

pytestmark = pytest.mark.slow


def test_demo_day_delivers_what_it_places(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(  # one clock for both processes: a clock minute a wall second
        DISPATCH_CLOCK_SPEED="60",
        DISPATCH_CLOCK_START=datetime.now(UTC).isoformat(),
        DISPATCH_CLOCK_EPOCH=repr(time.time()),
        DISPATCH_ROUND_S="30",
        # Shops answer at once, but on a busy machine "at once" can pass the 45 clock seconds (0.75 wall s) of
        # DISPATCH_OFFER_TIMEOUT, and the job would go to another shop or be given up: a different test.
        DISPATCH_OFFER_TIMEOUT="3600",
        # Likewise a courier is stale after 30 clock seconds without a ping: half a wall second here, which a
        # busy machine's lag can pass, and then its work is taken back while it drives (seen: pickups refused
        # as stop_cancelled and position_stale with every order still delivered). Five pings' worth, as
        # `dispatch replay` gives its server: the apps ping every clock minute (a wall second).
        DISPATCH_COURIER_STALE_S="300",
        DISPATCH_LOG_LEVEL="WARNING",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "dispatch", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_ready(server, port, timeout=60 * SECOND)
        day = subprocess.run(
            [
                sys.executable,
                "-m",
                "dispatch",
                "simulate",
                "--server",
                f"http://127.0.0.1:{port}",
                "--data-dir",
                str(data_dir),
                "--minutes",
                "10",
                "--orders-per-minute",
                "2",
                "--seed",
                "3",
            ],
            # The clock comes from the server (GET /v1/clock), not from this process's environment.
            env={k: v for k, v in env.items() if not k.startswith("DISPATCH_CLOCK_")},
            capture_output=True,
            text=True,
            timeout=240 * SECOND,
        )
    finally:
        server_log = _stop(server)
    assert day.returncode == 0, day.stdout + day.stderr
    assert "on the server's clock (60x)" in day.stdout, day.stdout
    found = re.search(r"(\d+) orders placed \((\d+) refused\), (\d+) delivered", day.stdout)
    assert found is not None, day.stdout
    placed, _, delivered = (int(g) for g in found.groups())
    assert placed >= 10, day.stdout + day.stderr[-3000:]
    # Every order, as the server counts it: delivered is the order's state (a split order is delivered at its
    # last drop-off, not its first).
    assert delivered == placed, day.stdout + day.stderr[-2000:] + server_log[-3000:]
    # And the apps followed the rules: nothing they sent was refused (a position at the stop, goods ready).
    assert "error(s) in the apps" not in day.stdout, day.stdout
