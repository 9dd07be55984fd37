"""A node's zone index catches up from PostgreSQL when invalidation messages are lost, even when other
shops' messages did arrive in between."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from dispatch.api.keys import RUNTIME, SETTINGS
from dispatch.services.zone_directory import ZoneDirectory
from tests.orders.helpers import square
from tests.timing import MS
from tests.zones.test_zone_api import CENTRE, Client, make_shop


async def test_a_lost_message_is_recovered_although_a_later_one_arrived(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin = auth("admin")
    # A directory that hears no Redis messages at all: only what it is told below.
    directory = ZoneDirectory(client.app[RUNTIME].services.pool, client.app[SETTINGS].h3_resolution)
    await directory.load_all()
    lost = await make_shop(client, admin, zone=square(*CENTRE, 0.005))  # its message never comes
    heard = await make_shop(client, admin, zone=square(*CENTRE, 0.004))
    await directory.reload_shop(heard["id"])  # this one's message does
    assert heard["id"] in directory.index and lost["id"] not in directory.index
    resync = asyncio.create_task(directory.resync_forever(every_s=0.05))
    try:
        for _ in range(100):
            if lost["id"] in directory.index:
                break
            await asyncio.sleep(50 * MS)
        assert lost["id"] in directory.index
        assert heard["id"] in directory.index
    finally:
        resync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resync


async def test_shop_reloads_during_a_full_load_are_not_lost(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin = auth("admin")
    directory = ZoneDirectory(client.app[RUNTIME].services.pool, client.app[SETTINGS].h3_resolution)
    shops = [await make_shop(client, admin, zone=square(*CENTRE, 0.002 + 0.001 * k)) for k in range(4)]
    # Full loads and single reloads interleaved in every order the event loop picks: each shop ends up in.
    await asyncio.gather(*(f for s in shops for f in (directory.load_all(), directory.reload_shop(s["id"]))))
    assert all(s["id"] in directory.index for s in shops)
