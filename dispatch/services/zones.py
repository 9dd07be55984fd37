"""Delivery zones at the service layer: parse and cover with geo/, store zone and cover together.

Covering is CPU work (up to `DISPATCH_ZONE_MAX_CELLS` cells, a second or so): the server runs `prepare` in
its zone worker processes (`prepare_off_loop`), never on the event loop. `prepare` itself is pure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import shapely
from redis.asyncio import Redis
from redis.exceptions import RedisError

from dispatch.config import Settings
from dispatch.db import Conn
from dispatch.errors import ValidationFailed, field_error
from dispatch.redis_link import answered_within
from dispatch.services.context import Services
from dispatch.workers import ProcessWorkers
from geo import GeoError, ZoneError, ZoneLimits, cover_zone, parse_zone

log = logging.getLogger(__name__)
DEFAULT_RADIUS_M = 2000.0
# Cross-node invalidation: a node that changes a zone tells every node (itself included) on this channel;
# each reloads that shop from PostgreSQL. "*" means reload everything (e.g. after `dispatch demo`).
CHANNEL = "dispatch:zones"
ANNOUNCE_WAIT_S = 1.0  # after the commit: a Redis that hangs must not hold the answer


@dataclass(frozen=True)
class PreparedZone:
    geojson: dict[str, Any]
    resolution: int
    interior: frozenset[int]
    edge: frozenset[int]
    wkb: bytes

    @property
    def cell_count(self) -> int:
        return len(self.interior) + len(self.edge)


def limits(settings: Settings) -> ZoneLimits:
    return ZoneLimits(max_area_km2=settings.zone_max_area_km2, max_vertices=settings.zone_max_vertices)


def prepare(
    zone: dict[str, Any] | None, lat: float, lng: float, settings: Settings, path: str = "zone"
) -> PreparedZone:
    """Validate and cover a zone; no zone means a circle of DEFAULT_RADIUS_M around the shop."""
    obj = zone if zone is not None else {"type": "Circle", "center": [lng, lat], "radius_m": DEFAULT_RADIUS_M}
    try:
        parsed = parse_zone(obj, limits(settings))
        cover = cover_zone(parsed, settings.h3_resolution, max_cells=settings.zone_max_cells)
    except ZoneError as exc:
        raise ValidationFailed(
            f"{path} is not a valid delivery zone: {exc.message}",
            code="invalid_zone",
            details=[field_error([path, *exc.path], exc.message, exc.code)],
        ) from None
    except GeoError as exc:
        raise ValidationFailed(
            f"{path} is not a valid delivery zone: {exc}",
            code="invalid_zone",
            details=[field_error([path], str(exc), "invalid_zone")],
        ) from None
    wkb = shapely.to_wkb(parsed.geometry)
    return PreparedZone(parsed.geojson, settings.h3_resolution, cover.interior, cover.edge, wkb)


async def prepare_off_loop(
    workers: ProcessWorkers,
    zone: dict[str, Any] | None,
    lat: float,
    lng: float,
    settings: Settings,
    path: str = "zone",
) -> PreparedZone:
    """`prepare` in a zone worker process: 422 as `prepare`, 503 when the workers are all busy."""
    return await workers.run(prepare, zone, lat, lng, settings, path)


def zone_workers(settings: Settings) -> ProcessWorkers:
    return ProcessWorkers(settings.zone_workers, settings.zone_queue, preload=[__name__], what="zone changes")


async def write_zone(conn: Conn, shop_id: str, zone: PreparedZone) -> None:
    """Store a shop's zone and its cover in the caller's transaction."""
    await conn.execute("UPDATE shops SET zone = $2 WHERE id = $1", shop_id, zone.geojson)
    await conn.execute(
        """INSERT INTO shop_covers (shop_id, resolution, interior, edge, zone_wkb) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (shop_id) DO UPDATE SET resolution = EXCLUDED.resolution,
               interior = EXCLUDED.interior, edge = EXCLUDED.edge, zone_wkb = EXCLUDED.zone_wkb""",
        shop_id,
        zone.resolution,
        sorted(zone.interior),
        sorted(zone.edge),
        zone.wkb,
    )


async def announce(redis: Redis, shop_id: str) -> None:
    """Tell every node to reload this shop. Best effort: nodes also resync periodically from PostgreSQL."""
    try:
        async with answered_within(ANNOUNCE_WAIT_S):
            await redis.publish(CHANNEL, shop_id)
    except (RedisError, OSError) as exc:
        log.warning("could not announce zone change of %s: %s", shop_id, exc)


async def announce_reload(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.publish(CHANNEL, "*")
    finally:
        await client.aclose()


async def prepared(svc: Services, zone: dict[str, Any] | None, lat: float, lng: float) -> PreparedZone:
    """A zone validated and covered, in a zone worker, for a shop at (lat, lng) (none: the default circle)."""
    return await prepare_off_loop(svc.zone_workers, zone, lat, lng, svc.settings)
