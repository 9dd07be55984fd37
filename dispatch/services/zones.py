"""Delivery zones at the service layer: parse and cover with geo/, store zone and cells together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dispatch.config import Settings
from dispatch.db import Conn
from dispatch.errors import ValidationFailed, field_error
from geo import GeoError, ZoneError, ZoneLimits, cover_zone, parse_zone

DEFAULT_RADIUS_M = 2000.0


@dataclass(frozen=True)
class PreparedZone:
    geojson: dict[str, Any]
    interior: frozenset[int]
    edge: frozenset[int]

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
        cover = cover_zone(parsed.geometry, settings.h3_resolution)
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
    return PreparedZone(parsed.geojson, cover.interior, cover.edge)


async def write_cells(conn: Conn, shop_id: str, zone: PreparedZone) -> None:
    await conn.execute("DELETE FROM shop_cells WHERE shop_id = $1", shop_id)
    records = [(shop_id, c, True) for c in zone.interior] + [(shop_id, c, False) for c in zone.edge]
    await conn.copy_records_to_table("shop_cells", records=records, columns=["shop_id", "cell", "interior"])


# Cross-node invalidation: a node that changes a zone tells every node (itself included) on this channel;
# each reloads that shop's cover from PostgreSQL. "*" means reload everything (e.g. after `dispatch demo`).
CHANNEL = "dispatch:zones"


async def announce_change(app: Any, shop_id: str) -> None:
    from dispatch.api.keys import REDIS

    await app[REDIS].publish(CHANNEL, shop_id)


async def announce_reload(redis_url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        await client.publish(CHANNEL, "*")
    finally:
        await client.aclose()
