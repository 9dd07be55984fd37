"""Orders (residents, operators) and jobs (shops): placing, reading, cancelling, answering offers."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field

from dispatch import views
from dispatch.api.operations import Answer, Call, Http, Id, Input, Int, IsoTime, Operation, Query
from dispatch.auth import Role, require_subject
from dispatch.core.matching import RequestedItem
from dispatch.errors import BadRequest, ValidationFailed, field_error
from dispatch.services import jobs, orders, streams

SHOP_ID = r"^shop_[a-z2-7]{16}$"
MAX_SLOT_AHEAD = timedelta(days=30)
IDEMPOTENCY_KEY_MAX = 200

Lat = Annotated[float, Field(ge=-85, le=85, allow_inf_nan=False)]
Lng = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
When = Annotated[AwareDatetime, Field(strict=False, description="ISO 8601 with a UTC offset")]


class PointIn(Input):
    lat: Lat
    lng: Lng


class OrderItemIn(Input):
    sku: str = Field(min_length=1, max_length=64)
    qty: Int = Field(ge=1, le=10_000)
    shop_id: str | None = Field(None, pattern=SHOP_ID, description="pin the item to this shop")


class SlotIn(Input):
    start: When
    end: When


class OrderIn(Input):
    dropoff: PointIn
    items: list[OrderItemIn] = Field(min_length=1, max_length=1000)
    fulfilment: Literal["delivery", "pickup"] = "delivery"
    timing: Literal["asap"] | SlotIn = "asap"
    note: str | None = Field(None, max_length=500)


class AcceptIn(Input):
    prep_minutes: Int = Field(ge=1, le=240)


class RejectIn(Input):
    reason: str = Field(min_length=1, max_length=200)


OrderStateName = views.OrderStateName
JobStateName = views.JobStateName


class OrdersQuery(Query):
    state: OrderStateName | None = Field(None, description="only orders in this state")
    shop_id: str | None = Field(None, description="admin: orders with a job at this shop")
    courier_id: str | None = Field(None, description="admin: orders with a job on this courier's route")
    resident_id: str | None = Field(None, description="admin: this resident's orders")
    since: IsoTime | None = Field(None, description="placed at or after (ISO 8601 with offset)")
    until: IsoTime | None = Field(None, description="placed before (ISO 8601 with offset)")
    open: bool = Field(False, description="only orders still in progress (placed to in_delivery)")
    limit: int = Field(50, ge=1, le=200, description="page size")
    cursor: str | None = Field(None, max_length=200, description="from the previous page's `next`")


class ShopJobsQuery(Query):
    state: JobStateName | None = Field(None, description="only jobs in this state")
    limit: int = Field(50, ge=1, le=200, description="page size")


class EventsQuery(Query):
    after_seq: int = Field(0, ge=0, le=2**62, description="the last seq seen")
    limit: int = Field(100, ge=1, le=500, description="most events returned")


ORDER = Id("order_id", "ord")
JOB = Id("job_id", "job")
SHOP = Id("shop_id", "shop")


def _order_request(call: Call[OrderIn]) -> orders.OrderRequest:
    body, settings, now = call.input, call.svc.settings, call.svc.clock.now()
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
        resident_id=call.principal().subject,
        lat=body.dropoff.lat,
        lng=body.dropoff.lng,
        fulfilment=body.fulfilment,
        slot_start=slot_start,
        slot_end=slot_end,
        note=body.note,
        items=tuple(RequestedItem(i.sku, i.qty, i.shop_id) for i in body.items),
    )


async def place_order(call: Call[OrderIn]) -> Answer:
    key = call.headers.get("Idempotency-Key")
    # Header bytes that are not ASCII arrive as undecodable surrogates, which PostgreSQL cannot store.
    if key is not None and not (1 <= len(key) <= IDEMPOTENCY_KEY_MAX and key.isascii() and key.isprintable()):
        raise BadRequest(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters",
            code="bad_idempotency_key",
        )
    req = _order_request(call)
    idem = (key, orders.request_hash(call.raw)) if key else None
    status, order = await orders.place_order(call.svc, req, idem)
    return Answer(order, status)  # 201, or 200: a retry with the same key, answered as the first time


async def quote_order(call: Call[OrderIn]) -> dict[str, Any]:
    return await orders.quote_order(call.svc, _order_request(call))


async def get_order(call: Call[Any]) -> dict[str, Any]:
    who = call.principal()
    return await orders.get_order(call.svc, call.ids["order_id"], None if who.is_admin else who.subject)


async def list_orders(call: Call[Any]) -> dict[str, Any]:
    """A resident sees its own orders; an operator any, by the filters."""
    who, q = call.principal(), call.query
    assert isinstance(q, OrdersQuery)
    resident = q.resident_id
    if not who.is_admin:
        operator_only = {"shop_id": q.shop_id, "courier_id": q.courier_id}
        for name, value in operator_only.items():
            if value is not None:
                raise ValidationFailed(
                    f"{name} is a filter for operators",
                    details=[field_error([name], "admin only", "admin_only")],
                )
        if resident is not None and resident != who.subject:
            raise ValidationFailed(
                "a resident sees only its own orders",
                details=[field_error(["resident_id"], "not yours", "not_owner")],
            )
        resident = who.subject
    where = orders.OrderFilter(q.state, q.shop_id, q.courier_id, resident, q.since, q.until, q.open)
    items, next_cursor = await orders.find_orders(call.svc, where, q.limit, q.cursor)
    return {"items": items, "next": next_cursor}


async def cancel_order(call: Call[Any]) -> dict[str, Any]:
    who = call.principal()
    return await orders.cancel_order(call.svc, call.ids["order_id"], None if who.is_admin else who.subject)


async def get_job(call: Call[Any]) -> dict[str, Any]:
    who = call.principal()
    return await jobs.get_job(call.svc, call.ids["job_id"], None if who.is_admin else who.subject)


async def accept_job(call: Call[AcceptIn]) -> dict[str, Any]:
    return await jobs.accept(call.svc, call.ids["job_id"], call.principal().subject, call.input.prep_minutes)


async def reject_job(call: Call[RejectIn]) -> dict[str, Any]:
    return await jobs.reject(call.svc, call.ids["job_id"], call.principal().subject, call.input.reason)


async def ready_job(call: Call[Any]) -> dict[str, Any]:
    return await jobs.mark_ready(call.svc, call.ids["job_id"], call.principal().subject)


async def shop_jobs(call: Call[Any]) -> dict[str, Any]:
    require_subject(call.principal(), Role.SHOP, call.ids["shop_id"])
    q = call.query
    assert isinstance(q, ShopJobsQuery)
    return {"items": await jobs.shop_jobs(call.svc, call.ids["shop_id"], q.state, q.limit)}


async def events_after(call: Call[Any]) -> dict[str, Any]:
    q = call.query
    assert isinstance(q, EventsQuery)
    return {"events": await streams.events_of(call.svc, call.principal().subject, q.after_seq, q.limit)}


OPERATIONS = (
    Operation(
        "order.place",
        "Place an order (an Idempotency-Key header makes retries safe: a retry answers 200 with the order)",
        "orders",
        place_order,
        views.Order,
        roles=("resident",),
        input=OrderIn,
        http=Http("POST", "/v1/orders", 201, errors=(409, 422), also=(200,)),
        creates=ORDER,
    ),
    Operation(
        "order.quote",
        "How an order would be split between shops now, with prices (nothing is written or reserved; "
        "refused as placing it would be)",
        "orders",
        quote_order,
        views.Quote,
        roles=("resident",),
        input=OrderIn,
        http=Http("POST", "/v1/orders/quote", errors=(422,)),
    ),
    Operation(
        "order.get",
        "An order (its resident, or admin)",
        "orders",
        get_order,
        views.Order,
        roles=("resident", "admin"),
        ids=(ORDER,),
        http=Http("GET", "/v1/orders/{order_id}"),
    ),
    Operation(
        "orders.list",
        "Orders, newest first, a page at a time: a resident's own; an operator's by state, shop, courier, "
        "resident and time",
        "orders",
        list_orders,
        views.Orders,
        roles=("resident", "admin"),
        query=OrdersQuery,
        http=Http("GET", "/v1/orders", errors=(422,)),
    ),
    Operation(
        "order.cancel",
        "Cancel an order before pickup (releases stock, withdraws the jobs, frees the route)",
        "orders",
        cancel_order,
        views.Order,
        roles=("resident", "admin"),
        ids=(ORDER,),
        http=Http("POST", "/v1/orders/{order_id}/cancel", errors=(409,)),
        ws=True,
    ),
    Operation(
        "job.get",
        "A job (its shop, or admin)",
        "jobs",
        get_job,
        views.ShopJob,
        roles=("shop", "admin"),
        ids=(JOB,),
        http=Http("GET", "/v1/jobs/{job_id}"),
    ),
    Operation(
        "job.accept",
        "Accept an offered job, with the minutes it takes to prepare",
        "jobs",
        accept_job,
        views.Job,
        roles=("shop",),
        input=AcceptIn,
        ids=(JOB,),
        http=Http("POST", "/v1/jobs/{job_id}/accept", errors=(409,)),
        ws=True,
    ),
    Operation(
        "job.reject",
        "Reject an offered job (its lines are offered to the next shop)",
        "jobs",
        reject_job,
        views.Job,
        roles=("shop",),
        input=RejectIn,
        ids=(JOB,),
        http=Http("POST", "/v1/jobs/{job_id}/reject", errors=(409,)),
        ws=True,
    ),
    Operation(
        "job.ready",
        "The goods of an accepted job are ready",
        "jobs",
        ready_job,
        views.Job,
        roles=("shop",),
        ids=(JOB,),
        http=Http("POST", "/v1/jobs/{job_id}/ready", errors=(409,)),
        ws=True,
    ),
    Operation(
        "shop.jobs",
        "A shop's jobs, newest first (the shop, or admin)",
        "jobs",
        shop_jobs,
        views.ShopJobs,
        roles=("shop", "admin"),
        ids=(SHOP,),
        query=ShopJobsQuery,
        http=Http("GET", "/v1/shops/{shop_id}/jobs"),
    ),
    Operation(
        "events.after",
        "The caller's events after a seq (the HTTP twin of the websocket's resume)",
        "realtime",
        events_after,
        views.Events,
        query=EventsQuery,
        http=Http("GET", "/v1/events"),
    ),
)
