"""Couriers, routes and stops over HTTP, and their websocket twins; the resident's delivery view and the
shop's hand-over."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from dispatch.api.auth import principal
from dispatch.api.json import json_response, parse_body, read_json, validate
from dispatch.api.keys import SERVICES
from dispatch.api.routing import RouteTable
from dispatch.api.ws import command
from dispatch.auth import Principal, Role, require_role, require_subject
from dispatch.errors import Forbidden, NotFound
from dispatch.ids import is_valid_id
from dispatch.services import couriers, route_offers
from dispatch.services import routes as route_service

routes = RouteTable("couriers")
COURIER = ("courier",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


When = Annotated[AwareDatetime, Field(strict=False, description="ISO 8601 with a UTC offset")]
CourierId = Annotated[str | None, Field(None, description="the sender's own id; optional")]


class ShiftIn(_Strict):
    start: When
    end: When


class LocationIn(_Strict):
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False)
    accuracy: float = Field(ge=0, le=10_000, allow_inf_nan=False, description="metres")
    at: When


class DeclineIn(_Strict):
    reason: str | None = Field(None, max_length=200)


class CompleteIn(_Strict):
    code: str | None = Field(None, min_length=1, max_length=16, description="drop-offs: the resident's code")


class OverrideIn(_Strict):
    step: Literal["arrived", "completed"] = Field(description="what to record for the stop's courier")


class DeliveryOptionsIn(_Strict):
    allow_proximity: bool = Field(description="the courier at the door (by GPS) may stand in for the code")


class CourierCommand(_Strict):
    courier_id: CourierId = None


class LocationCommand(LocationIn):
    courier_id: CourierId = None


class RouteCommand(DeclineIn):
    route_id: str = Field(min_length=1, max_length=40)


class StopCommand(CompleteIn):
    stop_id: str = Field(min_length=1, max_length=40)


class JobCommand(_Strict):
    job_id: str = Field(min_length=1, max_length=40)


def _own(who: Principal, courier_id: str | None) -> str:
    """The courier acting: a courier acts only as itself (sending another's id is a 403)."""
    if courier_id is not None and courier_id != who.subject:
        raise Forbidden("a courier acts only as itself", code="not_owner")
    return who.subject


_KINDS = {"rte": "route", "stp": "stop", "job": "job", "cou": "courier", "ord": "order"}


def _ref(value: str, kind: str) -> str:
    """An id from a path or a command: malformed names nothing, so it is the same 404 as an unknown one."""
    if not is_valid_id(value, kind):
        raise NotFound(f"no {_KINDS[kind]} {value!r}", code=f"{_KINDS[kind]}_not_found")
    return value


def path_id(request: web.Request, name: str, kind: str) -> str:
    return _ref(request.match_info[name], kind)


async def _optional_body(request: web.Request, model: type[CompleteIn] | type[DeclineIn]) -> Any:
    """Some commands take an optional body: an empty one means all defaults."""
    if not request.can_read_body:
        return model()
    return validate(model, await read_json(request))


# --- shifts ----------------------------------------------------------------------------------------------


@routes.route(
    "POST",
    "/v1/couriers/{courier_id}/shift/start",
    summary="Go on shift (ws: courier.shift_start)",
    roles=("courier", "admin"),
    statuses=(404, 409),
)
async def shift_start(request: web.Request) -> web.Response:
    who = principal(request, Role.COURIER, Role.ADMIN)
    courier_id = path_id(request, "courier_id", "cou")
    require_subject(who, Role.COURIER, courier_id)
    return json_response(await couriers.start_shift(request.app[SERVICES], courier_id))


@routes.route(
    "POST",
    "/v1/couriers/{courier_id}/shift/end",
    summary="Go off shift: no new work (ws: courier.shift_end)",
    roles=("courier", "admin"),
    statuses=(404, 409),
)
async def shift_end(request: web.Request) -> web.Response:
    who = principal(request, Role.COURIER, Role.ADMIN)
    courier_id = path_id(request, "courier_id", "cou")
    require_subject(who, Role.COURIER, courier_id)
    return json_response(await couriers.end_shift(request.app[SERVICES], courier_id))


@routes.route(
    "POST",
    "/v1/couriers/{courier_id}/shifts",
    summary="Plan a shift: it starts and ends by itself",
    body=ShiftIn,
    roles=("admin",),
    statuses=(404, 409),
)
async def plan_shift(request: web.Request) -> web.Response:
    principal(request, Role.ADMIN)
    courier_id = path_id(request, "courier_id", "cou")
    body = await parse_body(request, ShiftIn)
    shift = await couriers.plan_shift(request.app[SERVICES], courier_id, body.start, body.end)
    return json_response(shift, status=201)


@routes.route(
    "GET",
    "/v1/couriers/{courier_id}/shifts",
    summary="A courier's planned and past shifts",
    roles=("courier", "admin"),
)
async def list_shifts(request: web.Request) -> web.Response:
    who = principal(request, Role.COURIER, Role.ADMIN)
    courier_id = path_id(request, "courier_id", "cou")
    require_subject(who, Role.COURIER, courier_id)
    return json_response({"items": await couriers.list_shifts(request.app[SERVICES], courier_id)})


# --- location and status -----------------------------------------------------------------------------


@routes.route(
    "POST",
    "/v1/couriers/{courier_id}/location",
    summary="Report where the courier is, about once a second (ws: courier.location)",
    body=LocationIn,
    roles=COURIER,
)
async def location(request: web.Request) -> web.Response:
    who = principal(request, Role.COURIER)
    courier_id = _own(who, path_id(request, "courier_id", "cou"))
    body = await parse_body(request, LocationIn)
    app = request.app
    return json_response(
        await couriers.record_location(
            app[SERVICES], app[SERVICES].live, courier_id, body.lat, body.lng, body.accuracy, body.at
        )
    )


@routes.route(
    "GET",
    "/v1/couriers/{courier_id}/status",
    summary="A courier's shift, position (stale or not) and live routes",
    roles=("courier", "admin"),
    statuses=(404,),
)
async def courier_status(request: web.Request) -> web.Response:
    who = principal(request, Role.COURIER, Role.ADMIN)
    courier_id = path_id(request, "courier_id", "cou")
    require_subject(who, Role.COURIER, courier_id)
    return json_response(await couriers.status(request.app[SERVICES], request.app[SERVICES].live, courier_id))


@routes.route("GET", "/v1/fleet", summary="Couriers on shift: positions, staleness", roles=("admin",))
async def fleet(request: web.Request) -> web.Response:
    principal(request, Role.ADMIN)
    return json_response({"items": await couriers.fleet(request.app[SERVICES], request.app[SERVICES].live)})


# --- routes and stops ------------------------------------------------------------------------------------


@routes.route(
    "POST",
    "/v1/routes/{route_id}/accept",
    summary="Accept an offered route (ws: route.accept)",
    roles=COURIER,
    statuses=(404, 409),
)
async def accept_route(request: web.Request) -> web.Response:
    who = principal(request, Role.COURIER)
    route_id = path_id(request, "route_id", "rte")
    app = request.app
    return json_response(await route_offers.accept(app[SERVICES], app[SERVICES].live, who.subject, route_id))


@routes.route(
    "POST",
    "/v1/routes/{route_id}/decline",
    summary="Decline an offered route; its jobs go to another courier (ws: route.decline)",
    body=DeclineIn,
    roles=COURIER,
    statuses=(404, 409),
)
async def decline_route(request: web.Request) -> web.Response:
    who = principal(request, Role.COURIER)
    route_id = path_id(request, "route_id", "rte")
    body = await _optional_body(request, DeclineIn)
    app = request.app
    declined = await route_offers.decline(
        app[SERVICES], app[SERVICES].live, who.subject, route_id, body.reason
    )
    return json_response(declined)


@routes.route(
    "POST",
    "/v1/stops/{stop_id}/arrived",
    summary="Arrived at the next stop (ws: stop.arrived)",
    roles=COURIER,
    statuses=(404, 409),
)
async def stop_arrived(request: web.Request) -> web.Response:
    who = principal(request, Role.COURIER)
    stop_id = path_id(request, "stop_id", "stp")
    app = request.app
    return json_response(await route_service.arrive(app[SERVICES], app[SERVICES].live, who.subject, stop_id))


@routes.route(
    "POST",
    "/v1/stops/{stop_id}/completed",
    summary="Complete the next stop; a drop-off needs the resident's code or, if allowed, the door "
    "(ws: stop.completed)",
    body=CompleteIn,
    roles=COURIER,
    statuses=(404, 409),
)
async def stop_completed(request: web.Request) -> web.Response:
    who = principal(request, Role.COURIER)
    stop_id = path_id(request, "stop_id", "stp")
    body = await _optional_body(request, CompleteIn)
    app = request.app
    return json_response(
        await route_service.complete(app[SERVICES], app[SERVICES].live, who.subject, stop_id, body.code)
    )


@routes.route(
    "POST",
    "/v1/stops/{stop_id}/unlock",
    summary="Unlock a drop-off locked by wrong codes",
    roles=("admin",),
    statuses=(404,),
)
async def stop_unlock(request: web.Request) -> web.Response:
    principal(request, Role.ADMIN)
    stop_id = path_id(request, "stop_id", "stp")
    return json_response(await route_service.unlock(request.app[SERVICES], stop_id))


@routes.route(
    "POST",
    "/v1/stops/{stop_id}/override",
    summary="Record the courier's arrival at, or completion of, its next stop without the proof it needs "
    "(position, ready goods, code); the stop's proof reads admin",
    body=OverrideIn,
    roles=("admin",),
    statuses=(404, 409),
)
async def stop_override(request: web.Request) -> web.Response:
    principal(request, Role.ADMIN)
    stop_id = path_id(request, "stop_id", "stp")
    body = await parse_body(request, OverrideIn)
    svc = request.app[SERVICES]
    if body.step == "arrived":
        return json_response(await route_service.arrive(svc, svc.live, None, stop_id))
    return json_response(await route_service.complete(svc, svc.live, None, stop_id, None))


@routes.route(
    "POST",
    "/v1/jobs/{job_id}/handover",
    summary="The shop hands the goods over: to the courier, or to the resident of a pickup order "
    "(ws: job.handover)",
    roles=("shop",),
    statuses=(404, 409),
)
async def handover(request: web.Request) -> web.Response:
    who = principal(request, Role.SHOP)
    job_id = path_id(request, "job_id", "job")
    app = request.app
    return json_response(
        await route_service.hand_over(app[SERVICES], app[SERVICES].live, who.subject, job_id)
    )


# --- the resident's delivery -------------------------------------------------------------------------------


@routes.route(
    "GET",
    "/v1/orders/{order_id}/delivery",
    summary="The delivery: the code to give the courier, the drop-off ETAs",
    roles=("resident", "admin"),
    statuses=(404,),
)
async def get_delivery(request: web.Request) -> web.Response:
    who = principal(request, Role.RESIDENT, Role.ADMIN)
    order_id = path_id(request, "order_id", "ord")
    owner = None if who.is_admin else who.subject
    return json_response(await couriers.delivery(request.app[SERVICES], order_id, owner))


@routes.route(
    "PUT",
    "/v1/orders/{order_id}/delivery",
    summary="Delivery options: may the courier at the door stand in for the code?",
    body=DeliveryOptionsIn,
    roles=("resident",),
    statuses=(404,),
)
async def put_delivery(request: web.Request) -> web.Response:
    who = principal(request, Role.RESIDENT)
    order_id = path_id(request, "order_id", "ord")
    body = await parse_body(request, DeliveryOptionsIn)
    svc = request.app[SERVICES]
    options = await couriers.set_delivery_options(svc, order_id, who.subject, body.allow_proximity)
    return json_response(options)


@routes.route(
    "GET",
    "/v1/orders/{order_id}/courier-location",
    summary="Where the courier bringing the order is: only from its pickup until its delivery",
    roles=("resident", "admin"),
    statuses=(404,),
)
async def courier_location(request: web.Request) -> web.Response:
    who = principal(request, Role.RESIDENT, Role.ADMIN)
    order_id = path_id(request, "order_id", "ord")
    owner = None if who.is_admin else who.subject
    return json_response(
        await couriers.courier_location(request.app[SERVICES], request.app[SERVICES].live, order_id, owner)
    )


# --- websocket twins ---------------------------------------------------------------------------------------


@command("courier.shift_start")
async def ws_shift_start(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.COURIER)
    cmd = validate(CourierCommand, body)
    return await couriers.start_shift(app[SERVICES], _own(who, cmd.courier_id))


@command("courier.shift_end")
async def ws_shift_end(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.COURIER)
    cmd = validate(CourierCommand, body)
    return await couriers.end_shift(app[SERVICES], _own(who, cmd.courier_id))


@command("courier.location")
async def ws_location(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.COURIER)
    cmd = validate(LocationCommand, body)
    courier_id = _own(who, cmd.courier_id)
    return await couriers.record_location(
        app[SERVICES], app[SERVICES].live, courier_id, cmd.lat, cmd.lng, cmd.accuracy, cmd.at
    )


@command("route.accept")
async def ws_route_accept(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.COURIER)
    cmd = validate(RouteCommand, body)
    return await route_offers.accept(
        app[SERVICES], app[SERVICES].live, who.subject, _ref(cmd.route_id, "rte")
    )


@command("route.decline")
async def ws_route_decline(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.COURIER)
    cmd = validate(RouteCommand, body)
    route_id = _ref(cmd.route_id, "rte")
    return await route_offers.decline(app[SERVICES], app[SERVICES].live, who.subject, route_id, cmd.reason)


@command("stop.arrived")
async def ws_stop_arrived(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.COURIER)
    cmd = validate(StopCommand, body)
    return await route_service.arrive(
        app[SERVICES], app[SERVICES].live, who.subject, _ref(cmd.stop_id, "stp")
    )


@command("stop.completed")
async def ws_stop_completed(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.COURIER)
    cmd = validate(StopCommand, body)
    stop_id = _ref(cmd.stop_id, "stp")
    return await route_service.complete(app[SERVICES], app[SERVICES].live, who.subject, stop_id, cmd.code)


@command("job.handover")
async def ws_handover(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.SHOP)
    cmd = validate(JobCommand, body)
    return await route_service.hand_over(
        app[SERVICES], app[SERVICES].live, who.subject, _ref(cmd.job_id, "job")
    )
