"""A value a node reads at most every so many wall seconds, one read at a time, shared by its requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
# A value that takes long to read is kept longer: reading it takes at most this share of the node's time.
READ_SHARE = 0.1


class Refreshed(Generic[T]):
    def __init__(self) -> None:
        self._value: T | None = None
        self._read_at = 0.0
        self._read_s = 0.0  # how long the last read took
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        """The next use reads again."""
        self._value = None

    async def get(self, max_age_s: float, read: Callable[[], Awaitable[T]]) -> T:
        """The value read less than `max_age_s` ago (or, when reading it took longer than a tenth of that,
        ten times the read's duration), else `read()`'s (0: read every time). While one request
        reads, the others take the previous value (or, if there is none yet, wait for the read rather than
        reading too); a failed read is not kept."""
        value = self._fresh(max_age_s)
        if value is not None:
            return value
        if max_age_s > 0 and self._value is not None and self._lock.locked():
            return self._value  # being read again: the previous value meanwhile, rather than a queue
        async with self._lock:
            value = self._fresh(max_age_s)
            if value is not None:
                return value  # read by the request this one waited behind
            started = time.monotonic()
            value = await read()
            self._value, self._read_at = value, time.monotonic()
            self._read_s = self._read_at - started
            return value

    def _fresh(self, max_age_s: float) -> T | None:
        if self._value is None or max_age_s <= 0:
            return None
        if time.monotonic() - self._read_at >= max(max_age_s, self._read_s / READ_SHARE):
            return None
        return self._value
