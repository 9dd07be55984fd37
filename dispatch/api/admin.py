"""Shops, catalogues, couriers and residents: created and changed by operators, read by whoever may."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from dispatch import views
from dispatch.api.operations import ANY, Call, Http, Id, Input, Int, Operation, Query
from dispatch.auth import Role, require_subject
from dispatch.errors import ValidationFailed, field_error
from dispatch.services import people, shops, zones
from dispatch.services.hours import validated_hours

Name = Field(min_length=1, max_length=200)
Clock = Annotated[
    str, Field(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", description="HH:MM, or 24:00")
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class OpeningHoursIn(Input):
    """Local wall-clock hours: an interval [open, close) may cross midnight; a missing day is closed."""

    tz: str = Field("UTC", min_length=1, max_length=64, description="IANA time zone, e.g. Europe/Paris")
    weekly: dict[Weekday, list[Annotated[list[Clock], Field(min_length=2, max_length=2)]]] = Field(
        default_factory=dict, description='{"mon": [["08:00", "20:00"]], ...}'
    )
    closed_dates: list[Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]] = Field(
        default_factory=list, max_length=1000, description="YYYY-MM-DD"
    )


class ShopIn(Input):
    name: str = Name
    lat: float = Field(ge=-85, le=85, allow_inf_nan=False)
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False)
    zone: dict[str, Any] | None = Field(
        None, description="GeoJSON Polygon/MultiPolygon or {type: Circle, center, radius_m}; default 2 km"
    )
    opening_hours: OpeningHoursIn | None = Field(None, description="default: always open")
    prep_minutes: Int = Field(15, ge=1, le=240)
    auto_accept: bool = False
    capacity: Int = Field(20, ge=1, le=10000)


class ShopPatch(Input):
    """Only the fields given change; none may be null."""

    name: str = Field(None, min_length=1, max_length=200)  # type: ignore[assignment]
    opening_hours: OpeningHoursIn = None  # type: ignore[assignment]
    prep_minutes: Int = Field(None, ge=1, le=240)  # type: ignore[assignment]
    auto_accept: bool = None  # type: ignore[assignment]
    capacity: Int = Field(None, ge=1, le=10000)  # type: ignore[assignment]
    active: bool = None  # type: ignore[assignment]


class ItemIn(Input):
    name: str = Name
    price_cents: Int = Field(ge=0, le=10_000_000)
    stock: Int = Field(ge=0, le=1_000_000)
    preorder_only: bool = False
    lead_minutes: Int = Field(0, ge=0, le=60 * 24 * 14)


class CourierIn(Input):
    name: str = Name
    phone: str | None = Field(None, max_length=40)
    capacity: Int = Field(4, ge=1, le=100)


class CourierPatch(Input):
    """Only the fields given change; `phone` may be null (removed), the others not."""

    name: str = Field(None, min_length=1, max_length=200)  # type: ignore[assignment]
    phone: str | None = Field(None, max_length=40)
    capacity: Int = Field(None, ge=1, le=100)  # type: ignore[assignment]
    active: bool = None  # type: ignore[assignment]


class ResidentIn(Input):
    name: str = Name
    phone: str | None = Field(None, max_length=40)


class ResidentPatch(Input):
    """Only the fields given change; `phone` may be null (removed), `name` not."""

    name: str = Field(None, min_length=1, max_length=200)  # type: ignore[assignment]
    phone: str | None = Field(None, max_length=40)


class ShopsQuery(Query):
    limit: int = Field(100, ge=1, le=500, description="page size")
    offset: int = Field(0, ge=0, le=10_000_000, description="shops to skip")


class PageQuery(Query):
    limit: int = Field(100, ge=1, le=500, description="page size")
    cursor: str | None = Field(None, max_length=200, description="from the previous page's `next`")


SHOP = Id("shop_id", "shop")
COURIER = Id("courier_id", "cou")
RESIDENT = Id("resident_id", "res")


def _given(model: BaseModel) -> dict[str, Any]:
    """The fields a PATCH sent (a null one is refused by the model before this), each whole."""
    return model.model_dump(include=set(model.model_fields_set))


async def create_shop(call: Call[ShopIn]) -> dict[str, Any]:
    body = call.input
    fields = body.model_dump(exclude={"zone"})
    fields["opening_hours"] = validated_hours(fields["opening_hours"])
    zone = await zones.prepared(call.svc, body.zone, body.lat, body.lng)
    shop = await shops.create(call.svc.pool, fields, zone, call.svc.clock.now())
    await shops.changed(call.svc, shop["id"])
    return shop


async def patch_shop(call: Call[ShopPatch]) -> dict[str, Any]:
    fields = _given(call.input)
    if "opening_hours" in fields:
        fields["opening_hours"] = validated_hours(fields["opening_hours"])
    shop = await shops.update(call.svc.pool, call.ids["shop_id"], fields, call.svc.clock.now())
    await shops.changed(call.svc, call.ids["shop_id"])
    return shop


async def list_shops(call: Call[Any]) -> dict[str, Any]:
    q = call.query
    assert isinstance(q, ShopsQuery)
    return {"items": await shops.list_shops(call.svc.pool, q.limit, q.offset)}


async def get_shop(call: Call[Any]) -> dict[str, Any]:
    return await shops.get(call.svc.pool, call.ids["shop_id"])


async def put_item(call: Call[ItemIn]) -> dict[str, Any]:
    require_subject(call.principal(), Role.SHOP, call.ids["shop_id"])
    sku = call.ids["sku"]
    return await shops.upsert_item(call.svc.pool, call.ids["shop_id"], sku, call.input.model_dump())


async def catalogue(call: Call[Any]) -> dict[str, Any]:
    return {"items": await shops.catalogue(call.svc.pool, call.ids["shop_id"])}


class Sku(Id):
    """A catalogue item's SKU: the shop's own name for it, 1 to 64 printable characters."""

    def check(self, value: object) -> str:
        if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.isprintable():
            raise ValidationFailed(
                "sku must be 1 to 64 printable characters",
                details=[field_error(["sku"], "1 to 64 characters, no control characters", "sku")],
            )
        return value


SKU = Sku("sku", "sku")


def _people(
    kind: str, role: Role, ident: Id, create_in: type[Input], patch_in: type[Input]
) -> tuple[Operation, ...]:
    path = f"/v1/{kind}s"
    view = views.Courier if kind == "courier" else views.Resident
    listing = views.Couriers if kind == "courier" else views.Residents

    async def create(call: Call[Any]) -> dict[str, Any]:
        return await people.create(call.svc.pool, kind, call.input.model_dump(), call.svc.clock.now())

    async def patch(call: Call[Any]) -> dict[str, Any]:
        now = call.svc.clock.now()
        return await people.update(call.svc.pool, kind, call.ids[ident.name], _given(call.input), now)

    async def get(call: Call[Any]) -> dict[str, Any]:
        require_subject(call.principal(), role, call.ids[ident.name])
        return await people.get(call.svc.pool, kind, call.ids[ident.name])

    async def page(call: Call[Any]) -> dict[str, Any]:
        q = call.query
        assert isinstance(q, PageQuery)
        items, next_cursor = await people.page_of(call.svc.pool, kind, q.limit, q.cursor)
        return {"items": items, "next": next_cursor}

    item = "{" + ident.name + "}"
    return (
        Operation(
            f"{kind}.create",
            f"Create a {kind}",
            "people",
            create,
            view,
            roles=("admin",),
            input=create_in,
            http=Http("POST", path, 201),
            creates=ident,
        ),
        Operation(
            f"{kind}.update",
            f"Update a {kind}",
            "people",
            patch,
            view,
            roles=("admin",),
            input=patch_in,
            ids=(ident,),
            http=Http("PATCH", f"{path}/{item}"),
        ),
        Operation(
            f"{kind}.get",
            f"A {kind} (admin, or the {kind} itself)",
            "people",
            get,
            view,
            roles=("admin", kind),
            ids=(ident,),
            http=Http("GET", f"{path}/{item}"),
        ),
        Operation(
            f"{kind}s.list",
            f"All {kind}s, oldest first, a page at a time",
            "people",
            page,
            listing,
            roles=("admin",),
            query=PageQuery,
            http=Http("GET", path, errors=(422,)),
        ),
    )


OPERATIONS = (
    Operation(
        "shop.create",
        "Create a shop (with its zone: a 2 km circle if none is given)",
        "shops",
        create_shop,
        views.Shop,
        roles=("admin",),
        input=ShopIn,
        http=Http("POST", "/v1/shops", 201, errors=(422,)),
        creates=SHOP,
    ),
    Operation(
        "shop.update",
        "Update a shop",
        "shops",
        patch_shop,
        views.Shop,
        roles=("admin",),
        input=ShopPatch,
        ids=(SHOP,),
        http=Http("PATCH", "/v1/shops/{shop_id}", errors=(422,)),
    ),
    Operation(
        "shops.list",
        "All shops, oldest first",
        "shops",
        list_shops,
        views.Shops,
        roles=("admin",),
        query=ShopsQuery,
        http=Http("GET", "/v1/shops"),
    ),
    Operation(
        "shop.get",
        "A shop",
        "shops",
        get_shop,
        views.Shop,
        roles=ANY,
        ids=(SHOP,),
        http=Http("GET", "/v1/shops/{shop_id}"),
    ),
    Operation(
        "catalogue.put",
        "Create or update a catalogue item (admin, or the shop itself)",
        "shops",
        put_item,
        views.CatalogueItem,
        roles=("admin", "shop"),
        input=ItemIn,
        ids=(SHOP, SKU),
        http=Http("PUT", "/v1/shops/{shop_id}/catalogue/{sku}"),
    ),
    Operation(
        "catalogue.get",
        "A shop's catalogue",
        "shops",
        catalogue,
        views.Catalogue,
        roles=ANY,
        ids=(SHOP,),
        http=Http("GET", "/v1/shops/{shop_id}/catalogue"),
    ),
    *_people("courier", Role.COURIER, COURIER, CourierIn, CourierPatch),
    *_people("resident", Role.RESIDENT, RESIDENT, ResidentIn, ResidentPatch),
)
