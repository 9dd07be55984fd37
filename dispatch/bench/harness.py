"""Shared by the server benchmarks: embedded services in a temporary dir, a seeded city, the server in
its own process, and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from dispatch.auth import Role, issue_token
from dispatch.bench.stack import free_port, process_tree, wait_ready
from dispatch.config import Settings
from dispatch.db import connect
from dispatch.embedded import start_embedded
from dispatch.ids import new_id
from dispatch.migrate import migrate_url
from dispatch.services import zones
from dispatch.services.hours import ALWAYS_OPEN

SECRET = "bench-secret-" + "b" * 40
CENTRE = (45.7640, 4.8357)


@dataclass
class Stack:
    database_url: str
    redis_url: str
    data_dir: Path


@contextlib.contextmanager
def embedded_stack() -> Iterator[Stack]:
    """Fresh embedded PostgreSQL and Redis in a temporary dir, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="dispatch-bench-") as tmp:
        services = start_embedded(Path(tmp), None, None)
        try:
            assert services.database_url is not None and services.redis_url is not None
            asyncio.run(migrate_url(services.database_url))
            yield Stack(services.database_url, services.redis_url, Path(tmp))
        finally:
            services.stop()


def token(role: Role, subject: str) -> str:
    return issue_token(SECRET, role, subject, 24 * 3600, datetime.now(UTC))


def offset(north_m: float, east_m: float) -> tuple[float, float]:
    lat = CENTRE[0] + north_m / 111_320.0
    return lat, CENTRE[1] + east_m / (111_320.0 * math.cos(math.radians(CENTRE[0])))


async def seed_shops(
    database_url: str,
    n_shops: int,
    skus: Sequence[str],
    *,
    seed: int = 1,
    area_m: float = 8000.0,
    radius_m: float = 2500.0,
    stock: int = 1_000_000,
    auto_accept: bool = False,
) -> list[tuple[str, float, float]]:
    """Shops with circular zones and every SKU in (huge) stock, written in bulk. Returns (id, lat, lng)."""
    rng = random.Random(seed)
    settings = Settings()
    now = datetime.now(UTC)
    shops = []
    conn = await connect(database_url)
    try:
        for n in range(n_shops):
            lat, lng = offset(rng.uniform(-area_m / 2, area_m / 2), rng.uniform(-area_m / 2, area_m / 2))
            zone = zones.prepare(
                {"type": "Circle", "center": [lng, lat], "radius_m": radius_m}, lat, lng, settings
            )
            shop_id = new_id("shop")
            shops.append((shop_id, lat, lng))
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO shops (id, name, lat, lng, opening_hours, prep_minutes, auto_accept,
                                          capacity, created_at, updated_at)
                       VALUES ($1, $2, $3, $4, $5, 10, $6, 10000, $7, $7)""",
                    shop_id,
                    f"Bench shop {n}",
                    lat,
                    lng,
                    ALWAYS_OPEN,
                    auto_accept,
                    now,
                )
                await zones.write_zone(conn, shop_id, zone)
        await conn.copy_records_to_table(
            "catalogue_items",
            records=[(s[0], sku, sku, 100, stock, False, 0) for s in shops for sku in skus],
            columns=["shop_id", "sku", "name", "price_cents", "stock", "preorder_only", "lead_minutes"],
        )
    finally:
        await conn.close()
    return shops


async def seed_people(database_url: str, kind: str, count: int) -> list[str]:
    table, prefix = {"resident": ("residents", "res"), "courier": ("couriers", "cou")}[kind]
    ids = [new_id(prefix) for _ in range(count)]
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table(
            table,
            records=[(i, f"{kind} {n}", now, now) for n, i in enumerate(ids)],
            columns=["id", "name", "created_at", "updated_at"],
        )
    finally:
        await conn.close()
    return ids


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def peak_rss_mb(self) -> float | None:
        """The largest peak resident memory (VmHWM) of the server's processes, read before it stops."""
        peaks = []
        for pid in process_tree(self.proc.pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
            except OSError:
                continue
        return round(max(peaks), 1) if peaks else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextlib.contextmanager
def server_process(
    stack: Stack, profile: str | None = None, *, workers: int = 1, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """The real server (`dispatch serve`) in its own process(es), so client and server are measured apart.
    `profile`: a directory where each server process writes its cProfile stats when it stops."""
    port = free_port()
    log_path = stack.data_dir / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "dispatch",
        "serve",
        "--no-demo",
        "--port",
        str(port),
        "--data-dir",
        str(stack.data_dir / "srv"),
    ]
    environment = {
        **os.environ,
        "DATABASE_URL": stack.database_url,
        "REDIS_URL": stack.redis_url,
        "DISPATCH_SECRET": SECRET,
        "DISPATCH_LOG_LEVEL": "WARNING",
        "DISPATCH_WORKERS": str(workers),
        **({"DISPATCH_PROFILE_DIR": str(Path(profile).resolve())} if profile else {}),
        **(env or {}),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=environment, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        try:
            wait_ready(server.url, proc, in_a_row=1 if workers == 1 else 20 * workers)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n" + log_path.read_text()[-2000:]) from None
        yield server
    finally:
        server.stop()
