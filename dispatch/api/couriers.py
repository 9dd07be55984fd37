"""Couriers: shifts, live location, routes and stops; the shop's hand-over; what a resident sees of its
delivery."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field

from dispatch import views
from dispatch.api.operations import Call, Http, Id, Input, Operation
from dispatch.auth import Principal, Role, require_subject
from dispatch.errors import Forbidden
from dispatch.services import couriers, route_offers
from dispatch.services import routes as route_service


class ShiftIn(Input):
    start: AwareDatetime = Field(strict=False, description="ISO 8601 with a UTC offset")
    end: AwareDatetime = Field(strict=False, description="ISO 8601 with a UTC offset")


class LocationIn(Input):
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lng: float = Field(ge=-180, le=180, allow_inf_nan=False)
    accuracy: float = Field(ge=0, le=10_000, allow_inf_nan=False, description="metres")
    at: AwareDatetime = Field(strict=False, description="when the fix was taken (ISO 8601 with offset)")


class DeclineIn(Input):
    reason: str | None = Field(None, min_length=1, max_length=200)


class CompleteIn(Input):
    code: str | None = Field(None, min_length=1, max_length=16, description="drop-offs: the resident's code")


class OverrideIn(Input):
    step: Literal["arrived", "completed"] = Field(description="what to record for the stop's courier")


class DeliveryOptionsIn(Input):
    allow_proximity: bool = Field(description="the courier at the door (by GPS) may stand in for the code")


COURIER = Id("courier_id", "cou", own_for=Role.COURIER)
ROUTE = Id("route_id", "rte")
STOP = Id("stop_id", "stp")
JOB = Id("job_id", "job")
ORDER = Id("order_id", "ord")


def _courier(call: Call[Any]) -> str:
    """The courier the call acts on: an admin any; a courier only itself."""
    courier_id = call.ids["courier_id"]
    require_subject(call.principal(), Role.COURIER, courier_id)
    return courier_id


def _itself(who: Principal, courier_id: str) -> str:
    if courier_id != who.subject:
        raise Forbidden("a courier acts only as itself", code="not_owner")
    return courier_id


def _owner(who: Principal) -> str | None:
    return None if who.is_admin else who.subject


async def shift_start(call: Call[Any]) -> dict[str, Any]:
    return await couriers.start_shift(call.svc, _courier(call))


async def shift_end(call: Call[Any]) -> dict[str, Any]:
    return await couriers.end_shift(call.svc, _courier(call))


async def plan_shift(call: Call[ShiftIn]) -> dict[str, Any]:
    return await couriers.plan_shift(call.svc, call.ids["courier_id"], call.input.start, call.input.end)


async def shifts(call: Call[Any]) -> dict[str, Any]:
    return {"items": await couriers.list_shifts(call.svc, _courier(call))}


async def location(call: Call[LocationIn]) -> dict[str, Any]:
    courier_id = _itself(call.principal(), call.ids["courier_id"])
    fix = call.input
    return await couriers.record_location(
        call.svc, call.svc.live, courier_id, fix.lat, fix.lng, fix.accuracy, fix.at
    )


async def status(call: Call[Any]) -> dict[str, Any]:
    return await couriers.status(call.svc, call.svc.live, _courier(call))


async def fleet(call: Call[Any]) -> dict[str, Any]:
    return {"items": await couriers.fleet(call.svc, call.svc.live)}


async def accept_route(call: Call[Any]) -> dict[str, Any]:
    return await route_offers.accept(call.svc, call.svc.live, call.principal().subject, call.ids["route_id"])


async def decline_route(call: Call[DeclineIn]) -> dict[str, Any]:
    who, route_id = call.principal(), call.ids["route_id"]
    return await route_offers.decline(call.svc, call.svc.live, who.subject, route_id, call.input.reason)


async def arrived(call: Call[Any]) -> dict[str, Any]:
    return await route_service.arrive(call.svc, call.svc.live, call.principal().subject, call.ids["stop_id"])


async def completed(call: Call[CompleteIn]) -> dict[str, Any]:
    who, stop_id = call.principal(), call.ids["stop_id"]
    return await route_service.complete(call.svc, call.svc.live, who.subject, stop_id, call.input.code)


async def unlock(call: Call[Any]) -> dict[str, Any]:
    return await route_service.unlock(call.svc, call.ids["stop_id"])


async def override(call: Call[OverrideIn]) -> dict[str, Any]:
    """An operator records the courier's next step without the proof it needs (the proof reads admin)."""
    stop_id = call.ids["stop_id"]
    if call.input.step == "arrived":
        return await route_service.arrive(call.svc, call.svc.live, None, stop_id)
    return await route_service.complete(call.svc, call.svc.live, None, stop_id, None)


async def handover(call: Call[Any]) -> dict[str, Any]:
    return await route_service.hand_over(
        call.svc, call.svc.live, call.principal().subject, call.ids["job_id"]
    )


async def delivery(call: Call[Any]) -> dict[str, Any]:
    return await couriers.delivery(call.svc, call.ids["order_id"], _owner(call.principal()))


async def delivery_options(call: Call[DeliveryOptionsIn]) -> dict[str, Any]:
    who = call.principal()
    return await couriers.set_delivery_options(
        call.svc, call.ids["order_id"], who.subject, call.input.allow_proximity
    )


async def courier_location(call: Call[Any]) -> dict[str, Any]:
    return await couriers.courier_location(
        call.svc, call.svc.live, call.ids["order_id"], _owner(call.principal())
    )


OPERATIONS = (
    Operation(
        "courier.shift_start",
        "Go on shift (a courier itself, or an admin for it)",
        "couriers",
        shift_start,
        views.CourierShift,
        roles=("courier", "admin"),
        ids=(COURIER,),
        http=Http("POST", "/v1/couriers/{courier_id}/shift/start", errors=(409,)),
        ws=True,
    ),
    Operation(
        "courier.shift_end",
        "Go off shift: no new work; what is not picked up goes to others (a courier itself, or an admin)",
        "couriers",
        shift_end,
        views.CourierShift,
        roles=("courier", "admin"),
        ids=(COURIER,),
        http=Http("POST", "/v1/couriers/{courier_id}/shift/end", errors=(409,)),
        ws=True,
    ),
    Operation(
        "courier.plan_shift",
        "Plan a shift: it starts and ends by itself",
        "couriers",
        plan_shift,
        views.Shift,
        roles=("admin",),
        input=ShiftIn,
        ids=(COURIER,),
        http=Http("POST", "/v1/couriers/{courier_id}/shifts", 201, errors=(409, 422)),
    ),
    Operation(
        "courier.shifts",
        "A courier's planned and past shifts",
        "couriers",
        shifts,
        views.Shifts,
        roles=("courier", "admin"),
        ids=(COURIER,),
        http=Http("GET", "/v1/couriers/{courier_id}/shifts"),
    ),
    Operation(
        "courier.location",
        "Where the courier is, about once a second (stored in Redis, shared with who may see it)",
        "couriers",
        location,
        views.Ping,
        roles=("courier",),
        input=LocationIn,
        ids=(COURIER,),
        http=Http("POST", "/v1/couriers/{courier_id}/location", errors=(422,)),
        ws=True,
    ),
    Operation(
        "courier.status",
        "A courier's shift, position (stale or not) and live routes",
        "couriers",
        status,
        views.CourierStatus,
        roles=("courier", "admin"),
        ids=(COURIER,),
        http=Http("GET", "/v1/couriers/{courier_id}/status"),
    ),
    Operation(
        "fleet",
        "Couriers on shift: positions, staleness",
        "couriers",
        fleet,
        views.Fleet,
        roles=("admin",),
        http=Http("GET", "/v1/fleet"),
    ),
    Operation(
        "route.accept",
        "Accept an offered route",
        "routes",
        accept_route,
        views.Route,
        roles=("courier",),
        ids=(ROUTE,),
        http=Http("POST", "/v1/routes/{route_id}/accept", errors=(409,)),
        ws=True,
    ),
    Operation(
        "route.decline",
        "Decline an offered route; its jobs go to another courier",
        "routes",
        decline_route,
        views.Route,
        roles=("courier",),
        input=DeclineIn,
        ids=(ROUTE,),
        http=Http("POST", "/v1/routes/{route_id}/decline", errors=(409,)),
        ws=True,
    ),
    Operation(
        "stop.arrived",
        "Arrived at the next stop",
        "routes",
        arrived,
        views.Route,
        roles=("courier",),
        ids=(STOP,),
        http=Http("POST", "/v1/stops/{stop_id}/arrived", errors=(409,)),
        ws=True,
    ),
    Operation(
        "stop.completed",
        "Complete the next stop; a drop-off needs the resident's code or, if allowed, the door",
        "routes",
        completed,
        views.Route,
        roles=("courier",),
        input=CompleteIn,
        ids=(STOP,),
        http=Http("POST", "/v1/stops/{stop_id}/completed", errors=(409,)),
        ws=True,
    ),
    Operation(
        "stop.unlock",
        "Unlock a drop-off locked by wrong codes",
        "routes",
        unlock,
        views.Route,
        roles=("admin",),
        ids=(STOP,),
        http=Http("POST", "/v1/stops/{stop_id}/unlock"),
    ),
    Operation(
        "stop.override",
        "Record the courier's arrival at, or completion of, its next stop without the proof it needs "
        "(position, ready goods, code); the stop's proof reads admin",
        "routes",
        override,
        views.Route,
        roles=("admin",),
        input=OverrideIn,
        ids=(STOP,),
        http=Http("POST", "/v1/stops/{stop_id}/override", errors=(409,)),
    ),
    Operation(
        "job.handover",
        "The shop hands the goods over: to the courier, or to the resident of a pick-up order",
        "jobs",
        handover,
        views.ShopJob,
        roles=("shop",),
        ids=(JOB,),
        http=Http("POST", "/v1/jobs/{job_id}/handover", errors=(409,)),
        ws=True,
    ),
    Operation(
        "order.delivery",
        "The delivery: the code to give the courier, the drop-off ETAs",
        "orders",
        delivery,
        views.Delivery,
        roles=("resident", "admin"),
        ids=(ORDER,),
        http=Http("GET", "/v1/orders/{order_id}/delivery"),
    ),
    Operation(
        "order.delivery_options",
        "Delivery options: may the courier at the door stand in for the code?",
        "orders",
        delivery_options,
        views.Delivery,
        roles=("resident",),
        input=DeliveryOptionsIn,
        ids=(ORDER,),
        http=Http("PUT", "/v1/orders/{order_id}/delivery"),
    ),
    Operation(
        "order.courier_location",
        "Where the courier bringing the order is: only from its pickup until its delivery",
        "orders",
        courier_location,
        views.CourierLocation,
        roles=("resident", "admin"),
        ids=(ORDER,),
        http=Http("GET", "/v1/orders/{order_id}/courier-location", errors=(403,)),
    ),
)
