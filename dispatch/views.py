"""What clients see: every response body and every event payload, as pydantic models.

The OpenAPI and AsyncAPI documents take their schemas from here, and the event catalogue (`dispatch.events`)
names the payload model of each event type. Services still build plain dicts (rendering through models would
cost every response a validation); with `strict_views` on (the tests) every response and every event is
validated against its model as it leaves, so a shape nobody declared fails loudly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

JobStateName = Literal[
    "offered",
    "accepted",
    "ready",
    "picked_up",
    "delivered",
    "rejected",
    "expired",
    "unfulfilled",
    "cancelled",
]
OrderStateName = Literal[
    "placed",
    "accepted",
    "preparing",
    "ready",
    "in_delivery",
    "delivered",
    "partially_unfulfilled",
    "unfulfilled",
    "cancelled",
]
Fulfilment = Literal["delivery", "pickup"]
RouteStateName = Literal["offered", "active", "completed", "declined", "expired", "cancelled"]
StopStateName = Literal["pending", "arrived", "completed", "cancelled"]


class View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- shared pieces -------------------------------------------------------------------------------------


class Point(View):
    lat: float
    lng: float


class Slot(View):
    start: AwareDatetime | None
    end: AwareDatetime | None


class JobLine(View):
    sku: str
    qty: int
    unit_price_cents: int
    pinned: bool = Field(False, description="the resident chose this shop for the item")


class ItemRequested(View):
    sku: str
    qty: int
    shop_id: str | None


# --- orders and jobs -----------------------------------------------------------------------------------


class Job(View):
    """A job: the part of an order one shop prepares."""

    id: str
    order_id: str
    shop_id: str
    state: JobStateName
    lines: list[JobLine]
    offered_at: AwareDatetime | None
    deadline_at: AwareDatetime | None = Field(description="offered: the shop answers before this")
    accepted_at: AwareDatetime | None
    prep_minutes: int | None
    ready_at: AwareDatetime | None
    reason: str | None = Field(description="why the shop rejected it")
    unfulfilled_lines: list[ItemRequested] | None = Field(description="lines no shop was left to take")


class ShopJob(Job):
    """A job as its shop sees it: the timing and the note, never the resident's address."""

    fulfilment: Fulfilment
    slot: Slot | None
    note: str | None


class Reassigning(View):
    state: Literal["reassigning"]
    reason: str


class Alternative(View):
    """A change to the order body that a courier could deliver (or that needs none): place it again so."""

    fulfilment: Fulfilment | None = Field(None, description="`pickup`: collect it at the shops")
    timing: Slot | None = Field(None, description="a later slot a planned shift could deliver in")


class OrderWarning(View):
    code: Literal["no_courier_available"]
    message: str
    alternatives: list[Alternative]


class Order(View):
    id: str
    resident_id: str
    state: OrderStateName
    fulfilment: Fulfilment
    dropoff: Point
    slot: Slot | None
    note: str | None
    items: list[ItemRequested]
    total_cents: int
    jobs: list[Job]
    unfulfilled: list[ItemRequested]
    created_at: AwareDatetime
    updated_at: AwareDatetime
    courier: Reassigning | None = Field(None, description="in order.updated: the courier's work went back")
    warning: OrderWarning | None = Field(
        None, description="placed although no courier on shift could collect it in time (why, what instead)"
    )


class Orders(View):
    items: list[Order]
    next: str | None = Field(None, description="cursor of the next page (none: this was the last)")


class ShopJobs(View):
    items: list[ShopJob]


class ItemsUnfulfilled(View):
    order_id: str
    items: list[ItemRequested]


# --- shops, catalogues, zones --------------------------------------------------------------------------


class Shop(View):
    id: str
    name: str
    lat: float
    lng: float
    zone: dict[str, Any] | None = Field(description="GeoJSON Polygon or MultiPolygon ([lng, lat])")
    opening_hours: dict[str, Any]
    prep_minutes: int
    auto_accept: bool
    capacity: int
    active: bool
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Shops(View):
    items: list[Shop]


class CatalogueItem(View):
    shop_id: str
    sku: str
    name: str
    price_cents: int
    stock: int
    preorder_only: bool
    lead_minutes: int


class Catalogue(View):
    items: list[CatalogueItem]


class ZoneSet(View):
    shop_id: str
    zone: dict[str, Any]
    cells: int


class Zone(View):
    shop_id: str
    zone: dict[str, Any] | None
    resolution: int | None
    cells: int
    interior_cells: int
    edge_cells: int


class NearbyShop(View):
    shop_id: str
    name: str
    lat: float
    lng: float
    distance_m: float
    travel_minutes: float
    prep_minutes: int


class Nearby(View):
    lat: float
    lng: float
    shops: list[NearbyShop]


class Coverage(View):
    lat: float
    lng: float
    covered: bool
    shops_delivering: int
    shops_open_now: int


# --- people, shifts, positions -------------------------------------------------------------------------


class Resident(View):
    id: str
    name: str
    phone: str | None
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Residents(View):
    items: list[Resident]
    next: str | None = Field(None, description="cursor of the next page (none: this was the last)")


class Courier(View):
    """A courier's record (admin)."""

    id: str
    name: str
    phone: str | None
    capacity: int
    active: bool
    on_shift: bool
    shift_started_at: AwareDatetime | None
    shift_ends_at: AwareDatetime | None
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Couriers(View):
    items: list[Courier]
    next: str | None = Field(None, description="cursor of the next page (none: this was the last)")


class CourierShift(View):
    """A courier's shift state (courier.shift_started, courier.shift_ended)."""

    id: str
    name: str
    capacity: int
    active: bool
    on_shift: bool
    shift_started_at: AwareDatetime | None
    shift_ends_at: AwareDatetime | None


class Shift(View):
    id: int
    courier_id: str
    start: AwareDatetime
    end: AwareDatetime
    state: Literal["planned", "started", "ended", "cancelled"]


class Shifts(View):
    items: list[Shift]


class Ping(View):
    status: Literal["stored", "flagged", "ignored"]
    flagged: bool


class Position(View):
    lat: float
    lng: float
    accuracy: float
    at: AwareDatetime
    flagged: bool
    stale: bool


# --- routes and stops ----------------------------------------------------------------------------------


class Eta(View):
    arrival: AwareDatetime | None
    service: AwareDatetime | None


class Stop(View):
    id: str
    seq: int
    kind: Literal["pickup", "dropoff"]
    state: StopStateName
    location: Point
    shop_id: str | None
    order_id: str | None
    job_ids: list[str]
    items: int
    eta: Eta
    arrived_at: AwareDatetime | None
    arrival_proof: str | None = Field(description="how the arrival was proven: position, or admin")
    completed_at: AwareDatetime | None
    proof: str | None = Field(description="how the stop was proven: courier, shop, code, proximity, admin")
    locked: bool = Field(description="too many wrong codes: an admin must unlock it")


class Route(View):
    id: str
    courier_id: str
    state: RouteStateName
    offered_at: AwareDatetime
    deadline_at: AwareDatetime | None
    accepted_at: AwareDatetime | None
    closed_at: AwareDatetime | None
    reason: str | None
    stops: list[Stop]


class CourierStatus(CourierShift):
    position: Position | None
    stale: bool
    routes: list[Route]


class FleetMember(CourierShift):
    position: Position | None
    stale: bool


class Fleet(View):
    items: list[FleetMember]


class OrderEta(View):
    """order.eta: when the courier will be at the door, and the code to give them."""

    order_id: str
    stop_id: str
    arrival: AwareDatetime | None
    eta: AwareDatetime | None
    code: str | None


class DropOff(View):
    stop_id: str
    state: StopStateName
    arrival: AwareDatetime | None
    eta: AwareDatetime | None
    completed_at: AwareDatetime | None
    proof: str | None


class Delivery(View):
    order_id: str
    state: OrderStateName
    fulfilment: Fulfilment
    code: str | None
    allow_proximity: bool
    drop_offs: list[DropOff]


class SharedFix(View):
    lat: float
    lng: float
    accuracy: float
    at: AwareDatetime
    stale: bool


class CourierLocation(View):
    order_id: str
    couriers: list[SharedFix | None]


class CourierPosition(View):
    """courier.position (volatile: no seq, not stored): a courier the recipient may follow right now."""

    model_config = ConfigDict(extra="allow", frozen=True)
    courier_id: str
    lat: float
    lng: float
    accuracy: float
    at: AwareDatetime


# --- what the console reads ----------------------------------------------------------------------------


class TimelineEntry(View):
    """One event about the order, as its recipient got it."""

    recipient: str = Field(description="the resident, shop or courier it went to")
    role: Literal["resident", "shop", "courier"]
    seq: int
    type: str
    at: AwareDatetime
    data: dict[str, Any]


class Timeline(View):
    order_id: str
    events: list[TimelineEntry] = Field(description="oldest first")


class Round(View):
    """A dispatch round: what it had, what it placed, what it held back, how long it took."""

    round: int
    node: str
    at: AwareDatetime
    jobs: int = Field(description="jobs waiting for a courier")
    couriers: int = Field(description="couriers it could use")
    routes: int = Field(description="routes it wrote")
    placed: int | None = Field(description="jobs it put on routes")
    held: int | None = Field(description="jobs left for a later round (held back, or no courier yet)")
    released: int = Field(description="jobs given back before it (couriers off shift or stale)")
    seconds: float | None = Field(description="from its start to its write")


class Rounds(View):
    items: list[Round]


class Headline(View):
    """The operator's headline figures, on the server's clock."""

    at: AwareDatetime
    orders_last_hour: int
    delivered_last_hour: int
    mean_click_to_door_min: float | None = Field(description="orders delivered in the last hour")
    late_after_min: float = Field(description="an order not delivered this long after it was placed is late")
    late_open: int = Field(description="orders in progress and late already")
    late_delivered_last_hour: int
    open_job_offers: int = Field(description="jobs waiting for a shop's answer")
    open_route_offers: int = Field(description="routes waiting for a courier's answer")
    orders_in_progress: int


class LiveRoutes(View):
    items: list[Route]


class QuotedJob(View):
    shop_id: str
    shop_name: str
    lines: list[JobLine]
    subtotal_cents: int
    ready_and_travel_minutes: float


class Quote(View):
    """How an order would be split now (nothing is reserved: stock may change before it is placed)."""

    jobs: list[QuotedJob]
    total_cents: int


class Area(View):
    """The area the active shops sit in (their positions), to frame a map; null when there is none."""

    south: float | None
    west: float | None
    north: float | None
    east: float | None
    shops: int


class Cell(View):
    cell: str = Field(description="H3 index, hexadecimal")
    edge: bool = Field(description="the zone's boundary crosses it")
    boundary: list[list[float]] = Field(description="[[lat, lng], ...]")


class Cells(View):
    shop_id: str
    resolution: int | None
    cells: list[Cell]


class Availability(View):
    shop_id: str
    active: bool = Field(description="taking orders: offered jobs and listed as delivering")


class OpsChanged(View):
    """ops.changed (volatile, to operators): what changed since the last one; read it back over HTTP."""

    orders: list[str]
    couriers: list[str]
    shops: list[str]
    events: int


# --- the outbox, operations ----------------------------------------------------------------------------


class Event(View):
    seq: int
    type: str
    at: AwareDatetime
    data: dict[str, Any]


class Events(View):
    events: list[Event]


class Status(View):
    status: str


class Clock(View):
    now: AwareDatetime
    speed: float
    start: AwareDatetime | None
    epoch: float | None
