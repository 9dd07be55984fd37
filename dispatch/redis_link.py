"""The node's Redis client, configured for a Redis that restarts and fails over."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

HEALTH_CHECK_S = 15
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0


def open_redis(url: str) -> Redis:
    """A client whose commands and pipelines retry twice on a broken connection.

    After Redis restarts, every pooled connection is stale; without the retry the first pipeline on each
    fails ("Connection closed by server") although Redis is back. A retried command may run twice: every
    write we send is idempotent or guarded (publishes carry seqs, pings carry their time)."""
    return Redis.from_url(
        url,
        health_check_interval=HEALTH_CHECK_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=COMMAND_TIMEOUT_S,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


@contextlib.asynccontextmanager
async def answered_within(seconds: float) -> AsyncIterator[None]:
    """Bound a call on Redis, raising redis' TimeoutError past `seconds`.

    A Redis that stops answering without refusing (a partition, a paused machine) holds a command through the
    client's socket timeout on the command, on the reconnect's handshake and on each retry: measured, about
    seven COMMAND_TIMEOUT_S. Calls that someone waits for are bounded here instead. The client drops the
    connection of a cancelled command, so no late reply is read by the next one."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise RedisTimeoutError(f"no answer from Redis within {seconds:g} s") from exc
