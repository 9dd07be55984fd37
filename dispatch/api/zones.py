"""Delivery zones and "who delivers here": zone get/set, nearby shops, coverage."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from dispatch.api.auth import principal
from dispatch.api.json import json_response, read_json
from dispatch.api.keys import CLOCK, POOL, REDIS, SETTINGS, ZONE_WORKERS, ZONES
from dispatch.api.params import path_id, query_float, query_int
from dispatch.api.routing import RouteTable
from dispatch.auth import Role, require_subject
from dispatch.errors import ValidationFailed, field_error
from dispatch.services import shops, zones
from geo import TravelModel, haversine_m

routes = RouteTable("zones")


class ZoneIn(BaseModel):
    """GeoJSON Polygon or MultiPolygon ([lng, lat] positions, holes allowed), or
    {"type": "Circle", "center": [lng, lat], "radius_m": 1500}."""

    model_config = ConfigDict(extra="allow")
    type: str


@routes.route(
    "PUT",
    "/v1/shops/{shop_id}/zone",
    summary="Set a shop's delivery zone (GeoJSON Polygon/MultiPolygon or a circle)",
    body=ZoneIn,
    roles=("admin", "shop"),
    statuses=(404,),
)
async def put_zone(request: web.Request) -> web.Response:
    who = principal(request, Role.ADMIN, Role.SHOP)
    shop_id = path_id(request, "shop_id", "shop")
    require_subject(who, Role.SHOP, shop_id)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed(
            "the zone must be a JSON object",
            details=[field_error([], "expected a GeoJSON Polygon, MultiPolygon or a Circle", "type")],
        )
    pool = request.app[POOL]
    shop = await shops.get(pool, shop_id)
    # Validation and the cover happen before anything is written (off the event loop); a bad zone changes
    # nothing.
    zone = await zones.prepare_off_loop(
        request.app[ZONE_WORKERS], body, shop["lat"], shop["lng"], request.app[SETTINGS], path="zone"
    )
    result = await shops.set_zone(pool, shop_id, zone, request.app[CLOCK].now())
    await zone_changed(request, shop_id)
    return json_response(result)


@routes.route(
    "GET", "/v1/shops/{shop_id}/zone", summary="A shop's zone and cell count", roles=("any",), statuses=(404,)
)
async def get_zone(request: web.Request) -> web.Response:
    principal(request)
    shop_id = path_id(request, "shop_id", "shop")
    return json_response(await shops.get_zone(request.app[POOL], shop_id))


def _point(request: web.Request) -> tuple[float, float]:
    return query_float(request, "lat", -85.0, 85.0), query_float(request, "lng", -180.0, 180.0)


@routes.route(
    "GET",
    "/v1/shops/nearby",
    summary="Open shops that deliver to a point, nearest first, with distance and travel minutes",
    query={"lat": "latitude", "lng": "longitude", "limit": "1-100 (default 20)"},
    roles=("any",),
)
async def nearby(request: web.Request) -> web.Response:
    principal(request)
    lat, lng = _point(request)
    limit = query_int(request, "limit", 20, 1, 100)
    settings = request.app[SETTINGS]
    delivering = request.app[ZONES].index.shops_delivering_to(lat, lng)
    open_rows = await shops.open_shops_at(request.app[POOL], delivering, request.app[CLOCK].now())
    travel = TravelModel(settings.speed_m_per_min, settings.detour_factor, round_up=settings.travel_round_up)
    found: list[dict[str, Any]] = []
    for shop_id, row in open_rows.items():
        distance = haversine_m(lat, lng, row["lat"], row["lng"])
        found.append(
            {
                "shop_id": shop_id,
                "name": row["name"],
                "lat": row["lat"],
                "lng": row["lng"],
                "distance_m": round(distance, 1),
                "travel_minutes": round(travel.minutes_for_distance(distance), 1),
                "prep_minutes": row["prep_minutes"],
            }
        )
    found.sort(key=lambda s: (s["distance_m"], s["shop_id"]))
    return json_response({"lat": lat, "lng": lng, "shops": found[:limit]})


@routes.route(
    "GET",
    "/v1/coverage",
    summary="Whether any shop delivers to a point (and how many are open now)",
    query={"lat": "latitude", "lng": "longitude"},
    roles=("any",),
)
async def coverage(request: web.Request) -> web.Response:
    principal(request)
    lat, lng = _point(request)
    delivering = request.app[ZONES].index.shops_delivering_to(lat, lng)
    open_rows = await shops.open_shops_at(request.app[POOL], delivering, request.app[CLOCK].now())
    return json_response(
        {
            "lat": lat,
            "lng": lng,
            "covered": bool(delivering),
            "shops_delivering": len(delivering),
            "shops_open_now": len(open_rows),
        }
    )


async def zone_changed(request: web.Request, shop_id: str) -> None:
    """This node sees the change before it answers (read your writes); the others hear it on Redis."""
    await request.app[ZONES].reload_shop(shop_id)
    await zones.announce(request.app[REDIS], shop_id)
