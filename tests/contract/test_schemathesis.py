"""The published contract, fuzzed as a stranger would: schemathesis against /openapi.json of a real server,
with every check, the examples, coverage, fuzzing and stateful (OpenAPI links) phases, as an operator and
as a resident. Every response must be one the document declares, with the declared shape (the server runs
with DISPATCH_STRICT_VIEWS: a result that does not match its own model is a 500 here, not a silent drift)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dispatch.app import operations
from dispatch.auth import Role, issue_token
from dispatch.bench.stack import Node, free_port
from dispatch.clock import SystemClock
from tests.conftest import SECRET
from tests.timing import SECOND

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("TEST_SCHEMATHESIS_EXAMPLES", "8"))
SEED = os.environ.get("TEST_SCHEMATHESIS_SEED", "1")


def _token(role: Role, subject: str) -> str:
    return issue_token(SECRET, role, subject, 3600, SystemClock().now())


@pytest.fixture(scope="module")
def server(
    make_database: Callable[[str], Any], redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    database_url = asyncio.run(make_database("dispatch_contract"))
    root = tmp_path_factory.mktemp("contract")
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DISPATCH_SECRET": SECRET,
        "DISPATCH_LOG_LEVEL": "WARNING",
        "DISPATCH_LOG_FORMAT": "json",
        "DISPATCH_STRICT_VIEWS": "true",
        "DISPATCH_RUN_TIMERS": "false",
    }
    node = Node("contract", free_port(), root / "data", env, root / "server.log")
    node.start()
    try:
        yield node
    finally:
        node.stop()


async def _seed(url: str) -> dict[str, str]:
    """One of everything, so that operations on ids reach their logic instead of 404."""
    admin = {"Authorization": f"Bearer {_token(Role.ADMIN, 'ops')}"}
    async with aiohttp.ClientSession(url) as http:

        async def post(path: str, body: Any, headers: dict[str, str] = admin, method: str = "POST") -> Any:
            async with http.request(method, path, json=body, headers=headers) as r:
                assert r.status in (200, 201), (path, r.status, await r.text())
                return await r.json()

        shop = await post("/v1/shops", {"name": "Corner", "lat": 45.76, "lng": 4.83})
        await post(
            f"/v1/shops/{shop['id']}/catalogue/milk",
            {"name": "Milk", "price_cents": 90, "stock": 10**6},
            method="PUT",
        )
        resident = await post("/v1/residents", {"name": "Ada"})
        courier = await post("/v1/couriers", {"name": "Bo", "capacity": 10})
        mine = {"Authorization": f"Bearer {_token(Role.RESIDENT, resident['id'])}"}
        order = await post(
            "/v1/orders",
            {"dropoff": {"lat": 45.761, "lng": 4.831}, "items": [{"sku": "milk", "qty": 1}]},
            headers=mine,
        )
    return {
        "shop_id": shop["id"],
        "resident_id": resident["id"],
        "courier_id": courier["id"],
        "order_id": order["id"],
        "job_id": order["jobs"][0]["id"],
        "sku": "milk",
    }


def _config(ids: dict[str, str]) -> str:
    """Known ids for path parameters; and, for operations that validate beyond their schema (a zone that
    crosses itself, an unknown SKU, a slot in the past), 422 is a right answer to a schema-valid request."""
    lines = ["[parameters]", *(f'"path.{k}" = "{v}"' for k, v in ids.items())]
    for op in operations().operations.values():
        if op.http is not None and 422 in op.http.errors:
            lines += [
                "",
                "[[operations]]",
                f'include-operation-id = "{op.name}"',
                'checks.positive_data_acceptance.expected-statuses = ["2XX", 401, 403, 404, 409, 422, 429]',
            ]
    return "\n".join(lines) + "\n"


def _run(
    server: Node, token: str, ids: dict[str, str], tmp_path: Path, name: str
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / f"{name}.toml"
    config.write_text(_config(ids))
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(config),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            SEED,
            "--workers",
            "2",
            "--header",
            f"Authorization: Bearer {token}",
            "--no-color",
            "--warnings",
            "off",
            # The websocket upgrade is not an HTTP exchange: its protocol is /asyncapi.json, tested in
            # tests/realtime (a plain GET of it is answered 426, as documented).
            "--exclude-path",
            "/v1/ws",
        ],
        capture_output=True,
        text=True,
        timeout=600 * SECOND,
        cwd=tmp_path,
    )


@pytest.mark.parametrize("role", ["admin", "resident"])
def test_the_api_keeps_its_published_contract(server: Node, role: str, tmp_path: Path) -> None:
    ids = asyncio.run(_seed(server.url))
    token = _token(Role.ADMIN, "ops") if role == "admin" else _token(Role.RESIDENT, ids["resident_id"])
    done = _run(server, token, ids, tmp_path, role)
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-3000:]
    log = server.tail(10**7)
    assert "unhandled error" not in log, log[log.find("unhandled error") - 200 :][:4000]
