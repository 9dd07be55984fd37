"""The hub's delivery rules in memory: a list for the outbox, a list for each connection, no Redis, no
PostgreSQL. Exactly once, in order, without gaps, whatever arrives live, late, twice or never."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from websocket import hub as hub_module
from websocket.connection import Connection
from websocket.fanout import Fanout
from websocket.hub import Hub
from websocket.protocol import EVENTS_CHANNEL, event_batch, event_lines


class Outbox:
    """Events by recipient, numbered from 1, as PostgreSQL keeps them."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.gate: asyncio.Event | None = None  # when set up, reads wait for it (a slow PostgreSQL)

    def write(self, recipient: str, n: int = 1) -> list[dict[str, Any]]:
        stream = self.events.setdefault(recipient, [])
        new = [{"seq": len(stream) + k + 1, "type": "test", "at": "", "data": {}} for k in range(n)]
        stream += new
        return new

    async def fetch_after(self, recipient: str, after: int, limit: int) -> list[dict[str, Any]]:
        if self.gate is not None:
            await self.gate.wait()
        return [m for m in self.events.get(recipient, []) if m["seq"] > after][:limit]

    async def latest(self, recipient: str) -> int:
        return len(self.events.get(recipient, []))

    async def latests(self, recipients: Sequence[str]) -> dict[str, int]:
        return {r: len(self.events[r]) for r in recipients if r in self.events}


class Client:
    """What the hub needs of a connection, its sends kept in a list (or refused when `full`)."""

    def __init__(self, recipient: str) -> None:
        self.recipient = recipient
        self.last_seq = 0
        self.delivery = asyncio.Lock()
        self.closed = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self.full = False
        self.room: int | None = None  # messages it takes before it is backlogged (None: no limit)

    def backlogged(self) -> bool:
        return self.room is not None and self.room <= 0

    def send(self, message: dict[str, Any] | bytes) -> bool:
        if self.room is not None:
            self.room -= 1
        if self.full:
            return False
        self.sent.append(orjson.loads(message) if isinstance(message, bytes) else message)
        return True

    @property
    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.sent]


class Channels:
    """Fan-out and Redis as far as the hub uses them; publishing fails while `down`."""

    def __init__(self) -> None:
        self.on_reconnect: list[Any] = []
        self.channels: dict[str, Any] = {}
        self.down = False
        self.published: list[tuple[str, bytes]] = []
        self.gate: asyncio.Event | None = None  # when set up, a PUBLISH waits for it (a slow Redis)

    def route_channel(self, channel: str, listener: Any) -> None:
        self.channels[channel] = listener

    async def publish(self, channel: str, data: bytes) -> None:
        if self.down:
            raise RedisConnectionError("Connection closed by server.")
        if self.gate is not None:
            await self.gate.wait()
        self.published.append((channel, data))


def _hub(outbox: Outbox, channels: Channels) -> Hub:
    return Hub(
        cast(Redis, channels),
        cast(Fanout, channels),
        outbox.fetch_after,
        outbox.latest,
        outbox.latests,
    )


async def _live(hub: Hub, recipient: str, message: dict[str, Any]) -> None:
    """A live event reaches the node; a gap's catch-up, which runs beside the listener, is waited for."""
    await hub._on_events(EVENTS_CHANNEL, event_batch([(recipient, message["seq"], orjson.dumps(message))]))
    await hub.catch_ups_done()


async def test_live_events_in_order_and_a_repeat_is_dropped() -> None:
    outbox, channels = Outbox(), Channels()
    hub, client = _hub(outbox, channels), Client("r")
    assert await hub.register(cast(Connection, client)) == 0
    for message in outbox.write("r", 2):
        await _live(hub, "r", message)
    await _live(hub, "r", outbox.events["r"][0])  # Redis delivered it twice
    assert client.seqs == [1, 2]


async def test_a_gap_is_filled_from_the_outbox_before_the_live_event() -> None:
    outbox, channels = Outbox(), Channels()
    hub, client = _hub(outbox, channels), Client("r")
    await hub.register(cast(Connection, client))
    outbox.write("r", 2)  # committed, never published
    (third,) = outbox.write("r")
    await _live(hub, "r", third)
    await _live(hub, "r", third)
    assert client.seqs == [1, 2, 3]


async def test_resuming_as_it_connects_then_live() -> None:
    outbox, channels = Outbox(), Channels()
    outbox.write("r", 5)
    hub, client = _hub(outbox, channels), Client("r")
    assert await hub.register(cast(Connection, client), after_seq=2) == 5
    (sixth,) = outbox.write("r")
    await _live(hub, "r", sixth)  # arrives before the catch-up: the gap brings 3..5 first
    await hub.catch_up(cast(Connection, client))
    assert client.seqs == [3, 4, 5, 6]


async def test_a_failed_publish_is_delivered_to_this_nodes_connections() -> None:
    outbox, channels = Outbox(), Channels()
    hub, here = _hub(outbox, channels), Client("r")
    await hub.register(cast(Connection, here))
    channels.down = True
    events = outbox.write("r", 2)
    assert await hub.publish([("r", e) for e in events]) is False
    assert here.seqs == [1, 2]
    assert hub.counts()["publish_failed"] == 1


async def test_the_sweep_finds_what_no_message_announced() -> None:
    outbox, channels = Outbox(), Channels()
    hub = _hub(outbox, channels)
    a, b, idle = Client("a"), Client("b"), Client("c")
    for client in (a, b, idle):
        await hub.register(cast(Connection, client))
    outbox.write("a", 3)  # another node committed these and died before publishing
    outbox.write("b", 1)
    assert await hub.sweep() == 2
    assert (a.seqs, b.seqs, idle.seqs) == ([1, 2, 3], [1], [])
    assert await hub.sweep() == 0


async def test_a_backlogged_client_catches_up_in_bursts_without_gaps() -> None:
    outbox, channels = Outbox(), Channels()
    hub, client = _hub(outbox, channels), Client("r")
    await hub.register(cast(Connection, client))
    outbox.write("r", 1200)  # it was away a long time
    client.room = 300
    await hub.resume(cast(Connection, client), 0)
    assert client.seqs == list(range(1, 301))  # a burst, then the rest is left for later
    (live,) = outbox.write("r")
    client.room = 300  # it read what it was sent
    await _live(hub, "r", live)  # the next event's gap brings the next burst, not the event itself yet
    assert client.seqs == list(range(1, 601))
    client.room = None
    assert await hub.sweep() == 1
    assert client.seqs == list(range(1, 1202))


async def test_a_client_that_cannot_take_more_is_not_sent_past_its_gap() -> None:
    outbox, channels = Outbox(), Channels()
    hub, client = _hub(outbox, channels), Client("r")
    await hub.register(cast(Connection, client))
    outbox.write("r", 3)
    client.full = True
    await hub.sweep()
    client.full = False
    await hub.sweep()
    assert client.seqs == [1, 2, 3]  # nothing skipped while it was full


async def test_a_resume_replays_from_the_outbox() -> None:
    outbox, channels = Outbox(), Channels()
    outbox.write("r", 4)
    hub, client = _hub(outbox, channels), Client("r")
    await hub.register(cast(Connection, client))
    assert await hub.resume(cast(Connection, client), 1) == 4
    assert client.seqs == [2, 3, 4]


async def test_after_redis_comes_back_clients_are_caught_up_beside_the_listener() -> None:
    """The catch-up after a reconnect does not hold the listener: with PostgreSQL slow to answer, another
    client's live event goes out at once, and the client behind gets everything, in order, afterwards."""
    outbox, channels = Outbox(), Channels()
    hub, behind, other = _hub(outbox, channels), Client("r"), Client("s")
    await hub.register(cast(Connection, behind))
    await hub.register(cast(Connection, other))
    outbox.write("r", 2)  # committed while the subscriber was away
    outbox.gate = asyncio.Event()
    (reconnected,) = channels.on_reconnect
    await asyncio.wait_for(reconnected(), 2.0)  # what the fan-out runs once it has resubscribed
    for _ in range(5):
        await asyncio.sleep(0)  # the catch-up is now waiting on the outbox
    (event,) = outbox.write("s")
    await hub._on_events(EVENTS_CHANNEL, event_batch([("s", 1, orjson.dumps(event))]))
    assert other.seqs == [1]
    (third,) = outbox.write("r")  # arrives while the catch-up waits: left to it
    await hub._on_events(EVENTS_CHANNEL, event_batch([("r", 3, orjson.dumps(third))]))
    outbox.gate.set()
    await hub.catch_ups_done()
    assert behind.seqs == [1, 2, 3]


async def test_the_commits_of_one_tick_share_one_publish_in_their_order() -> None:
    """Publishers of one loop tick share one PUBLISH; those that come while it is in flight share the next;
    another node hears every event once and in order."""
    outbox, channels = Outbox(), Channels()
    here, there, far = _hub(outbox, channels), _hub(outbox, Channels()), Client("r")
    await there.register(cast(Connection, far))
    channels.gate = asyncio.Event()
    first = [here.publish([("r", e) for e in outbox.write("r", n)]) for n in (2, 1, 3)]
    waiting = [asyncio.create_task(p) for p in first]
    for _ in range(3):
        await asyncio.sleep(0)  # the first PUBLISH is now in flight
    later = [asyncio.create_task(here.publish([("r", e) for e in outbox.write("r", n)])) for n in (1, 2)]
    await asyncio.sleep(0)
    channels.gate.set()
    assert await asyncio.gather(*waiting, *later) == [True] * 5
    assert [len(list(event_lines(data))) for _, data in channels.published] == [6, 3]
    for channel, data in channels.published:
        await there._on_events(channel, data)
    await there.catch_ups_done()
    assert far.seqs == list(range(1, 10))
    assert here.counts()["published"] == 9


async def test_a_publisher_cancelled_while_it_waits_leaves_the_others_theirs() -> None:
    outbox, channels = Outbox(), Channels()
    hub = _hub(outbox, channels)
    channels.gate = asyncio.Event()
    gone = asyncio.create_task(hub.publish([("r", e) for e in outbox.write("r")]))
    kept = asyncio.create_task(hub.publish([("r", e) for e in outbox.write("r")]))
    for _ in range(3):
        await asyncio.sleep(0)
    gone.cancel()
    channels.gate.set()
    assert await kept is True
    assert gone.cancelled()
    assert [seq for _, data in channels.published for _, seq, _ in event_lines(data)] == [1, 2]


async def test_a_stalled_redis_holds_no_publisher_long_and_its_queue_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "PUBLISH_WAIT_S", 0.01)
    monkeypatch.setattr(hub_module, "OUTBOUND_MAX", 3)
    outbox, channels = Outbox(), Channels()
    hub, here = _hub(outbox, channels), Client("r")
    await hub.register(cast(Connection, here))
    channels.gate = asyncio.Event()  # Redis takes the PUBLISH and does not answer
    assert await hub.publish([("r", e) for e in outbox.write("r", 2)]) is False  # its bound, not Redis's
    assert await hub.publish([("r", e) for e in outbox.write("r", 4)]) is False  # 4 queued, 3 kept
    assert here.seqs == [1, 2, 3, 4, 5, 6]  # this node's client had them at once
    assert hub.counts()["publish_dropped"] == 1
    channels.gate.set()
    await hub.catch_ups_done()
    assert [[seq for _, seq, _ in event_lines(data)] for _, data in channels.published] == [[1, 2], [4, 5, 6]]
