"""The event catalogue: every event type, who receives it, and the model of its payload.

The outbox refuses a type that is not here, and with strict payloads on (the tests) checks each payload
against its model, so no event goes out with a shape nobody declared. The AsyncAPI document is built from
this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from dispatch import views


@dataclass(frozen=True)
class EventType:
    name: str
    to: str  # who receives it: shop, resident, courier
    payload: type[views.View]
    summary: str


CATALOGUE: dict[str, EventType] = {
    e.name: e
    for e in (
        EventType("job.offered", "shop", views.ShopJob, "a job to accept or reject by deadline_at"),
        EventType("job.accepted", "shop", views.ShopJob, "the job is accepted (by the shop, or at once)"),
        EventType("job.ready", "shop", views.ShopJob, "the goods are ready"),
        EventType("job.rejected", "shop", views.ShopJob, "the shop rejected it; its lines went elsewhere"),
        EventType("job.expired", "shop", views.ShopJob, "no answer by the deadline; it went elsewhere"),
        EventType("job.cancelled", "shop", views.ShopJob, "the order was cancelled"),
        EventType("job.picked_up", "shop", views.ShopJob, "the goods left with the courier"),
        EventType("job.collected", "shop", views.ShopJob, "the resident collected a pick-up order's goods"),
        EventType("order.placed", "resident", views.Order, "the order is placed and offered to its shops"),
        EventType("order.updated", "resident", views.Order, "the order changed (its state follows its jobs)"),
        EventType("order.ready_for_pickup", "resident", views.Order, "a pick-up order can be collected"),
        EventType(
            "order.items_unfulfilled", "resident", views.ItemsUnfulfilled, "items no shop was left to take"
        ),
        EventType("order.eta", "resident", views.OrderEta, "when the courier is at the door; the code"),
        EventType("route.offered", "courier", views.Route, "a route to accept or decline (or active)"),
        EventType("route.updated", "courier", views.Route, "stops added, moved, done; ETAs moved"),
        EventType("route.cancelled", "courier", views.Route, "the route was taken back"),
        EventType("courier.shift_started", "courier", views.CourierShift, "on shift"),
        EventType("courier.shift_ended", "courier", views.CourierShift, "off shift"),
    )
}

# Volatile messages: no seq, not stored, only to connected clients.
VOLATILE: dict[str, EventType] = {
    "courier.position": EventType(
        "courier.position",
        "resident or shop",
        views.CourierPosition,
        "where a courier you may follow is (at most once a second; resident: from pickup to delivery)",
    ),
    "ops.changed": EventType(
        "ops.changed",
        "admin",
        views.OpsChanged,
        "orders, couriers and shops that changed (at most twice a second per node): read them back",
    ),
}

_strict = False


def check_payloads(on: bool) -> None:
    """Validate every event payload against its model (the tests turn this on; it costs CPU per event)."""
    global _strict
    _strict = on


def check(type_: str, data: dict[str, Any]) -> None:
    """Raise ValueError for an undeclared type, or (strict) a payload its model refuses."""
    declared = CATALOGUE.get(type_)
    if declared is None:
        raise ValueError(f"event type {type_!r} is not in the catalogue (dispatch/events.py)")
    if _strict:
        try:
            declared.payload.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"{type_} payload does not match {declared.payload.__name__}: {exc}") from exc
