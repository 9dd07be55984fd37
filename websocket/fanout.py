"""Cross-node fan-out over Redis pub/sub: one subscriber connection per node.

Redis is only the fast path. When the subscriber loses Redis it reconnects with backoff, re-subscribes, and
calls `on_reconnect` so that listeners can catch up from PostgreSQL on what was published meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Listener = Callable[[str, bytes], Awaitable[None]]
CONTROL_CHANNEL = "dispatch:control"
MAX_BACKOFF_S = 0.5


class Fanout:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._channels: dict[str, Listener] = {}
        self._subscriptions: set[str] = {CONTROL_CHANNEL}
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._task: asyncio.Task[None] | None = None
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self.connected = asyncio.Event()

    def route_channel(self, channel: str, listener: Listener) -> None:
        """Messages on `channel` go to `listener`, subscribed from `start` on."""
        self._channels[channel] = listener
        self._subscriptions.add(channel)

    async def subscribe(self, channel: str, listener: Listener | None = None) -> None:
        if listener is not None:
            self._channels[channel] = listener
        self._subscriptions.add(channel)
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.subscribe(channel)

    async def start(self) -> None:
        await self._pubsub.subscribe(*self._subscriptions)
        self.connected.set()
        self._task = asyncio.create_task(self._run(), name="redis-fanout")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self.connected.is_set():
                await asyncio.sleep(backoff)
                # Capped low: clients are caught up when the subscriber is back, so it must notice soon.
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                await self._resubscribe()
                continue
            try:
                message = await self._pubsub.get_message(timeout=1.0)
                backoff = 0.1
            except (RedisError, OSError, RuntimeError) as exc:
                # RuntimeError: redis-py's "pubsub connection not set" after a failed reconnect.
                self.connected.clear()
                log.warning("lost Redis pub/sub (%s); reconnecting", exc)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode()
            listener = self._channels.get(channel)
            if listener is not None:
                try:
                    await listener(channel, message["data"])
                except Exception as exc:
                    # Most likely PostgreSQL away while a listener reads it; the sweep catches up later.
                    log.warning("fan-out listener failed on %s: %s: %s", channel, type(exc).__name__, exc)
                    log.debug("fan-out listener failure", exc_info=True)

    async def _resubscribe(self) -> None:
        try:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(*self._subscriptions)
        except (RedisError, OSError, RuntimeError):
            return
        self.connected.set()
        log.info("Redis pub/sub reconnected")
        for callback in self.on_reconnect:
            try:
                await callback()
            except Exception as exc:
                log.warning("reconnect callback failed: %s: %s", type(exc).__name__, exc)
                log.debug("reconnect callback failure", exc_info=True)
