"""One declaration per operation: both transports give the same answer to the same bad input, and the
published documents describe every operation, command and event."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch.api.operations import Nothing, Operation, required_fields
from dispatch.app import operations
from dispatch.events import CATALOGUE, VOLATILE
from tests.couriers.helpers import add_courier
from tests.orders.helpers import AuthFn, Client, add_resident, add_shop, recv

TWINS = sorted(op.name for op in operations().operations.values() if op.ws and op.http is not None)
OTHER_ROLE = {"shop": "resident", "courier": "shop", "resident": "courier", "admin": "resident"}


def _op(name: str) -> Operation:
    return operations().operations[name]


def _path(op: Operation, ids: dict[str, str]) -> str:
    assert op.http is not None
    path = op.http.path
    for spec in op.ids:
        path = path.replace("{" + spec.name + "}", ids.get(spec.name, "nonsense"))
    return path


async def _subject(client: Client, auth: AuthFn, role: str) -> str:
    """Someone of `role` who exists (a token for nobody is refused before any operation)."""
    admin = auth("admin")
    if role == "resident":
        return await add_resident(client, admin)
    if role == "shop":
        return await add_shop(client, admin, {"milk": 1})
    if role == "courier":
        return await add_courier(client, admin)
    return "ops"


async def _both(
    client: Client, auth: AuthFn, op: Operation, role: str, ids: dict[str, str], body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    assert op.http is not None
    headers = auth(role, await _subject(client, auth, role))
    r = await client.request(op.http.method, _path(op, ids), json=body, headers=headers)
    http = await r.json()
    http["status"] = r.status
    async with client.ws_connect("/v1/ws", headers=headers) as ws:
        await recv(ws)
        await ws.send_json({"type": op.name, "id": "x", **ids, **body})
        reply = await recv(ws)
        while reply.get("type") != "reply":
            reply = await recv(ws)
    return http["error"], reply["error"]


@pytest.mark.parametrize("name", TWINS)
async def test_a_malformed_id_is_the_same_404_on_both(client: Client, auth: AuthFn, name: str) -> None:
    op = _op(name)
    role = next(r for r in op.roles if r != "admin") if op.roles != ("admin",) else "admin"
    ids = {spec.name: "nonsense" for spec in op.ids}
    body = _valid_body(op)
    http, ws = await _both(client, auth, op, role, ids, body)
    assert (http["code"], http["message"]) == (ws["code"], ws["message"])
    assert http["code"].endswith("_not_found"), http


@pytest.mark.parametrize("name", TWINS)
async def test_the_wrong_role_is_the_same_403_on_both(client: Client, auth: AuthFn, name: str) -> None:
    op = _op(name)
    role = next(r for r in ("resident", "shop", "courier", "admin") if r not in op.roles)
    ids = {spec.name: f"{spec.kind}_aaaaaaaaaaaaaaaa" for spec in op.ids}
    http, ws = await _both(client, auth, op, role, ids, _valid_body(op))
    assert http["code"] == ws["code"] == "wrong_role"


@pytest.mark.parametrize("name", [n for n in TWINS if _op(n).input is not Nothing])
async def test_bad_fields_are_the_same_422_on_both(client: Client, auth: AuthFn, name: str) -> None:
    op = _op(name)
    role = next(r for r in op.roles if r != "admin") if op.roles != ("admin",) else "admin"
    ids = {spec.name: f"{spec.kind}_aaaaaaaaaaaaaaaa" for spec in op.ids}
    body = {**_valid_body(op), "surprise": 1}
    http, ws = await _both(client, auth, op, role, ids, body)
    assert http["code"] == ws["code"] == "validation_failed"
    assert http["details"] == ws["details"]
    assert ["surprise"] in [d["path"] for d in http["details"]]


def _valid_body(op: Operation) -> dict[str, Any]:
    samples: dict[str, Any] = {
        "prep_minutes": 10,
        "reason": "closed",
        "lat": 45.76,
        "lng": 4.83,
        "accuracy": 5,
        "at": "2026-01-01T00:00:00+00:00",
    }
    if op.input is Nothing or not required_fields(op.input):
        return {}
    return {k: samples[k] for k, f in op.input.model_fields.items() if f.is_required()}


async def test_openapi_gives_every_operation_its_schemas_and_statuses(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    for op in operations().operations.values():
        assert op.http is not None
        entry = doc["paths"][op.http.path][op.http.method.lower()]
        assert entry["operationId"] == op.name
        ok = entry["responses"][str(op.http.status)]
        assert "schema" in ok["content"]["application/json"], op.name
        for status in ("503", *(str(s) for s in op.http.errors)):
            assert status in entry["responses"], (op.name, status)
        if op.roles:
            assert {"401", "403"} <= set(entry["responses"]), op.name
    schemas = doc["components"]["schemas"]
    assert "Order" in schemas and "Route" in schemas and "Error" in schemas


async def test_asyncapi_describes_every_command_and_event(client: Client) -> None:
    doc = await (await client.get("/asyncapi.json")).json()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["ws"]["address"] == "/v1/ws"
    ops = doc["operations"]
    for name, op in operations().commands.items():
        entry = ops["receive_" + name.replace(".", "_")]
        assert entry["action"] == "receive" and entry["reply"]["messages"], name
        assert op.roles, name
    for name in [*CATALOGUE, *VOLATILE]:
        assert ops["send_" + name.replace(".", "_")]["action"] == "send", name
    for builtin in ("auth", "resume", "ping", "hello"):
        assert any(builtin in key for key in ops), builtin
    assert "1013" in doc["info"]["description"]
