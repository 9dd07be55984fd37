"""A node's shared snapshot (`Refreshed`): read at most once per interval, one read at a time, the previous
value served while a new one is read, a failed read not kept."""

from __future__ import annotations

import asyncio

import pytest

from dispatch.services.refreshed import Refreshed


class Source:
    def __init__(self) -> None:
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def read(self) -> int:
        self.reads += 1
        await self.gate.wait()
        return self.reads


async def test_read_once_per_interval_and_again_when_forgotten() -> None:
    value, source = Refreshed[int](), Source()
    assert [await value.get(3600, source.read) for _ in range(3)] == [1, 1, 1]
    value.forget()
    assert await value.get(3600, source.read) == 2
    assert [await value.get(0, source.read) for _ in range(2)] == [3, 4]  # 0: a read each time


async def test_while_one_request_reads_the_others_take_the_previous_value() -> None:
    value, source = Refreshed[int](), Source()
    assert await value.get(3600, source.read) == 1
    value.forget()
    source.gate.clear()
    reading = asyncio.create_task(value.get(3600, source.read))
    await asyncio.sleep(0)
    # Forgotten, but being read: the others neither wait nor read too. (Forgetting drops the value, so
    # "previous" here is nothing: they wait for the one read.)
    waiting = asyncio.create_task(value.get(3600, source.read))
    await asyncio.sleep(0)
    assert not waiting.done() and source.reads == 2
    source.gate.set()
    assert (await reading, await waiting, source.reads) == (2, 2, 2)


async def test_an_old_value_is_served_during_its_refresh_but_not_with_no_interval() -> None:
    value, source = Refreshed[int](), Source()
    assert await value.get(0.05, source.read) == 1
    await asyncio.sleep(0.06)  # now too old
    source.gate.clear()
    reading = asyncio.create_task(value.get(0.05, source.read))
    await asyncio.sleep(0)
    assert await value.get(0.05, source.read) == 1  # the previous value, at once
    strict = asyncio.create_task(value.get(0, source.read))  # 0: never an old value; waits its turn
    await asyncio.sleep(0)
    assert not strict.done()
    source.gate.set()
    assert (await reading, await strict) == (2, 3)


async def test_a_failed_read_is_not_kept() -> None:
    value = Refreshed[int]()

    async def broken() -> int:
        raise ConnectionError("away")

    with pytest.raises(ConnectionError):
        await value.get(3600, broken)

    async def works() -> int:
        return 7

    assert await value.get(3600, works) == 7


async def test_a_slow_read_is_kept_ten_times_as_long_as_it_took() -> None:
    value, source = Refreshed[int](), Source()

    async def slow() -> int:
        await asyncio.sleep(0.2)
        return await source.read()

    assert await value.get(0.01, slow) == 1
    await asyncio.sleep(0.05)  # older than the 0.01 asked for, far younger than 10 x 0.2
    assert await value.get(0.01, slow) == 1
    assert await value.get(0, slow) == 2  # 0 still means every time
