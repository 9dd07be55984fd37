"""Admin endpoints: create and update shops, catalogues, couriers and residents."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from dispatch.api.auth import principal
from dispatch.api.json import json_response, parse_body
from dispatch.api.keys import CLOCK, POOL, SETTINGS, ZONE_WORKERS
from dispatch.api.params import path_id, query_int
from dispatch.api.routing import RouteTable
from dispatch.api.zones import zone_changed
from dispatch.auth import Role, require_subject
from dispatch.errors import ValidationFailed, field_error
from dispatch.services import people, shops, zones
from dispatch.services.hours import validated_hours

routes = RouteTable("admin")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ShopIn(_Strict):
    name: str = Field(min_length=1, max_length=200)
    lat: float = Field(ge=-85, le=85, allow_inf_nan=False)
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False)
    zone: dict[str, Any] | None = Field(
        None, description="GeoJSON Polygon/MultiPolygon or {type: Circle, center, radius_m}"
    )
    opening_hours: dict[str, Any] | None = None
    prep_minutes: int = Field(15, ge=1, le=240)
    auto_accept: bool = False
    capacity: int = Field(20, ge=1, le=10000)


class ShopPatch(_Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    opening_hours: dict[str, Any] | None = None
    prep_minutes: int | None = Field(None, ge=1, le=240)
    auto_accept: bool | None = None
    capacity: int | None = Field(None, ge=1, le=10000)
    active: bool | None = None


class ItemIn(_Strict):
    name: str = Field(min_length=1, max_length=200)
    price_cents: int = Field(ge=0, le=10_000_000)
    stock: int = Field(ge=0, le=1_000_000)
    preorder_only: bool = False
    lead_minutes: int = Field(0, ge=0, le=60 * 24 * 14)


class CourierIn(_Strict):
    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=40)
    capacity: int = Field(4, ge=1, le=100)


class CourierPatch(_Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=40)
    # May be left out, but not null: a courier always has a capacity and is active or not.
    capacity: int = Field(None, ge=1, le=100)  # type: ignore[assignment]
    active: bool = None  # type: ignore[assignment]


class ResidentIn(_Strict):
    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=40)


class ResidentPatch(_Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    phone: str | None = Field(None, max_length=40)


def _set_fields(model: BaseModel) -> dict[str, Any]:
    return {k: v for k, v in model.model_dump(exclude_unset=True).items() if v is not None}


@routes.route("POST", "/v1/shops", summary="Create a shop", body=ShopIn, roles=("admin",))
async def create_shop(request: web.Request) -> web.Response:
    principal(request, Role.ADMIN)
    body = await parse_body(request, ShopIn)
    fields = body.model_dump(exclude={"zone"})
    fields["opening_hours"] = validated_hours(body.opening_hours)
    zone = await zones.prepare_off_loop(
        request.app[ZONE_WORKERS], body.zone, body.lat, body.lng, request.app[SETTINGS]
    )
    shop = await shops.create(request.app[POOL], fields, zone, request.app[CLOCK].now())
    await zone_changed(request, shop["id"])
    return json_response(shop, status=201)


@routes.route(
    "PATCH",
    "/v1/shops/{shop_id}",
    summary="Update a shop",
    body=ShopPatch,
    roles=("admin",),
    statuses=(404,),
)
async def patch_shop(request: web.Request) -> web.Response:
    principal(request, Role.ADMIN)
    shop_id = path_id(request, "shop_id", "shop")
    body = await parse_body(request, ShopPatch)
    fields = _set_fields(body)
    if "opening_hours" in fields:
        fields["opening_hours"] = validated_hours(fields["opening_hours"])
    shop = await shops.update(request.app[POOL], shop_id, fields, request.app[CLOCK].now())
    await zone_changed(request, shop_id)
    return json_response(shop)


@routes.route(
    "GET",
    "/v1/shops",
    summary="All shops, oldest first (admin)",
    roles=("admin",),
    query={"limit": "page size, 1-500 (default 100)", "offset": "rows to skip"},
)
async def list_shops(request: web.Request) -> web.Response:
    principal(request, Role.ADMIN)
    limit = query_int(request, "limit", 100, 1, 500)
    offset = query_int(request, "offset", 0, 0, 10_000_000)
    return json_response({"items": await shops.list_shops(request.app[POOL], limit, offset)})


@routes.route("GET", "/v1/shops/{shop_id}", summary="A shop", roles=("any",), statuses=(404,))
async def get_shop(request: web.Request) -> web.Response:
    principal(request)
    shop_id = path_id(request, "shop_id", "shop")
    return json_response(await shops.get(request.app[POOL], shop_id))


@routes.route(
    "PUT",
    "/v1/shops/{shop_id}/catalogue/{sku}",
    summary="Create or update a catalogue item",
    body=ItemIn,
    roles=("admin", "shop"),
    statuses=(404,),
)
async def put_item(request: web.Request) -> web.Response:
    who = principal(request, Role.ADMIN, Role.SHOP)
    shop_id = path_id(request, "shop_id", "shop")
    require_subject(who, Role.SHOP, shop_id)
    sku = request.match_info["sku"]
    body = await parse_body(request, ItemIn)
    if not 1 <= len(sku) <= 64 or not sku.isprintable():
        raise ValidationFailed(
            "sku must be 1 to 64 printable characters",
            details=[field_error(["sku"], "1 to 64 characters, no control characters (NUL, newline, ...)")],
        )
    item = await shops.upsert_item(request.app[POOL], shop_id, sku, body.model_dump())
    return json_response(item)


@routes.route(
    "GET",
    "/v1/shops/{shop_id}/catalogue",
    summary="A shop's catalogue",
    roles=("any",),
    statuses=(404,),
)
async def get_catalogue(request: web.Request) -> web.Response:
    principal(request)
    shop_id = path_id(request, "shop_id", "shop")
    return json_response({"items": await shops.catalogue(request.app[POOL], shop_id)})


def _people_routes(
    kind: str, role: Role, path: str, create_model: type[BaseModel], patch_model: type[BaseModel]
) -> None:
    prefix = "cou" if kind == "courier" else "res"

    async def create(request: web.Request) -> web.Response:
        principal(request, Role.ADMIN)
        body = await parse_body(request, create_model)
        made = await people.create(request.app[POOL], kind, body.model_dump(), request.app[CLOCK].now())
        return json_response(made, status=201)

    async def patch(request: web.Request) -> web.Response:
        principal(request, Role.ADMIN)
        entity_id = path_id(request, "id", prefix)
        body = await parse_body(request, patch_model)
        fields = body.model_dump(exclude_unset=True)
        if "name" in fields and fields["name"] is None:
            del fields["name"]
        updated = await people.update(request.app[POOL], kind, entity_id, fields, request.app[CLOCK].now())
        return json_response(updated)

    async def get(request: web.Request) -> web.Response:
        who = principal(request)
        entity_id = path_id(request, "id", prefix)
        require_subject(who, role, entity_id)
        return json_response(await people.get(request.app[POOL], kind, entity_id))

    routes.route("POST", path, summary=f"Create a {kind}", body=create_model, roles=("admin",))(create)
    routes.route(
        "PATCH",
        path + "/{id}",
        summary=f"Update a {kind}",
        body=patch_model,
        roles=("admin",),
        statuses=(404,),
    )(patch)
    routes.route(
        "GET",
        path + "/{id}",
        summary=f"A {kind} (admin or the {kind} itself)",
        roles=("admin", kind),
        statuses=(404,),
    )(get)


_people_routes("courier", Role.COURIER, "/v1/couriers", CourierIn, CourierPatch)
_people_routes("resident", Role.RESIDENT, "/v1/residents", ResidentIn, ResidentPatch)
