"""Delivery zones and "who delivers here": a shop's zone, nearby shops, coverage."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from dispatch import views
from dispatch.api.operations import ANY, Call, Http, Id, Input, Operation, Query
from dispatch.auth import Role, require_subject
from dispatch.services import shops, zones


class ZoneIn(Input):
    """GeoJSON Polygon or MultiPolygon ([lng, lat] positions, holes allowed), or
    {"type": "Circle", "center": [lng, lat], "radius_m": 1500}."""

    model_config = ConfigDict(extra="allow", strict=True)
    # Checked with the rest of the zone (422 invalid_zone with the path ["zone", "type"]), so that every zone
    # error reads the same; the schema still says which types there are.
    type: str = Field(json_schema_extra={"enum": ["Polygon", "MultiPolygon", "Circle"]})


class PointQuery(Query):
    lat: float = Field(ge=-85, le=85, allow_inf_nan=False, description="latitude")
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False, description="longitude")


class NearbyQuery(PointQuery):
    limit: int = Field(20, ge=1, le=100, description="most shops returned")


SHOP = Id("shop_id", "shop")


async def put_zone(call: Call[ZoneIn]) -> dict[str, Any]:
    shop_id = call.ids["shop_id"]
    require_subject(call.principal(), Role.SHOP, shop_id)
    shop = await shops.get(call.svc.pool, shop_id)
    # Validation and the cover happen before anything is written: a bad zone changes nothing.
    zone = await zones.prepared(call.svc, call.raw, shop["lat"], shop["lng"])
    result = await shops.set_zone(call.svc.pool, shop_id, zone, call.svc.clock.now())
    await shops.changed(call.svc, shop_id)
    return result


async def get_zone(call: Call[Any]) -> dict[str, Any]:
    return await shops.get_zone(call.svc.pool, call.ids["shop_id"])


async def nearby(call: Call[Any]) -> dict[str, Any]:
    q = call.query
    assert isinstance(q, NearbyQuery)
    return {"lat": q.lat, "lng": q.lng, "shops": await shops.nearby(call.svc, q.lat, q.lng, q.limit)}


async def coverage(call: Call[Any]) -> dict[str, Any]:
    q = call.query
    assert isinstance(q, PointQuery)
    return await shops.coverage(call.svc, q.lat, q.lng)


OPERATIONS = (
    Operation(
        "zone.put",
        "Set a shop's delivery zone (GeoJSON Polygon/MultiPolygon or a circle; admin, or the shop itself)",
        "zones",
        put_zone,
        views.ZoneSet,
        roles=("admin", "shop"),
        input=ZoneIn,
        ids=(SHOP,),
        http=Http("PUT", "/v1/shops/{shop_id}/zone", errors=(422,)),
    ),
    Operation(
        "zone.get",
        "A shop's zone and its H3 cover's size",
        "zones",
        get_zone,
        views.Zone,
        roles=ANY,
        ids=(SHOP,),
        http=Http("GET", "/v1/shops/{shop_id}/zone"),
    ),
    Operation(
        "shops.nearby",
        "Open shops that deliver to a point, nearest first, with distance and travel minutes",
        "zones",
        nearby,
        views.Nearby,
        roles=ANY,
        query=NearbyQuery,
        http=Http("GET", "/v1/shops/nearby"),
    ),
    Operation(
        "coverage",
        "Whether any shop delivers to a point (and how many are open now)",
        "zones",
        coverage,
        views.Coverage,
        roles=ANY,
        query=PointQuery,
        http=Http("GET", "/v1/coverage"),
    ),
)
