"""The connection hub of one node: local connections by recipient, fed from Redis and PostgreSQL.

Delivery per connection is exactly once, in order, without gaps: a live event whose seq is not the next one
expected starts a catch-up from PostgreSQL (the outbox), which sends it in its turn; an event already
delivered is dropped. The node's one Redis listener never waits on PostgreSQL: catch-ups run beside it, and
a live event for a connection being caught up is left to that catch-up, so a slow database delays only the
clients that are behind.

A node delivers its own commits' events to its own connections as it publishes them (its batches come back
from Redis marked as its own and are passed by); other nodes' come from Redis. A message lost on Redis never
leaves a connected client silent:
- when the node's Redis subscriber reconnects, every local connection is caught up from PostgreSQL;
- `sweep` (every few seconds) compares what each local connection has been sent with the latest seq in
  PostgreSQL and backfills the difference, which covers the rest: another node that could not publish, a
  node that died between commit and publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from websocket.connection import Connection
from websocket.fanout import Fanout
from websocket.protocol import (
    EVENTS_CHANNEL,
    LIVE_CHANNEL,
    event_batch,
    event_lines,
    live_batch,
    live_lines,
    origin_of,
)

log = logging.getLogger(__name__)

BACKFILL_PAGE = 500
# A committer waits this long at most for its events' PUBLISH: a Redis that stops answering (rather than
# refusing) would otherwise hold every write's response for its timeouts and retries. The publisher goes on
# trying; the outbox and the other nodes' sweeps cover what it never sends.
PUBLISH_WAIT_S = 1.0
# Events waiting for a stalled publisher beyond this are dropped, oldest first (the sweeps cover them).
OUTBOUND_MAX = 20_000

# (recipient, after_seq, limit) -> messages {"seq", "type", "at", "data"} in seq order
FetchAfter = Callable[[str, int, int], Awaitable[Sequence[dict[str, Any]]]]
# recipient -> the latest seq written for it (0 if none)
LatestSeq = Callable[[str], Awaitable[int]]
# recipients -> the latest seq written for each (absent: none)
LatestSeqs = Callable[[Sequence[str]], Awaitable[dict[str, int]]]


class Hub:
    def __init__(
        self,
        redis: Redis,
        fanout: Fanout,
        fetch_after: FetchAfter,
        latest_seq: LatestSeq,
        latest_seqs: LatestSeqs,
    ) -> None:
        self._redis = redis
        self._fetch_after = fetch_after
        self._latest_seq = latest_seq
        self._latest_seqs = latest_seqs
        # Plain counters (the node's metrics read them): events published, failed to publish, backfilled.
        self.published = 0
        self.publish_failures = 0
        self.publish_dropped = 0  # left unpublished while Redis stalled (other nodes sweep them)
        self.backfilled = 0
        self._local: dict[str, set[Connection]] = defaultdict(set)
        # Connections that missed a live event while their delivery lock was held (caught up on release),
        # and the catch-ups that gaps started.
        self._missed: set[Connection] = set()
        self.origin = secrets.token_hex(8).encode()  # this hub's id on the events channel
        self._catching_up: dict[Connection, asyncio.Task[None]] = {}
        self._recovery: asyncio.Task[None] | None = None
        # Events waiting for the node's one publisher, and the outcome their publishers wait for: the
        # commits of one loop tick share one PUBLISH (and one echo back), in the order they were made.
        self._outbound: list[tuple[str, int, bytes]] = []
        self._outbound_done: asyncio.Future[bool] | None = None
        self._publisher: asyncio.Task[None] | None = None
        fanout.route_channel(EVENTS_CHANNEL, self._on_events)
        fanout.route_channel(LIVE_CHANNEL, self._on_live)
        fanout.on_reconnect.append(self.catch_up_all)

    def counts(self) -> dict[str, int]:
        return {
            "published": self.published,
            "publish_failed": self.publish_failures,
            "publish_dropped": self.publish_dropped,
            "backfilled": self.backfilled,
        }

    def connections(self, recipient: str | None = None) -> list[Connection]:
        if recipient is not None:
            return list(self._local.get(recipient, ()))
        return [c for conns in self._local.values() for c in conns]

    def __len__(self) -> int:
        return sum(len(c) for c in self._local.values())

    async def register(self, conn: Connection, after_seq: int | None = None) -> int:
        """Add a connection and return the latest seq of its recipient.

        Without `after_seq` the connection receives events written after that point; with it, everything
        after `after_seq` (a client resuming as it connects: call `catch_up` once hello is sent, or let the
        first live event's gap bring the backfill). The delivery lock is held until the starting seq is
        set, so neither a live event nor a sweep can send anything before it."""
        async with conn.delivery:
            self._local[conn.recipient].add(conn)
            try:
                latest = await self._latest_seq(conn.recipient)
            except BaseException:
                await self.unregister(conn)
                raise
            conn.last_seq = latest if after_seq is None else min(after_seq, latest)
            if self._took_missed(conn):
                self._catch_up_soon(conn)  # runs once this lock is released (after the hello)
        return latest

    async def catch_up(self, conn: Connection) -> int:
        """Send the connection everything after what it has been sent; returns its last seq."""
        async with conn.delivery:
            await self._backfill(conn)
            return conn.last_seq

    async def unregister(self, conn: Connection) -> None:
        conns = self._local.get(conn.recipient)
        if conns is None:
            return
        conns.discard(conn)
        if not conns:
            del self._local[conn.recipient]
        self._missed.discard(conn)

    async def resume(self, conn: Connection, after_seq: int) -> int:
        """Replay everything after `after_seq` from PostgreSQL; live delivery continues after it."""
        async with conn.delivery:
            conn.last_seq = after_seq
            await self._backfill(conn)
            return conn.last_seq

    async def publish(self, events: Sequence[tuple[str, dict[str, Any]]]) -> bool:
        """Fast path after commit. Failure is logged, not raised: the outbox already holds the events, this
        node delivers them to its own connections now, and other nodes' sweeps find them."""
        if not events:
            return True
        encoded = [(recipient, message["seq"], orjson.dumps(message)) for recipient, message in events]
        # This node's own clients have them at once, not after a round trip through Redis (the batch says
        # it is ours, and `_on_events` passes it by).
        local = self._local
        for recipient, seq, data in encoded:
            conns = local.get(recipient)
            if conns:
                for conn in list(conns):
                    self._offer(conn, seq, data)
        self._outbound.extend(encoded)
        if (excess := len(self._outbound) - OUTBOUND_MAX) > 0:
            del self._outbound[:excess]
            self.publish_dropped += excess
        if self._outbound_done is None:
            self._outbound_done = asyncio.get_running_loop().create_future()
        done = self._outbound_done
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish_outbound(), name="publish-events")
        # Shielded: a publisher cancelled while it waits must not cancel the outcome the others wait for.
        try:
            return await asyncio.wait_for(asyncio.shield(done), PUBLISH_WAIT_S)
        except TimeoutError:
            return False

    async def _publish_outbound(self) -> None:
        done: asyncio.Future[bool] | None = None
        try:
            while self._outbound:
                await asyncio.sleep(0)  # the other commits of this tick join the batch
                batch, self._outbound = self._outbound, []
                done, self._outbound_done = self._outbound_done, None
                ok = await self._publish_batch(batch)
                if done is not None and not done.done():
                    done.set_result(ok)
        finally:
            self._publisher = None
            # Cancelled (the node stops): the events stay in the outbox, and their publishers go on.
            for waiting in (done, self._outbound_done):
                if waiting is not None and not waiting.done():
                    waiting.set_result(False)
            self._outbound_done = None

    async def _publish_batch(self, batch: list[tuple[str, int, bytes]]) -> bool:
        try:
            await self._redis.publish(EVENTS_CHANNEL, event_batch(batch, self.origin))
        except (RedisError, OSError) as exc:
            log.warning("could not publish %d event(s); other nodes sweep: %s", len(batch), exc)
            self.publish_failures += 1
            return False
        self.published += len(batch)
        return True

    async def publish_live(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> bool:
        """Volatile messages (no seq, not stored): lost ones are simply superseded by the next."""
        if not messages:
            return True
        batch = live_batch([(recipient, orjson.dumps(message)) for recipient, message in messages])
        try:
            await self._redis.publish(LIVE_CHANNEL, batch)
        except (RedisError, OSError) as exc:
            log.warning("could not publish %d live message(s): %s", len(messages), exc)
            return False
        return True

    async def _on_live(self, channel: str, data: bytes) -> None:
        """Every node hears every live message; each delivers the lines of its own clients."""
        local = self._local
        for recipient, message in live_lines(data):
            conns = local.get(recipient)
            if conns:
                for conn in list(conns):
                    conn.send(message)

    async def catch_up_all(self) -> None:
        """After Redis comes back, bring every local connection that is behind up to date from PostgreSQL: a
        sweep, in a task of its own, so that the listener goes back to delivering at once (if PostgreSQL
        cannot be read now, the periodic sweep does it later)."""
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover(), name="catch-up-after-redis")

    async def _recover(self) -> None:
        try:
            await self.sweep()
        except Exception as exc:
            log.warning("could not catch clients up after Redis came back (%s); the sweep will", exc)

    async def sweep(self) -> int:
        """Backfill every local connection that is behind the outbox; returns how many were behind.

        One query for all local recipients. An event committed elsewhere and not yet published may be
        found here first; its live copy is then dropped as a duplicate, as with any backfill."""
        recipients = list(self._local)
        if not recipients:
            return 0
        latest = await self._latest_seqs(recipients)
        behind = [
            conn
            for recipient in recipients
            for conn in list(self._local.get(recipient, ()))
            if latest.get(recipient, 0) > conn.last_seq
        ]
        for conn in behind:
            async with conn.delivery:
                await self._backfill(conn)
        return len(behind)

    async def _on_events(self, channel: str, data: bytes) -> None:
        """Every node hears every commit's events; each delivers the lines of its own clients (its own
        batches it delivered as it published them)."""
        if origin_of(data) == self.origin:
            return
        local = self._local
        for recipient, seq, message in event_lines(data):
            conns = local.get(recipient)
            if conns:
                for conn in list(conns):
                    self._offer(conn, seq, message)

    def _offer(self, conn: Connection, seq: int, data: bytes) -> None:
        """Deliver a live event now if it is the next one, never waiting: this runs in the node's one Redis
        listener, so a wait here (for PostgreSQL) would hold up every client of the node. A connection
        being caught up (its lock held) notes that it missed one and its catch-up reads on; a gap starts a
        catch-up of its own."""
        if conn.delivery.locked():
            self._missed.add(conn)
        elif seq == conn.last_seq + 1:
            if conn.send(data):
                conn.last_seq = seq
        elif seq > conn.last_seq:
            self._catch_up_soon(conn)

    def _catch_up_soon(self, conn: Connection) -> None:
        if conn not in self._catching_up:
            task = asyncio.create_task(self._catch_up_task(conn), name=f"catch-up-{conn.recipient}")
            self._catching_up[conn] = task
            task.add_done_callback(lambda _: self._catching_up.pop(conn, None))

    async def catch_ups_done(self) -> None:
        """Wait for the catch-ups that gaps and a Redis reconnect have started (they run beside the
        listener)."""
        while pending := [task for task in self._tasks() if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    def _tasks(self) -> list[asyncio.Task[None]]:
        return [
            *self._catching_up.values(),
            *([self._recovery] if self._recovery else []),
            *([self._publisher] if self._publisher else []),
        ]

    def _took_missed(self, conn: Connection) -> bool:
        """Whether a live event was left to this connection's catch-up since the last look (and forget it)."""
        missed = conn in self._missed
        self._missed.discard(conn)
        return missed

    async def _catch_up_task(self, conn: Connection) -> None:
        """A gap's catch-up; if PostgreSQL cannot be read, the next event's gap or the sweep tries again."""
        try:
            async with conn.delivery:
                await self._backfill(conn)
        except Exception as exc:
            log.warning("could not catch %s up yet (%s); the sweep will", conn.recipient, exc)
            log.debug("catch-up failure", exc_info=True)

    async def _backfill(self, conn: Connection) -> None:
        """Send events after conn.last_seq from PostgreSQL, in pages, until none is left, including the live
        ones that arrived meanwhile (the caller holds the delivery lock, so `_offer` left them to this). A
        client with half its bound unread gets the rest later, from the next event's gap or the sweep."""
        self._missed.discard(conn)
        while not conn.closed.is_set():
            page = await self._fetch_after(conn.recipient, conn.last_seq, BACKFILL_PAGE)
            for message in page:
                if conn.backlogged() or not conn.send(message):
                    return
                conn.last_seq = message["seq"]
                self.backfilled += 1
            if len(page) == BACKFILL_PAGE:
                continue
            # A live event missed during the last read may have been committed after it: read once more.
            if not self._took_missed(conn):
                return

    async def close_all(self, code: int, message: bytes) -> None:
        for task in self._tasks():
            task.cancel()
        for conn in self.connections():
            with contextlib.suppress(Exception):
                await conn.close(code, message)
