"""Events and live messages (courier positions, the consoles' hints) on their city-wide channels, on real
Redis: every node hears each batch once and delivers only the lines of the clients it holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from tests.realtime.test_hub_memory import Client, Outbox
from tests.timing import MS
from websocket.connection import Connection
from websocket.fanout import Fanout
from websocket.hub import Hub
from websocket.protocol import (
    EVENTS_CHANNEL,
    LIVE_CHANNEL,
    event_batch,
    event_lines,
    live_batch,
    live_lines,
    origin_of,
)


def test_a_batch_is_its_lines_and_a_malformed_line_is_skipped() -> None:
    lines = [("res_1", b'{"type":"courier.position","data":{"lat":1.5}}'), ("shop_2", b"{}")]
    assert list(live_lines(live_batch(lines))) == lines
    assert list(live_lines(b'res_1\t{"a":1}\nno tab here\nres_2\t{}')) == [
        ("res_1", b'{"a":1}'),
        ("res_2", b"{}"),
    ]


def test_an_event_batch_is_its_lines_with_their_seq() -> None:
    lines = [("shop_1", 7, b'{"seq":7,"type":"job.offered"}'), ("res_2", 12, b'{"seq":12}')]
    assert list(event_lines(event_batch(lines))) == lines
    assert list(event_lines(b'res_1\t3\t{}\nres_1\tx\t{}\nno tabs\nres_2\t4\t{"a":"b\\tc"}')) == [
        ("res_1", 3, b"{}"),
        ("res_2", 4, b'{"a":"b\\tc"}'),
    ]


def test_an_event_batch_may_say_which_node_sent_it() -> None:
    lines = [("shop_1", 7, b'{"seq":7}'), ("res_2", 12, b'{"seq":12}')]
    batch = event_batch(lines, b"node-a")
    assert origin_of(batch) == b"node-a"
    assert list(event_lines(batch)) == lines  # the "from" line is no event line, here or on older nodes
    assert origin_of(event_batch(lines)) is None
    assert origin_of(b"from\tnode-b") == b"node-b"


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[list[Hub]]:
    """Two nodes' hubs, each with its own Redis client and subscriber, as two processes have."""
    clients, fanouts, hubs = [], [], []
    for _ in range(2):
        client = Redis.from_url(redis_url)
        fanout = Fanout(client)
        outbox = Outbox()
        hubs.append(Hub(client, fanout, outbox.fetch_after, outbox.latest, outbox.latests))
        await fanout.start()
        clients.append(client)
        fanouts.append(fanout)
    try:
        yield hubs
    finally:
        for fanout in fanouts:
            await fanout.stop()
        for client in clients:
            await client.aclose()


async def _until(predicate: Any) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(10 * MS)
    raise AssertionError("not delivered within 2 s")


async def test_each_node_delivers_the_lines_of_its_own_clients_only(nodes: list[Hub], redis: Redis) -> None:
    a, b = nodes
    on_a, on_b, also_on_b = Client("res_a"), Client("res_b"), Client("res_b")
    await a.register(cast(Connection, on_a))
    await b.register(cast(Connection, on_b))
    await b.register(cast(Connection, also_on_b))  # the same resident on two devices
    # Published from node A: one batch for a client of each node and for one connected nowhere.
    assert await a.publish_live(
        [("res_b", {"type": "courier.position", "n": 1}), ("res_a", {"n": 2}), ("res_gone", {"n": 3})]
    )
    await _until(lambda: on_a.sent and on_b.sent and also_on_b.sent)
    # As the pings' script publishes: one message for the channel, lines of several recipients.
    await redis.publish(LIVE_CHANNEL, live_batch([("res_b", b'{"n":4}'), ("res_b", b'{"n":5}')]))
    await _until(lambda: len(on_b.sent) == 3)
    await asyncio.sleep(100 * MS)  # anything further would have arrived by now
    assert on_a.sent == [{"n": 2}]
    assert on_b.sent == also_on_b.sent == [{"type": "courier.position", "n": 1}, {"n": 4}, {"n": 5}]


async def test_a_live_message_is_not_stored_for_a_client_that_connects_later(
    nodes: list[Hub],
) -> None:
    a, b = nodes
    assert await a.publish_live([("res_late", {"n": 1})])
    await asyncio.sleep(200 * MS)
    late = Client("res_late")
    await b.register(cast(Connection, late))
    assert await a.publish_live([("res_late", {"n": 2})])
    await _until(lambda: late.sent)
    await asyncio.sleep(100 * MS)
    assert late.sent == [{"n": 2}]


async def test_events_published_on_one_node_reach_the_clients_of_another_in_order(nodes: list[Hub]) -> None:
    a, b = nodes
    shop_tablets = [Client("shop_1"), Client("shop_1")]
    for tablet in shop_tablets:
        await b.register(cast(Connection, tablet))
    bystander = Client("res_9")
    await a.register(cast(Connection, bystander))
    for seq in (1, 2, 3):
        assert await a.publish([("shop_1", {"seq": seq, "type": "job.offered", "at": "", "data": {}})])
    assert await a.publish([])
    await _until(lambda: all(len(t.sent) == 3 for t in shop_tablets))
    await asyncio.sleep(100 * MS)
    assert [t.seqs for t in shop_tablets] == [[1, 2, 3], [1, 2, 3]]
    assert bystander.sent == []


async def test_a_node_gives_its_own_clients_its_events_as_it_publishes(
    nodes: list[Hub], redis: Redis
) -> None:
    """Its own clients get them without waiting for Redis; its own batches coming back are passed by, while
    the other node delivers them to its clients."""
    a, b = nodes
    here, there = Client("res_1"), Client("res_1")
    await a.register(cast(Connection, here))
    await b.register(cast(Connection, there))
    assert await a.publish([("res_1", {"seq": 1, "type": "order.placed", "at": "", "data": {}})])
    assert here.seqs == [1]  # before any message from Redis could have arrived
    await _until(lambda: there.seqs == [1])
    # A batch marked as node A's, with the next seq: B delivers it, A knows it has already.
    batch = event_batch([("res_1", 2, b'{"seq":2,"type":"order.updated","at":"","data":{}}')], a.origin)
    await redis.publish(EVENTS_CHANNEL, batch)
    await _until(lambda: there.seqs == [1, 2])
    await asyncio.sleep(100 * MS)
    assert here.seqs == [1]
