"""Where two runs of the same day differ, order by order and phase by phase (`replay phases`).

Each run is read from the evaluator's three files it wrote (`replay --out`, `replay offline --out`). Per
delivered order, in minutes:

- `assigned`: the assignment (the route that collected it was given to its courier) after placement;
- `set_off`: the courier leaving for the shop after placement;
- `at_shop`: the courier reaching the shop (that departure plus the leg's instance travel time) after ready;
- `pickup`: the pickup after ready; `counter`: the pickup after reaching the shop;
- `ride`: the drop-off after the pickup;
- `click_to_door`: the drop-off after placement.

A courier sent on time reaches the shop half a pickup service before ready (`at_shop` = -2 at 4 minutes of
service). Comparing the same order in both runs shows which phase the minutes went to; the decisions of two
runs drift apart over a day, so single orders differ both ways and the means tell more than any one order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dispatch.replay.instance import Instance, Point, travel_minutes
from dispatch.replay.trace import ASSIGNMENTS_FILE, COURIERS_FILE, ORDERS_FILE

PHASES = ("assigned", "set_off", "at_shop", "pickup", "counter", "ride", "click_to_door")


@dataclass(frozen=True)
class _Row:
    placement: float
    ready: float
    pickup: float
    dropoff: float
    courier: str


def _number(text: str) -> float:
    return math.nan if text == "NaN" else float(text)


def order_phases(instance: Instance, run: Path) -> dict[str, dict[str, float]]:
    """Each delivered order's phases in the run written to `run`."""
    rows: dict[str, _Row] = {}
    for line in (run / ORDERS_FILE).read_text().splitlines()[1:]:
        order, placement, ready, pickup, dropoff, courier = line.split()
        if courier != "NaN" and pickup != "NaN":
            rows[order] = _Row(_number(placement), _number(ready), _number(pickup), _number(dropoff), courier)
    assigned: dict[str, float] = {}
    for line in (run / ASSIGNMENTS_FILE).read_text().splitlines()[1:]:
        fields = line.split()
        for order in fields[3:]:
            assigned[order] = _number(fields[0])
    moves: dict[str, list[tuple[float, str, str]]] = {}
    for line in (run / COURIERS_FILE).read_text().splitlines()[1:]:
        courier, leaves, origin, destination = line.split()
        moves.setdefault(courier, []).append((_number(leaves), origin, destination))

    def point(courier: str, place: str) -> Point:
        if place == "0":
            return instance.couriers[courier]
        return instance.restaurants.get(place) or instance.orders[place]

    out: dict[str, dict[str, float]] = {}
    for order, row in rows.items():
        shop = instance.orders[order].restaurant
        legs = [m for m in moves.get(row.courier, []) if m[2] == shop and m[0] <= row.pickup + 1e-9]
        if not legs:
            continue
        departure, origin, _ = legs[-1]
        travel = travel_minutes(point(row.courier, origin), point(row.courier, shop), instance.parameters)
        arrival = departure + travel
        out[order] = {
            "assigned": assigned.get(order, math.nan) - row.placement,
            "set_off": departure - row.placement,
            "at_shop": arrival - row.ready,
            "pickup": row.pickup - row.ready,
            "counter": row.pickup - arrival,
            "ride": row.dropoff - row.pickup,
            "click_to_door": row.dropoff - row.placement,
        }
    return out


def compare(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per phase, over the orders delivered in both: the mean in each run and the distribution of b - a."""
    common = sorted(set(a) & set(b))
    table: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        x = np.array([a[o][phase] for o in common])
        y = np.array([b[o][phase] for o in common])
        d = y - x
        if not common or np.all(np.isnan(d)):
            continue
        table[phase] = {
            "a": float(np.nanmean(x)),
            "b": float(np.nanmean(y)),
            "diff": float(np.nanmean(d)),
            "p10": float(np.nanpercentile(d, 10)),
            "median": float(np.nanmedian(d)),
            "p90": float(np.nanpercentile(d, 90)),
        }
    return table


def format_phases(table: dict[str, dict[str, float]], a: str, b: str, orders: int) -> str:
    lines = [
        f"{orders} orders delivered in both; minutes, {b} - {a} per order",
        f"{'phase':14} {a[:9]:>9} {b[:9]:>9} {'diff':>7} {'p10':>7} {'median':>7} {'p90':>7}",
    ]
    for phase, row in table.items():
        lines.append(
            f"{phase:14} {row['a']:9.2f} {row['b']:9.2f} {row['diff']:7.2f} {row['p10']:7.2f} "
            f"{row['median']:7.2f} {row['p90']:7.2f}"
        )
    return "\n".join(lines)
