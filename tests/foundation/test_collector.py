"""The served process's garbage collector: start-up's long-lived objects set aside once the node is ready."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
from aiohttp import web

from dispatch.api.keys import STARTUP
from dispatch.serve import GC_YOUNG_THRESHOLD, _tune_collector_when_ready
from dispatch.startup import StartupState


@pytest.fixture
def collector() -> Iterator[None]:
    """Put this test process's collector back as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


async def test_start_up_objects_are_set_aside_once_the_node_is_ready(collector: None) -> None:
    app = web.Application()
    app[STARTUP] = StartupState()
    before = gc.get_threshold()
    tuning = asyncio.create_task(_tune_collector_when_ready(app))
    await asyncio.sleep(0.05)
    # Not before ready: start-up is still building what should be set aside.
    assert not tuning.done()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before

    long_lived = [[n] for n in range(1000)]  # lists: objects the collector tracks
    app[STARTUP].ready.set()
    await asyncio.wait_for(tuning, 5)

    assert gc.get_freeze_count() >= len(long_lived)
    # Set aside: in no generation the collector walks any more.
    walked = {id(o) for o in gc.get_objects()}
    assert not any(id(o) in walked for o in long_lived)
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
