"""This node's in-memory index of every active shop's delivery zone.

Built from PostgreSQL at start (stored covers, nothing recomputed), kept current by invalidation messages on
Redis (`zones.CHANNEL`), and resynced periodically from PostgreSQL in case a message was lost.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import asyncpg
import shapely

from dispatch.db import connection
from geo import Cover, ZoneIndex

log = logging.getLogger(__name__)

_SELECT = """SELECT s.id, s.lat, s.lng, c.zone_wkb, c.resolution, c.interior, c.edge
             FROM shops s JOIN shop_covers c ON c.shop_id = s.id
             WHERE s.active AND s.zone IS NOT NULL"""
_FINGERPRINT = "SELECT count(*), max(updated_at) FROM shops"


class ZoneDirectory:
    def __init__(self, pool: asyncpg.Pool, resolution: int) -> None:
        self._pool = pool
        self.resolution = resolution
        self.index = ZoneIndex(resolution)
        self._fingerprint: Any = None
        self.last_load_seconds = 0.0
        # One change at a time: a shop reloaded while a full load is under way would otherwise be lost when
        # the full load swaps in its index, built from an older snapshot.
        self._changing = asyncio.Lock()

    async def load_all(self) -> None:
        async with self._changing:
            await self._load_all()

    async def _load_all(self) -> None:
        started = time.perf_counter()
        # Millions of short-lived ints from the cover arrays would trigger many useless GC passes.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            async with connection(self._pool) as conn, conn.transaction(isolation="repeatable_read"):
                fingerprint = tuple(await conn.fetchrow(_FINGERPRINT) or ())
                rows = await conn.fetch(_SELECT)
            geometries = shapely.from_wkb([r["zone_wkb"] for r in rows]) if rows else []
            index = ZoneIndex(self.resolution)
            for row, geometry in zip(rows, geometries, strict=True):
                self._add(index, row, geometry)
        finally:
            if gc_was_enabled:
                gc.enable()
        self.index = index  # swap whole: queries never see a half-built index
        self._fingerprint = fingerprint
        self.last_load_seconds = time.perf_counter() - started
        log.info("zone index loaded", extra={"shops": len(rows), "seconds": round(self.last_load_seconds, 3)})

    async def reload_shop(self, shop_id: str) -> None:
        # The fingerprint is left alone: it may already count other shops' changes whose messages are still
        # on their way (or lost), and only a full load may claim to have seen them.
        async with self._changing:
            row = await self._pool.fetchrow(_SELECT + " AND s.id = $1", shop_id)
            if row is None:
                if shop_id in self.index:
                    self.index.remove(shop_id)
            else:
                self._add(self.index, row, shapely.from_wkb(row["zone_wkb"]))

    def _add(self, index: ZoneIndex, row: asyncpg.Record, geometry: Any) -> None:
        # A cover stored at another resolution (the setting changed) is recomputed by the index.
        cover = (
            Cover(frozenset(row["interior"]), frozenset(row["edge"]), row["resolution"])
            if row["resolution"] == self.resolution
            else None
        )
        index.set_zone(row["id"], geometry, cover=cover, location=(row["lat"], row["lng"]))

    async def on_message(self, channel: str, data: bytes) -> None:
        shop_id = data.decode()
        if shop_id == "*":
            await self.load_all()
        else:
            await self.reload_shop(shop_id)

    async def resync_forever(self, every_s: float = 30.0) -> None:
        """Reload everything when PostgreSQL shows changes the last full load has not seen (a lost message).
        Wall-clock seconds: this guards the transport, not business time, so a replay's fast clock must not
        turn it into a reload every tenth of a second."""
        while True:
            await asyncio.sleep(every_s)
            try:
                fingerprint = tuple(await self._pool.fetchrow(_FINGERPRINT) or ())
                if fingerprint != self._fingerprint:
                    await self.load_all()
            except (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                OSError,
            ) as exc:
                log.warning("zone index resync failed: %s: %s", type(exc).__name__, exc)
            except asyncio.CancelledError:
                raise
