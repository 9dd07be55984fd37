"""The measures of a replayed day, as the published evaluator defines them.

Per order (placement and ready times from the instance, the rest from the trace):

- click-to-door = delivery - placement; ready-to-door = delivery - ready;
  ready-to-pickup = pickup - ready; click-to-door overage = max(0, click-to-door - target).
  Each over the orders that got that far, summarised as mean, std (sample, n - 1, as pandas'
  ``describe``), min, p10, median, p90, max (percentiles interpolated linearly); None when
  there are too few values.

The floor of an order is what no policy can beat: ready - placement + half the pickup service + the
direct drive from its restaurant to its door (the instance's rounded-up minutes) + half the drop-off
service. ``floor`` describes it over every order; ``gap_to_floor`` is the mean click-to-door minus the
mean floor of the same (delivered) orders. ``click_to_door_counting_undelivered`` counts an order
never delivered at placement + the maximum click-to-door, as the evaluator's files are written (see
``trace.py``), so leaving orders behind does not flatter the mean.

Fleet-wide (duty hours from the shifts, ``off_time - on_time``, whether or not the courier
worked):

- orders (bundles) per courier-hour = orders delivered (assignments picked up) / duty hours. With
  every order delivered this is the same for any two policies (same orders, same shifts), so it
  cannot tell them apart; hence also
- orders (bundles) per active courier-hour = the same over *active* hours: the time a courier has
  work assigned, from each assignment to its last drop-off plus half the drop-off service (when
  the courier is free again), overlapping spans of one courier counted once;
- utilisation = (driving + serving) / duty time, driving being the travel time of every move
  and serving the pickup service per bundle plus the drop-off service per order delivered;
- pay per courier = max(pay per order x orders delivered, guaranteed pay per hour x duty
  hours); the share on the guaranteed minimum counts couriers whose order earnings fall
  short of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from dispatch.replay.feasibility import check
from dispatch.replay.instance import Instance, travel_minutes
from dispatch.replay.trace import OrderRecord, Trace

STATS = ("mean", "std", "min", "p10", "median", "p90", "max")
ORDER_MEASURES = ("click_to_door", "ready_to_door", "ready_to_pickup", "click_to_door_overage")


def order_floor(instance: Instance, order_id: str) -> float:
    """The least click-to-door any policy could give the order (see the module docstring)."""
    params = instance.parameters
    order = instance.orders[order_id]
    drive = travel_minutes(instance.restaurants[order.restaurant], order, params)
    half_services = (params.pickup_service_minutes + params.dropoff_service_minutes) / 2
    return order.ready_time - order.placement_time + half_services + drive


def describe(values: list[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(STATS)
    a = np.asarray(values, dtype=float)
    p10, median, p90 = (float(v) for v in np.percentile(a, [10, 50, 90]))
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else None,
        "min": float(a.min()),
        "p10": p10,
        "median": median,
        "p90": p90,
        "max": float(a.max()),
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def compute_metrics(instance: Instance, trace: Trace, *, tolerance: float = 0.0) -> dict[str, Any]:
    """The day's measures and feasibility as a JSON-serialisable dict."""
    params = instance.parameters
    records: dict[str, OrderRecord] = {}
    for rec in trace.orders:
        # A duplicate is a feasibility violation; measure the first record only.
        if rec.order in instance.orders:
            records.setdefault(rec.order, rec)

    measures: dict[str, list[float]] = {m: [] for m in ORDER_MEASURES}
    delivered_by: dict[str, int] = dict.fromkeys(instance.couriers, 0)
    for o, rec in records.items():
        order = instance.orders[o]
        if rec.pickup_time is not None:
            measures["ready_to_pickup"].append(rec.pickup_time - order.ready_time)
        if rec.delivery_time is None:
            continue
        ctd = rec.delivery_time - order.placement_time
        measures["click_to_door"].append(ctd)
        measures["ready_to_door"].append(rec.delivery_time - order.ready_time)
        measures["click_to_door_overage"].append(max(0.0, ctd - params.target_click_to_door))
        if rec.courier in delivered_by:
            delivered_by[rec.courier] += 1
    delivered = len(measures["click_to_door"])
    floors = {o: order_floor(instance, o) for o in instance.orders}
    reached = [o for o, rec in records.items() if rec.delivery_time is not None]
    floor_reached = float(np.mean([floors[o] for o in reached])) if reached else None
    counting_undelivered = [
        (
            rec.delivery_time
            if rec is not None and rec.delivery_time is not None
            else order.placement_time + params.max_click_to_door
        )
        - order.placement_time
        for o, order in instance.orders.items()
        for rec in [records.get(o)]
    ]

    bundles_by: dict[str, int] = dict.fromkeys(instance.couriers, 0)
    for a in trace.assignments:
        if a.courier in bundles_by:
            bundles_by[a.courier] += 1
    driving = 0.0
    for m in trace.moves:
        if (
            m.courier in instance.couriers
            and instance.has_place(m.origin)
            and instance.has_place(m.destination)
        ):
            origin, dest = instance.place(m.origin, m.courier), instance.place(m.destination, m.courier)
            driving += travel_minutes(origin, dest, params)
    bundles = sum(bundles_by.values())
    serving = params.pickup_service_minutes * bundles + params.dropoff_service_minutes * sum(
        delivered_by.values()
    )

    active_minutes = _active_minutes(instance, trace, records)
    duty_minutes = 0.0
    total_pay = 0.0
    on_guarantee = 0
    for cid, c in instance.couriers.items():
        hours = (c.off_time - c.on_time) / 60
        duty_minutes += c.off_time - c.on_time
        earned = params.pay_per_order * delivered_by[cid]
        guaranteed = params.guaranteed_pay_per_hour * hours
        total_pay += max(earned, guaranteed)
        on_guarantee += earned < guaranteed
    duty_hours = duty_minutes / 60

    violations = check(instance, trace, tolerance=tolerance)
    click_to_door = measures["click_to_door"]
    return {
        "instance": instance.name,
        "orders": {
            "total": len(instance.orders),
            "delivered": delivered,
            "delivered_share": _ratio(delivered, len(instance.orders)),
            "beyond_target": sum(v > params.target_click_to_door for v in click_to_door),
            "beyond_max": sum(v > params.max_click_to_door for v in click_to_door),
            "refused": len(trace.refused),
            # Taken at placement and never delivered: what a check at placement should leave at 0.
            "left_behind": len(instance.orders) - delivered - len(set(trace.refused)),
        },
        **{m: describe(v) for m, v in measures.items()},
        "floor": describe(list(floors.values())),
        "gap_to_floor": (None if floor_reached is None else float(np.mean(click_to_door)) - floor_reached),
        "click_to_door_counting_undelivered": describe(counting_undelivered),
        "couriers": {
            "count": len(instance.couriers),
            "duty_hours": duty_hours,
            "orders_per_courier_hour": _ratio(delivered, duty_hours),
            "bundles_per_courier_hour": _ratio(bundles, duty_hours),
            "active_hours": active_minutes / 60,
            "orders_per_active_hour": _ratio(delivered, active_minutes / 60),
            "bundles_per_active_hour": _ratio(bundles, active_minutes / 60),
            "utilisation": _ratio(driving + serving, duty_minutes),
            "driving_minutes": driving,
            "serving_minutes": serving,
            "total_pay": total_pay,
            "guaranteed_share": _ratio(on_guarantee, len(instance.couriers)),
        },
        "feasibility": {
            "violations": len(violations),
            "list": [v.to_dict() for v in violations],
        },
    }


def _active_minutes(instance: Instance, trace: Trace, records: dict[str, OrderRecord]) -> float:
    """Minutes couriers have work assigned: per courier, the union of [assignment, last drop-off of the
    assignment + half the drop-off service] (to the pickup, when nothing of it was delivered)."""
    half_drop = instance.parameters.dropoff_service_minutes / 2
    spans: dict[str, list[tuple[float, float]]] = {}
    for a in trace.assignments:
        ends = [
            rec.delivery_time + half_drop
            for o in a.order_ids
            if (rec := records.get(o)) is not None and rec.delivery_time is not None
        ]
        end = max(ends) if ends else a.pickup_time
        if end > a.assignment_time:
            spans.setdefault(a.courier, []).append((a.assignment_time, end))
    total = 0.0
    for intervals in spans.values():
        current: tuple[float, float] | None = None
        for start, end in sorted(intervals):
            if current is not None and start <= current[1]:
                current = (current[0], max(current[1], end))
                continue
            if current is not None:
                total += current[1] - current[0]
            current = (start, end)
        if current is not None:
            total += current[1] - current[0]
    return total


# --- side-by-side report ---------------------------------------------------------------------


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


Row = tuple[str, Callable[[dict[str, Any]], str]]
ROWS: list[Row] = [
    ("orders delivered", lambda m: f"{m['orders']['delivered']}/{m['orders']['total']}"),
    (
        "refused / left behind",
        lambda m: f"{m['orders'].get('refused', 0)}/{m['orders'].get('left_behind', 0)}",
    ),
    ("beyond target / max", lambda m: f"{m['orders']['beyond_target']}/{m['orders']['beyond_max']}"),
    *(
        (f"click-to-door {s}", lambda m, s=s: _num(m["click_to_door"][s], 1))
        for s in ("mean", "median", "p90", "max")
    ),
    ("floor mean", lambda m: _num(m["floor"]["mean"], 1)),
    ("gap to floor", lambda m: _num(m["gap_to_floor"], 1)),
    ("counting undelivered mean", lambda m: _num(m["click_to_door_counting_undelivered"]["mean"], 1)),
    ("ready-to-door mean", lambda m: _num(m["ready_to_door"]["mean"], 1)),
    ("ready-to-pickup mean", lambda m: _num(m["ready_to_pickup"]["mean"], 1)),
    ("overage mean", lambda m: _num(m["click_to_door_overage"]["mean"], 1)),
    ("orders / courier-hour", lambda m: _num(m["couriers"]["orders_per_courier_hour"])),
    ("bundles / courier-hour", lambda m: _num(m["couriers"]["bundles_per_courier_hour"])),
    ("orders / active courier-hour", lambda m: _num(m["couriers"].get("orders_per_active_hour"))),
    ("bundles / active courier-hour", lambda m: _num(m["couriers"].get("bundles_per_active_hour"))),
    ("utilisation", lambda m: _pct(m["couriers"]["utilisation"])),
    ("total pay", lambda m: _num(m["couriers"]["total_pay"])),
    ("on guaranteed pay", lambda m: _pct(m["couriers"]["guaranteed_share"])),
    ("violations", lambda m: str(m["feasibility"]["violations"])),
]


def format_comparison(metrics_by_policy: dict[str, dict[str, Any]]) -> str:
    """Policies side by side, one column each, one measure a row (minutes unless marked)."""
    policies = list(metrics_by_policy)
    cells = [[render(metrics_by_policy[p]) for p in policies] for _, render in ROWS]
    label_width = max(len(label) for label, _ in ROWS)
    widths = [max(len(p), *(len(row[i]) for row in cells)) for i, p in enumerate(policies)]
    lines = ["  ".join([" " * label_width, *(p.rjust(w) for p, w in zip(policies, widths, strict=True))])]
    lines.append("-" * len(lines[0]))
    for (label, _), row in zip(ROWS, cells, strict=True):
        values = (c.rjust(w) for c, w in zip(row, widths, strict=True))
        lines.append("  ".join([label.ljust(label_width), *values]))
    return "\n".join(lines)
