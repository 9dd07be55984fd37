"""What the operator console needs beyond the listings: an order's timeline, the dispatch rounds, the
headline figures, the live routes, moving work to another courier; and what every app uses to draw its map
(the area the shops cover, a zone's H3 cells) and a shop's own availability switch."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dispatch import views
from dispatch.api.operations import ANY, Call, Http, Id, Input, Operation, Query
from dispatch.auth import Role, require_subject
from dispatch.services import console, moves, shops

COURIER_ID = r"^cou_[a-z2-7]{16}$"


class MoveIn(Input):
    courier_id: str = Field(pattern=COURIER_ID, description="the courier to give the work to (on shift)")


class AvailabilityIn(Input):
    active: bool = Field(description="false: no new orders (the shop's zone stops answering for it)")


class RoundsQuery(Query):
    limit: int = Field(20, ge=1, le=200, description="most rounds returned")
    busy: bool = Field(False, description="only rounds that had work waiting or gave work back")


class RoutesQuery(Query):
    courier_id: str | None = Field(None, max_length=40, description="only this courier's")


ORDER = Id("order_id", "ord")
JOB = Id("job_id", "job")
ROUTE = Id("route_id", "rte")
SHOP = Id("shop_id", "shop")


async def timeline(call: Call[Any]) -> dict[str, Any]:
    return await console.timeline(call.svc, call.ids["order_id"])


async def rounds(call: Call[Any]) -> dict[str, Any]:
    q = call.query
    assert isinstance(q, RoundsQuery)
    return {"items": await console.rounds(call.svc, q.limit, q.busy)}


async def headline(call: Call[Any]) -> dict[str, Any]:
    return await console.headline(call.svc)


async def live_routes(call: Call[Any]) -> dict[str, Any]:
    q = call.query
    assert isinstance(q, RoutesQuery)
    return {"items": await console.live_routes(call.svc, q.courier_id)}


async def move_job(call: Call[MoveIn]) -> dict[str, Any]:
    return await moves.move_jobs(call.svc, call.svc.live, [call.ids["job_id"]], call.input.courier_id)


async def move_route(call: Call[MoveIn]) -> dict[str, Any]:
    job_ids = await moves.jobs_of_route(call.svc, call.ids["route_id"])
    return await moves.move_jobs(call.svc, call.svc.live, job_ids, call.input.courier_id)


async def area(call: Call[Any]) -> dict[str, Any]:
    return await console.area(call.svc)


async def cells(call: Call[Any]) -> dict[str, Any]:
    return await console.cells(call.svc, call.ids["shop_id"])


async def availability(call: Call[AvailabilityIn]) -> dict[str, Any]:
    shop_id = call.ids["shop_id"]
    require_subject(call.principal(), Role.SHOP, shop_id)
    shop = await shops.update(call.svc.pool, shop_id, {"active": call.input.active}, call.svc.clock.now())
    await shops.changed(call.svc, shop_id)
    return {"shop_id": shop_id, "active": shop["active"]}


OPERATIONS = (
    Operation(
        "order.timeline",
        "An order's timeline: every event about it, as its resident, shops and couriers got them",
        "console",
        timeline,
        views.Timeline,
        roles=("admin",),
        ids=(ORDER,),
        http=Http("GET", "/v1/orders/{order_id}/timeline"),
    ),
    Operation(
        "rounds.list",
        "The latest dispatch rounds: work waiting, placed and held, couriers, duration",
        "console",
        rounds,
        views.Rounds,
        roles=("admin",),
        query=RoundsQuery,
        http=Http("GET", "/v1/rounds"),
    ),
    Operation(
        "headline",
        "Headline figures: orders in the last hour, mean click-to-door, late orders, open offers",
        "console",
        headline,
        views.Headline,
        roles=("admin",),
        http=Http("GET", "/v1/headline"),
    ),
    Operation(
        "routes.list",
        "Routes offered or under way, with their stops (everyone's, or one courier's)",
        "console",
        live_routes,
        views.LiveRoutes,
        roles=("admin",),
        query=RoutesQuery,
        http=Http("GET", "/v1/routes"),
    ),
    Operation(
        "job.move",
        "Give a job still at its shop to another courier (or to a courier at all): a new active route at "
        "the end of that courier's work",
        "console",
        move_job,
        views.Route,
        roles=("admin",),
        input=MoveIn,
        ids=(JOB,),
        http=Http("POST", "/v1/jobs/{job_id}/move", errors=(409,)),
    ),
    Operation(
        "route.move",
        "Give what a route still has to collect to another courier (goods on board stay)",
        "console",
        move_route,
        views.Route,
        roles=("admin",),
        input=MoveIn,
        ids=(ROUTE,),
        http=Http("POST", "/v1/routes/{route_id}/move", errors=(409,)),
    ),
    Operation(
        "area",
        "Where the active shops are (a box to frame a map)",
        "zones",
        area,
        views.Area,
        roles=ANY,
        http=Http("GET", "/v1/area"),
    ),
    Operation(
        "zone.cells",
        "The H3 cells of a shop's zone cover, with their outlines",
        "zones",
        cells,
        views.Cells,
        roles=ANY,
        ids=(SHOP,),
        http=Http("GET", "/v1/shops/{shop_id}/zone/cells"),
    ),
    Operation(
        "shop.availability",
        "A shop takes orders or not (admin, or the shop itself)",
        "shops",
        availability,
        views.Availability,
        roles=("admin", "shop"),
        input=AvailabilityIn,
        ids=(SHOP,),
        http=Http("PUT", "/v1/shops/{shop_id}/availability"),
    ),
)
