"""The websocket edge: authentication, replies, bad messages, resume, gap recovery, slow clients."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from dispatch import events
from dispatch.api.keys import RUNTIME
from dispatch.clock import ManualClock
from dispatch.outbox import NewEvent, append_events
from dispatch.views import View
from tests.orders.helpers import add_resident, add_shop, place
from tests.timing import MS, SECOND
from websocket.connection import Connection

Client = TestClient[Any, Any]
RES = "res_aaaaaaaaaaaaaaaa"


class Numbered(View):
    n: int


@pytest.fixture(autouse=True)
def _test_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests write events of their own type, declared for them like any other."""
    monkeypatch.setitem(
        events.CATALOGUE, "test.event", events.EventType("test.event", "resident", Numbered, "t")
    )


@pytest.fixture(autouse=True)
async def resident(db: asyncpg.Connection) -> None:
    """RES exists: a token for a subject that does not is refused (tests/hostile)."""
    await db.execute("INSERT INTO residents (id, name) VALUES ($1, 'Resident')", RES)


async def _write(db: asyncpg.Connection, clock: ManualClock, recipient: str, n: int) -> list[Any]:
    async with db.transaction():
        return await append_events(
            db, [NewEvent(recipient, "test.event", {"n": i}) for i in range(n)], clock.now()
        )


async def _publish(client: Client, events: list[Any]) -> None:
    await client.app[RUNTIME].hub.publish([(e.recipient, e.to_message()) for e in events])


async def _recv(ws: Any) -> dict[str, Any]:
    msg = await ws.receive(timeout=5 * SECOND)
    assert msg.type == WSMsgType.TEXT, msg
    data: dict[str, Any] = msg.json()
    return data


async def test_auth_by_header_then_hello(client: Client, auth: Callable[..., dict[str, str]]) -> None:
    async with client.ws_connect("/v1/ws", headers=auth("resident", RES)) as ws:
        hello = await _recv(ws)
        assert hello == {"type": "hello", "role": "resident", "subject": RES, "last_seq": 0}


async def test_auth_by_first_message(client: Client, token: Callable[..., str]) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"type": "resume", "after_seq": 0, "id": 1})
        assert (await _recv(ws))["error"]["code"] == "auth_required"
        await ws.send_json({"type": "auth", "token": token("resident", RES), "id": "a"})
        reply = await _recv(ws)
        assert reply["ok"] is True
        assert reply["id"] == "a"
        assert (await _recv(ws))["type"] == "hello"


async def test_bad_token_is_refused_and_closed(client: Client) -> None:
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"type": "auth", "token": "forged"})
        reply = await _recv(ws)
        assert reply["ok"] is False
        assert reply["error"]["code"] == "invalid_token"
        msg = await ws.receive(timeout=5 * SECOND)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == 1008


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "malformed_json"),
        ("[1, 2]", "bad_message"),
        ('{"id": 3}', "bad_type"),
        ('{"type": "no.such.thing", "id": 4}', "unknown_type"),
        ('{"type": "resume", "after_seq": -1, "id": 5}', "bad_after_seq"),
        ('{"type": "resume", "after_seq": "x", "id": 6}', "bad_after_seq"),
        ('{"type": "ping", "id": {"nested": true}}', "bad_id"),
        ('{"type": "ping", "pad": "' + "x" * 20000 + '"}', "message_too_large"),
    ],
)
async def test_bad_messages_get_errors_and_connection_stays_open(
    client: Client, auth: Callable[..., dict[str, str]], raw: str, code: str
) -> None:
    async with client.ws_connect("/v1/ws", headers=auth("resident", RES)) as ws:
        await _recv(ws)  # hello
        await ws.send_str(raw)
        reply = await _recv(ws)
        assert reply["ok"] is False
        assert reply["error"]["code"] == code
        assert set(reply["error"]) == {"code", "message", "details"}
        await ws.send_json({"type": "ping", "id": "still-there"})
        assert (await _recv(ws)) == {"type": "reply", "id": "still-there", "ok": True, "data": {"pong": True}}


async def test_rate_limit(client: Client, auth: Callable[..., dict[str, str]]) -> None:
    async with client.ws_connect("/v1/ws", headers=auth("resident", RES)) as ws:
        await _recv(ws)
        for i in range(60):
            await ws.send_json({"type": "ping", "id": i})
        replies = [await _recv(ws) for _ in range(60)]
        limited = [r for r in replies if not r["ok"]]
        assert limited
        assert all(r["error"]["code"] == "rate_limited" for r in limited)
        assert all(r["error"]["retry_after"] >= 1 for r in limited)
        # Every reply, refused or not, names the message it answers.
        assert sorted(r["id"] for r in replies) == list(range(60))


async def test_a_client_under_the_rate_is_not_limited_while_the_server_is_slow(
    client: Client, db: asyncpg.Connection, auth: Callable[..., dict[str, str]]
) -> None:
    """Messages are counted as they arrive: while a command waits on PostgreSQL, a client sending at 15 a
    second (the limit is 20) queues up, and none of it is refused when the server catches up."""
    admin = auth("admin")
    await add_shop(client, admin, {"milk": 5})
    resident = await add_resident(client, admin)
    status, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 1}])
    assert status == 201
    async with client.ws_connect("/v1/ws", headers=auth("resident", resident)) as ws:
        await _recv(ws)
        async with db.transaction():
            # The order's row is held: the cancel below waits, and the pings queue behind it.
            await db.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", order["id"])
            await ws.send_json({"type": "order.cancel", "id": "cancel", "order_id": order["id"]})
            for i in range(60):
                await ws.send_json({"type": "ping", "id": i})
                await asyncio.sleep(1 / 15)
        by_id: dict[Any, dict[str, Any]] = {}
        while len(by_id) < 61:
            message = await _recv(ws)  # the cancel's events come too
            if message["type"] == "reply":
                by_id[message["id"]] = message
    assert by_id["cancel"]["ok"], by_id["cancel"]
    refused = [r for r in by_id.values() if not r["ok"]]
    assert not refused, refused
    assert sorted(i for i in by_id if i != "cancel") == list(range(60))


async def test_live_events_and_resume_exactly_once_in_order(
    client: Client, db: asyncpg.Connection, clock: ManualClock, auth: Callable[..., dict[str, str]]
) -> None:
    async with client.ws_connect("/v1/ws", headers=auth("resident", RES)) as ws:
        await _recv(ws)
        await _publish(client, await _write(db, clock, RES, 3))
        got = [await _recv(ws) for _ in range(3)]
        assert [m["seq"] for m in got] == [1, 2, 3]
        assert [m["data"]["n"] for m in got] == [0, 1, 2]
    # Offline: five more events are written (and published to nobody).
    await _publish(client, await _write(db, clock, RES, 5))
    async with client.ws_connect("/v1/ws", headers=auth("resident", RES)) as ws:
        hello = await _recv(ws)
        assert hello["last_seq"] == 8
        await ws.send_json({"type": "resume", "after_seq": 3, "id": "r"})
        got = [await _recv(ws) for _ in range(6)]
        events = [m for m in got if "seq" in m]
        assert [m["seq"] for m in events] == [4, 5, 6, 7, 8]
        assert got[-1] == {"type": "reply", "id": "r", "ok": True, "data": {"last_seq": 8}}
        # A live event after the resume continues the sequence with no duplicate.
        await _publish(client, await _write(db, clock, RES, 1))
        assert (await _recv(ws))["seq"] == 9


async def test_event_committed_while_redis_missed_it_is_recovered(
    client: Client, db: asyncpg.Connection, clock: ManualClock, auth: Callable[..., dict[str, str]]
) -> None:
    """An event that never reached Redis is delivered before the next one, from PostgreSQL."""
    async with client.ws_connect("/v1/ws", headers=auth("resident", RES)) as ws:
        await _recv(ws)
        await _write(db, clock, RES, 2)  # committed, never published
        await _publish(client, await _write(db, clock, RES, 1))
        got = [await _recv(ws) for _ in range(3)]
        assert [m["seq"] for m in got] == [1, 2, 3]


async def test_two_tablets_of_one_shop_both_receive(
    client: Client, db: asyncpg.Connection, clock: ManualClock, auth: Callable[..., dict[str, str]]
) -> None:
    shop = "shop_aaaaaaaaaaaaaaaa"
    await db.execute(
        "INSERT INTO shops (id, name, lat, lng, opening_hours) VALUES ($1, 'Shop', 45.76, 4.83, '{}')", shop
    )
    async with (
        client.ws_connect("/v1/ws", headers=auth("shop", shop)) as a,
        client.ws_connect("/v1/ws", headers=auth("shop", shop)) as b,
    ):
        await _recv(a)
        await _recv(b)
        await _publish(client, await _write(db, clock, shop, 2))
        assert [(await _recv(a))["seq"] for _ in range(2)] == [1, 2]
        assert [(await _recv(b))["seq"] for _ in range(2)] == [1, 2]


def _on_a_slow_link(client: Client, recipient: str, buffer_limit: int) -> Connection:
    """The recipient's one connection, given `buffer_limit` and a small kernel send buffer on our side."""
    conns: list[Connection] = client.app[RUNTIME].hub.connections(recipient)
    (conn,) = conns
    conn.buffer_limit = buffer_limit
    sock = conn.ws.get_extra_info("socket")
    assert sock is not None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return conn


async def test_slow_client_is_cut_off_with_1013(
    client: Client, db: asyncpg.Connection, clock: ManualClock, auth: Callable[..., dict[str, str]]
) -> None:
    async with client.ws_connect("/v1/ws", headers=auth("resident", RES)) as ws:
        await _recv(ws)
        # Small buffers on the server's side, as on a dead mobile link whose window has closed.
        conn = _on_a_slow_link(client, RES, 16 * 1024)
        # The client reads nothing meanwhile: its library stops reading the socket once its own
        # buffer is full, then its kernel's window closes, then the server's unsent bytes grow.
        events = await _write(db, clock, RES, 3000)
        await _publish(client, events)
        for _ in range(50):
            if conn.cut_off:
                break
            await asyncio.sleep(50 * MS)
        assert conn.cut_off
        assert not conn.send({"type": "late"})
        received = 0
        msg = await ws.receive(timeout=5 * SECOND)
        while msg.type == WSMsgType.TEXT:
            received += 1
            msg = await ws.receive(timeout=5 * SECOND)
        # What it was sent before the cut, then the close frame that says: resume later.
        assert 0 < received < len(events)
        assert ws.close_code == 1013, (ws.exception(), received)


async def test_a_long_resume_on_a_slow_link_comes_in_bursts_not_a_cut_off(
    client: Client, db: asyncpg.Connection, clock: ManualClock, auth: Callable[..., dict[str, str]]
) -> None:
    async with client.ws_connect("/v1/ws", headers=auth("resident", RES)) as ws:
        await _recv(ws)
        hub = client.app[RUNTIME].hub
        conn = _on_a_slow_link(client, RES, 32 * 1024)  # a page of the catch-up is far more than this
        events = await _write(db, clock, RES, 3000)  # committed while it was away, never published
        await ws.send_json({"type": "resume", "id": "r", "after_seq": 0})
        seqs: list[int] = []
        while len(seqs) < len(events):
            try:
                msg = await ws.receive(timeout=0.5 * SECOND)
            except TimeoutError:
                await hub.sweep()  # what the node does every DISPATCH_CATCHUP_S
                continue
            assert msg.type == WSMsgType.TEXT, (msg, len(seqs))
            data = msg.json()
            if "seq" in data:
                seqs.append(data["seq"])
        assert seqs == [e.seq for e in events]
        assert not conn.cut_off


async def test_resume_as_it_connects_gets_everything_after_in_order_once(
    client: Client, db: asyncpg.Connection, clock: ManualClock, auth: Callable[..., dict[str, str]]
) -> None:
    await _publish(client, await _write(db, clock, RES, 8))
    async with client.ws_connect("/v1/ws?after_seq=3", headers=auth("resident", RES)) as ws:
        hello = await _recv(ws)
        assert hello["last_seq"] == 8 and hello["after_seq"] == 3
        # A live event racing the backfill changes nothing: one copy each, in order.
        await _publish(client, await _write(db, clock, RES, 1))
        assert [(await _recv(ws))["seq"] for _ in range(6)] == [4, 5, 6, 7, 8, 9]
        await ws.send_json({"type": "ping", "id": "p"})
        assert (await _recv(ws))["id"] == "p"  # nothing else was queued before the reply


async def test_resume_point_in_the_auth_message(
    client: Client, db: asyncpg.Connection, clock: ManualClock, token: Callable[..., str]
) -> None:
    await _publish(client, await _write(db, clock, RES, 4))
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"type": "auth", "token": token("resident", RES), "after_seq": 2, "id": "a"})
        assert (await _recv(ws))["ok"]
        assert (await _recv(ws))["after_seq"] == 2
        assert [(await _recv(ws))["seq"] for _ in range(2)] == [3, 4]


@pytest.mark.parametrize("settings", [{"catchup_s": 0.1}], indirect=True)
async def test_an_event_never_published_reaches_an_idle_client_by_the_sweep(
    client: Client, db: asyncpg.Connection, clock: ManualClock, auth: Callable[..., dict[str, str]]
) -> None:
    """No later event comes to reveal the gap: the node's sweep finds it in the outbox on its own."""
    async with client.ws_connect("/v1/ws", headers=auth("resident", RES)) as ws:
        await _recv(ws)
        await _write(db, clock, RES, 2)  # committed; its publish was lost (a node died, Redis blinked)
        assert [(await _recv(ws))["seq"] for _ in range(2)] == [1, 2]


async def test_commands_log_their_outcome_with_a_request_id(
    client: Client, auth: Callable[..., dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dispatch.api.ws")
    async with client.ws_connect("/v1/ws", headers=auth("resident", RES)) as ws:
        await _recv(ws)
        await ws.send_json({"type": "resume", "after_seq": 0, "id": "r"})
        await _recv(ws)
        await ws.send_json({"type": "order.cancel", "id": "c", "order_id": "ord_aaaaaaaaaaaaaaaa"})
        await _recv(ws)
    lines = {r.getMessage(): r for r in caplog.records if r.name == "dispatch.api.ws"}
    assert "ws resume ok" in lines
    refused = lines["ws order.cancel order_not_found"]
    assert refused.__dict__["result"] == "order_not_found" and len(refused.__dict__["request_id"]) == 16


async def test_a_bad_token_in_the_header_is_a_401_before_any_upgrade(client: Client) -> None:
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "x" * 22 + "==",
    }
    for token, code in (("Bearer forged", "invalid_token"), ("Basic abc", "invalid_token")):
        r = await client.get("/v1/ws", headers={"Authorization": token, **upgrade})
        assert r.status == 401, await r.text()
        assert (await r.json())["error"]["code"] == code
    r = await client.get("/v1/ws?after_seq=-1", headers={"Authorization": "Bearer x", **upgrade})
    assert r.status == 422 and (await r.json())["error"]["details"][0]["path"] == ["after_seq"]
    r = await client.get("/v1/ws")  # a plain GET: not a websocket client
    assert r.status == 426 and (await r.json())["error"]["code"] == "websocket_upgrade_required"


async def test_a_stalled_catch_up_holds_up_no_one_else(
    client: Client,
    db: asyncpg.Connection,
    database_url: str,
    clock: ManualClock,
    auth: Callable[..., dict[str, str]],
) -> None:
    """A client behind (a gap) is caught up from PostgreSQL; while that read waits (here on a lock, as on
    a slow or restarting database), the node's other clients still get their events and live messages at
    once, and the one behind gets everything, in order, once the read goes through."""
    other = "res_bbbbbbbbbbbbbbbb"
    await db.execute("INSERT INTO residents (id, name) VALUES ($1, 'Other')", other)
    async with (
        client.ws_connect("/v1/ws", headers=auth("resident", RES)) as behind,
        client.ws_connect("/v1/ws", headers=auth("resident", other)) as ws,
    ):
        await _recv(behind)
        await _recv(ws)
        missed = await _write(db, clock, RES, 2)  # committed; only the second is published: a gap
        blocker = await asyncpg.connect(database_url)
        try:
            stall = blocker.transaction()
            await stall.start()
            await blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            await _publish(client, missed[1:])
            await asyncio.sleep(100 * MS)  # the gap's catch-up is now waiting on the lock
            hub = client.app[RUNTIME].hub
            await hub.publish([(other, {"seq": 1, "type": "test.event", "at": "t", "data": {"n": 7}})])
            await hub.publish_live([(other, {"type": "courier.location", "data": {"n": 8}})])
            first, second = await _recv(ws), await _recv(ws)
            assert (first["seq"], first["data"]) == (1, {"n": 7})
            assert second["data"] == {"n": 8}
            await stall.rollback()
        finally:
            await blocker.close()
        got = [await _recv(behind) for _ in range(2)]
        assert [m["seq"] for m in got] == [1, 2]
