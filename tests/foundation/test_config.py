"""Settings from the environment, and the clock a replay runs the server on."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from dispatch.clock import ManualClock, ScaledClock, SystemClock, clock_from_settings
from dispatch.config import Settings
from dispatch.errors import StartupError


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.demo, s.offer_timeout_s) == ("127.0.0.1", 8080, True, 45.0)
    s = Settings.from_env({"DISPATCH_PORT": "9000", "DISPATCH_DEMO": "no", "DISPATCH_OFFER_TIMEOUT": "5"})
    assert (s.port, s.demo, s.offer_timeout_s) == (9000, False, 5.0)


@pytest.mark.parametrize(
    "env",
    [
        {"DISPATCH_PORT": "eighty"},
        {"DISPATCH_DEMO": "maybe"},
        {"DISPATCH_OFFER_TIMEOUT": "nan"},
        {"DISPATCH_DB_POOL_MAX": "0"},
        {"DISPATCH_CLOCK_START": "yesterday"},
        {"DISPATCH_CLOCK_START": "2026-01-01T00:00:00"},
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(StartupError, match=next(iter(env))):
        Settings.from_env(env)


def test_scaled_clocks_with_one_epoch_agree_across_processes() -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    epoch = time.time() - 10  # ten wall seconds ago
    a, b = ScaledClock(start, 60, epoch), ScaledClock(start, 60, epoch)
    assert abs((a.now() - b.now()).total_seconds()) < 1.0
    assert timedelta(minutes=9, seconds=59) <= a.now() - start <= timedelta(minutes=10, seconds=30)


def test_clock_from_settings() -> None:
    assert isinstance(clock_from_settings(1.0, None, None), SystemClock)
    assert isinstance(clock_from_settings(10.0, None, None), ScaledClock)


async def test_manual_clock_sleep_waits_for_advance() -> None:
    import asyncio

    clock = ManualClock()
    sleeper = asyncio.create_task(clock.sleep(30))
    await asyncio.sleep(0.01)
    clock.advance(29)
    await asyncio.sleep(0.01)
    assert not sleeper.done()
    clock.advance(1)
    await asyncio.wait_for(sleeper, 1)
