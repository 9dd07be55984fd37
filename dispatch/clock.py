"""One clock for the whole server (DESIGN.md: "One clock").

Everything that needs the time asks a `Clock`; nothing calls `datetime.now()` directly. Tests use
`ManualClock`, a replay uses `ScaledClock` so a recorded day runs faster than real time, deterministically.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of this clock's time."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to (tests). `sleep` returns once the clock has been advanced
    far enough, so background loops on this clock wait instead of spinning."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self.set(self._now + timedelta(seconds=seconds))

    def set(self, at: datetime) -> None:
        self._now = at
        waiting = []
        for due, future in self._sleepers:
            if due <= at:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((due, future))
        self._sleepers = waiting

    async def sleep(self, seconds: float) -> None:
        due = self._now + timedelta(seconds=seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((due, future))
        await future


class ScaledClock:
    """Runs `speed` times faster than the wall clock: at wall time `epoch` (Unix seconds) it reads `start`.

    Two processes given the same (start, speed, epoch) read the same time, so a replay client and the
    server it drives share one clock (speed 60: an instance minute per wall second)."""

    def __init__(self, start: datetime, speed: float, epoch: float | None = None) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        if start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        self.start = start
        self.speed = speed
        self.epoch = time.time() if epoch is None else epoch

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.epoch) * self.speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


def clock_from_settings(speed: float, start: datetime | None, epoch: float | None) -> Clock:
    """The system clock, unless a replay asked for a scaled one."""
    if speed == 1.0 and start is None:
        return SystemClock()
    return ScaledClock(start or datetime.now(UTC), speed, epoch)


def describe(clock: Clock) -> dict[str, object]:
    """The clock as another process needs it to run in step (`GET /v1/clock`): a scaled clock's start,
    speed and epoch, or speed 1 for wall time. `now` is what it reads."""
    now = clock.now()
    if isinstance(clock, ScaledClock):
        return {
            "now": now.isoformat(),
            "speed": clock.speed,
            "start": clock.start.isoformat(),
            "epoch": clock.epoch,
        }
    return {"now": now.isoformat(), "speed": 1.0, "start": None, "epoch": None}


def from_description(described: dict[str, object]) -> Clock:
    """A clock in step with the one `describe` described (a scaled one, or the system clock)."""
    start, speed, epoch = described.get("start"), described.get("speed"), described.get("epoch")
    if isinstance(start, str) and isinstance(speed, (int, float)) and isinstance(epoch, (int, float)):
        return ScaledClock(datetime.fromisoformat(start), float(speed), float(epoch))
    return SystemClock()
