"""Orders (residents) and jobs (shops) over HTTP, and their websocket twins."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from dispatch.api.auth import principal
from dispatch.api.json import json_response, parse_body, read_json, validate
from dispatch.api.keys import POOL, SERVICES
from dispatch.api.params import path_id, query_choice, query_int
from dispatch.api.routing import RouteTable
from dispatch.api.ws import command
from dispatch.auth import Principal, Role, require_role, require_subject
from dispatch.core.jobs import JobState, OrderState
from dispatch.core.matching import RequestedItem
from dispatch.errors import BadRequest, ValidationFailed, field_error
from dispatch.outbox import events_after
from dispatch.services import jobs, orders

routes = RouteTable("orders")
SHOP_ID = r"^shop_[a-z2-7]{16}$"
MAX_SLOT_AHEAD = timedelta(days=30)
IDEMPOTENCY_KEY_MAX = 200


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Lat = Annotated[float, Field(ge=-85, le=85, allow_inf_nan=False)]
Lng = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
When = Annotated[AwareDatetime, Field(strict=False, description="ISO 8601 with a UTC offset")]


class PointIn(_Strict):
    lat: Lat
    lng: Lng


class OrderItemIn(_Strict):
    sku: str = Field(min_length=1, max_length=64)
    qty: int = Field(ge=1, le=10_000)
    shop_id: str | None = Field(None, pattern=SHOP_ID, description="pin the item to this shop")


class SlotIn(_Strict):
    start: When
    end: When


class OrderIn(_Strict):
    dropoff: PointIn
    items: list[OrderItemIn] = Field(min_length=1, max_length=1000)
    fulfilment: Literal["delivery", "pickup"] = "delivery"
    timing: Literal["asap"] | SlotIn = "asap"
    note: str | None = Field(None, max_length=500)


class AcceptIn(_Strict):
    prep_minutes: int = Field(ge=1, le=240)


class RejectIn(_Strict):
    reason: str = Field(min_length=1, max_length=200)


class JobRef(_Strict):
    job_id: str = Field(min_length=1, max_length=40)


class AcceptCommand(JobRef, AcceptIn):
    pass


class RejectCommand(JobRef, RejectIn):
    pass


class OrderRef(_Strict):
    order_id: str = Field(min_length=1, max_length=40)


def _order_request(app: web.Application, who: Principal, body: OrderIn) -> orders.OrderRequest:
    settings = app[SERVICES].settings
    now = app[SERVICES].clock.now()
    errors = []
    if len(body.items) > settings.max_order_lines:
        errors.append(field_error(["items"], f"at most {settings.max_order_lines} lines", "too_many_items"))
    for n, item in enumerate(body.items):
        if item.qty > settings.max_line_qty:
            errors.append(
                field_error(["items", n, "qty"], f"at most {settings.max_line_qty}", "qty_too_large")
            )
    slot_start = slot_end = None
    if isinstance(body.timing, SlotIn):
        slot_start, slot_end = body.timing.start, body.timing.end
        if slot_start < now:
            errors.append(field_error(["timing", "start"], "the slot starts in the past", "slot_in_past"))
        if slot_end <= slot_start:
            errors.append(field_error(["timing", "end"], "the slot ends before it starts", "slot_ends_first"))
        if slot_start > now + MAX_SLOT_AHEAD:
            errors.append(field_error(["timing", "start"], "at most 30 days ahead", "slot_too_far"))
    if errors:
        raise ValidationFailed(f"{len(errors)} field(s) are not valid", details=errors)
    return orders.OrderRequest(
        resident_id=who.subject,
        lat=body.dropoff.lat,
        lng=body.dropoff.lng,
        fulfilment=body.fulfilment,
        slot_start=slot_start,
        slot_end=slot_end,
        note=body.note,
        items=tuple(RequestedItem(i.sku, i.qty, i.shop_id) for i in body.items),
    )


@routes.route(
    "POST",
    "/v1/orders",
    summary="Place an order (Idempotency-Key header makes retries safe)",
    body=OrderIn,
    roles=("resident",),
    statuses=(409,),
)
async def place_order(request: web.Request) -> web.Response:
    who = principal(request, Role.RESIDENT)
    raw = await read_json(request)
    if not isinstance(raw, dict):
        raise ValidationFailed(
            "request body must be a JSON object", details=[field_error([], "expected an object")]
        )
    body = validate(OrderIn, raw)
    key = request.headers.get("Idempotency-Key")
    # Header bytes that are not ASCII arrive as undecodable surrogates, which PostgreSQL cannot store.
    if key is not None and not (1 <= len(key) <= IDEMPOTENCY_KEY_MAX and key.isascii() and key.isprintable()):
        raise BadRequest(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters",
            code="bad_idempotency_key",
        )
    req = _order_request(request.app, who, body)
    idem = (key, orders.request_hash(raw)) if key else None
    status, order = await orders.place_order(request.app[SERVICES], req, idem)
    return json_response(order, status=status)


@routes.route(
    "GET",
    "/v1/orders/{order_id}",
    summary="An order (its resident, or admin)",
    roles=("resident", "admin"),
    statuses=(404,),
)
async def get_order(request: web.Request) -> web.Response:
    who = principal(request, Role.RESIDENT, Role.ADMIN)
    order_id = path_id(request, "order_id", "ord")
    owner = None if who.is_admin else who.subject
    return json_response(await orders.get_order(request.app[SERVICES], order_id, owner))


@routes.route(
    "GET",
    "/v1/orders",
    summary="The caller's orders, newest first",
    query={"state": "filter by order state", "limit": "1-200 (default 50)"},
    roles=("resident",),
)
async def list_orders(request: web.Request) -> web.Response:
    who = principal(request, Role.RESIDENT)
    state = query_choice(request, "state", tuple(s.value for s in OrderState))
    limit = query_int(request, "limit", 50, 1, 200)
    return json_response(
        {"items": await orders.list_orders(request.app[SERVICES], who.subject, state, limit)}
    )


@routes.route(
    "POST",
    "/v1/orders/{order_id}/cancel",
    summary="Cancel an order before pickup (releases stock, withdraws the jobs)",
    roles=("resident", "admin"),
    statuses=(404, 409),
)
async def cancel_order(request: web.Request) -> web.Response:
    who = principal(request, Role.RESIDENT, Role.ADMIN)
    order_id = path_id(request, "order_id", "ord")
    owner = None if who.is_admin else who.subject
    return json_response(await orders.cancel_order(request.app[SERVICES], order_id, owner))


@routes.route(
    "GET", "/v1/jobs/{job_id}", summary="A job (its shop, or admin)", roles=("shop", "admin"), statuses=(404,)
)
async def get_job(request: web.Request) -> web.Response:
    who = principal(request, Role.SHOP, Role.ADMIN)
    job_id = path_id(request, "job_id", "job")
    return json_response(
        await jobs.get_job(request.app[SERVICES], job_id, None if who.is_admin else who.subject)
    )


@routes.route(
    "POST",
    "/v1/jobs/{job_id}/accept",
    summary="Accept an offered job",
    body=AcceptIn,
    roles=("shop",),
    statuses=(404, 409),
)
async def accept_job(request: web.Request) -> web.Response:
    who = principal(request, Role.SHOP)
    job_id = path_id(request, "job_id", "job")
    body = await parse_body(request, AcceptIn)
    return json_response(await jobs.accept(request.app[SERVICES], job_id, who.subject, body.prep_minutes))


@routes.route(
    "POST",
    "/v1/jobs/{job_id}/reject",
    summary="Reject an offered job",
    body=RejectIn,
    roles=("shop",),
    statuses=(404, 409),
)
async def reject_job(request: web.Request) -> web.Response:
    who = principal(request, Role.SHOP)
    job_id = path_id(request, "job_id", "job")
    body = await parse_body(request, RejectIn)
    return json_response(await jobs.reject(request.app[SERVICES], job_id, who.subject, body.reason))


@routes.route(
    "POST",
    "/v1/jobs/{job_id}/ready",
    summary="Mark an accepted job ready",
    roles=("shop",),
    statuses=(404, 409),
)
async def ready_job(request: web.Request) -> web.Response:
    who = principal(request, Role.SHOP)
    job_id = path_id(request, "job_id", "job")
    return json_response(await jobs.mark_ready(request.app[SERVICES], job_id, who.subject))


@routes.route(
    "GET",
    "/v1/shops/{shop_id}/jobs",
    summary="A shop's jobs, newest first",
    query={"state": "filter by job state", "limit": "1-200 (default 50)"},
    roles=("shop", "admin"),
)
async def list_shop_jobs(request: web.Request) -> web.Response:
    who = principal(request, Role.SHOP, Role.ADMIN)
    shop_id = path_id(request, "shop_id", "shop")
    require_subject(who, Role.SHOP, shop_id)
    state = query_choice(request, "state", tuple(s.value for s in JobState))
    limit = query_int(request, "limit", 50, 1, 200)
    return json_response({"items": await jobs.shop_jobs(request.app[SERVICES], shop_id, state, limit)})


@routes.route(
    "GET",
    "/v1/events",
    summary="The caller's events after a seq (the HTTP twin of the websocket's resume)",
    query={"after_seq": "last seq seen (default 0)", "limit": "1-500 (default 100)"},
    roles=("any",),
)
async def list_events(request: web.Request) -> web.Response:
    who = principal(request)
    after = query_int(request, "after_seq", 0, 0, 2**62)
    limit = query_int(request, "limit", 100, 1, 500)
    events = await events_after(request.app[POOL], who.subject, after, limit)
    return json_response({"events": [e.to_message() for e in events]})


# --- websocket twins -----------------------------------------------------------------------------


@command("job.accept")
async def ws_accept(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.SHOP)
    cmd = validate(AcceptCommand, body)
    return await jobs.accept(app[SERVICES], cmd.job_id, who.subject, cmd.prep_minutes)


@command("job.reject")
async def ws_reject(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.SHOP)
    cmd = validate(RejectCommand, body)
    return await jobs.reject(app[SERVICES], cmd.job_id, who.subject, cmd.reason)


@command("job.ready")
async def ws_ready(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.SHOP)
    cmd = validate(JobRef, body)
    return await jobs.mark_ready(app[SERVICES], cmd.job_id, who.subject)


@command("order.cancel")
async def ws_cancel(app: web.Application, who: Principal, body: dict[str, Any]) -> Any:
    require_role(who, Role.RESIDENT, Role.ADMIN)
    cmd = validate(OrderRef, body)
    return await orders.cancel_order(app[SERVICES], cmd.order_id, None if who.is_admin else who.subject)
