"""PNG plots of a replayed day.

Figures are drawn on an explicit Agg canvas through matplotlib's object API and never through
``pyplot``: no window can open, no global backend is switched for the rest of the process, and
nothing is left registered in pyplot's figure manager.

matplotlib comes with the `replay` extra; it is imported only when a plot is drawn, so that the command
line (which lists the replay commands) works without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dispatch.extras import require
from dispatch.replay.instance import Instance, travel_minutes
from dispatch.replay.trace import OrderRecord, Trace

CLICK_TO_DOOR_PNG = "click_to_door.png"
TIMELINE_PNG = "timeline.png"
ROUTES_PNG = "routes.png"

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def require_plots() -> None:
    """StartupError unless matplotlib is installed: checked before a replay starts, not after it ran."""
    require("replay", "the replay's plots")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _records(instance: Instance, trace: Trace) -> dict[str, OrderRecord]:
    records: dict[str, OrderRecord] = {}
    for rec in trace.orders:
        if rec.order in instance.orders:
            records.setdefault(rec.order, rec)
    return records


def _click_to_door(instance: Instance, trace: Trace, path: Path) -> None:
    p = instance.parameters
    values = [
        rec.delivery_time - instance.orders[o].placement_time
        for o, rec in _records(instance, trace).items()
        if rec.delivery_time is not None
    ]
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    top = max([*values, p.max_click_to_door]) + 5
    ax.hist(values, bins=list(range(0, int(top) + 5, 5)), color="tab:blue", edgecolor="white")
    ax.axvline(p.target_click_to_door, color="tab:orange", label=f"target {p.target_click_to_door:g}")
    ax.axvline(p.max_click_to_door, color="tab:red", label=f"maximum {p.max_click_to_door:g}")
    ax.set(
        xlabel="click-to-door (minutes)",
        ylabel="orders",
        title=f"{instance.name}: {len(values)} of {len(instance.orders)} orders delivered",
    )
    ax.legend()
    fig.savefig(path, dpi=100)


def _timeline(instance: Instance, trace: Trace, path: Path) -> None:
    p = instance.parameters
    records = _records(instance, trace)
    ends = [c.off_time for c in instance.couriers.values()]
    ends += [r.delivery_time for r in records.values() if r.delivery_time is not None]
    minutes = np.arange(0, int(max(ends, default=0)) + 2)

    def between(start: float, end: float) -> np.ndarray:
        return (minutes >= start) & (minutes < end)

    waiting = np.zeros(len(minutes))
    carried = np.zeros(len(minutes))
    for o, order in instance.orders.items():
        rec = records.get(o)
        pickup = rec.pickup_time if rec and rec.pickup_time is not None else np.inf
        delivery = rec.delivery_time if rec and rec.delivery_time is not None else np.inf
        waiting += between(order.placement_time, pickup)
        carried += between(pickup, delivery)

    on_shift = sum(
        (between(c.on_time, c.off_time) for c in instance.couriers.values()), np.zeros(len(minutes))
    )
    # Busy = driving or serving, as in the utilisation measure; one flag per courier and minute.
    busy = {cid: np.zeros(len(minutes), dtype=bool) for cid in instance.couriers}
    for m in trace.moves:
        if m.courier in busy and instance.has_place(m.origin) and instance.has_place(m.destination):
            a, b = instance.place(m.origin, m.courier), instance.place(m.destination, m.courier)
            busy[m.courier] |= between(m.departure_time, m.departure_time + travel_minutes(a, b, p))
    for asg in trace.assignments:
        if asg.courier in busy:
            half = p.pickup_service_minutes / 2
            busy[asg.courier] |= between(asg.pickup_time - half, asg.pickup_time + half)
    for rec in records.values():
        if rec.courier in busy and rec.delivery_time is not None:
            half = p.dropoff_service_minutes / 2
            busy[rec.courier] |= between(rec.delivery_time - half, rec.delivery_time + half)

    fig = _figure(9, 5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.step(minutes, waiting, where="post", label="orders waiting for pickup")
    top.step(minutes, carried, where="post", label="orders on the way")
    top.set(ylabel="orders", title=f"{instance.name}: orders and couriers over the day")
    top.legend(loc="upper left")
    bottom.step(minutes, on_shift, where="post", label="couriers on shift", color="tab:gray")
    bottom.step(minutes, sum(busy.values(), np.zeros(len(minutes))), where="post", label="couriers busy")
    bottom.set(xlabel="minute of the day", ylabel="couriers")
    bottom.legend(loc="upper left")
    fig.savefig(path, dpi=100)


def _routes(instance: Instance, trace: Trace, path: Path) -> None:
    from matplotlib.collections import LineCollection

    records = _records(instance, trace)
    segments = []
    for m in trace.moves:
        if (
            m.courier in instance.couriers
            and instance.has_place(m.origin)
            and instance.has_place(m.destination)
        ):
            a, b = instance.place(m.origin, m.courier), instance.place(m.destination, m.courier)
            segments.append([(a.x / 1000, a.y / 1000), (b.x / 1000, b.y / 1000)])

    fig = _figure(8, 8)
    ax = fig.add_subplot()
    ax.add_collection(LineCollection(segments, colors="tab:blue", linewidths=0.5, alpha=0.35))
    done = {o for o, rec in records.items() if rec.delivery_time is not None}
    delivered = [o for o in instance.orders.values() if o.id in done]
    missed = [o for o in instance.orders.values() if o.id not in done]
    for orders, colour, label in ((delivered, "tab:green", "drop-off"), (missed, "tab:red", "not delivered")):
        if orders:
            ax.scatter([o.x / 1000 for o in orders], [o.y / 1000 for o in orders], s=6, c=colour, label=label)
    couriers = list(instance.couriers.values())
    ax.scatter(
        [c.x / 1000 for c in couriers],
        [c.y / 1000 for c in couriers],
        s=12,
        marker="x",
        c="tab:gray",
        label="courier start",
    )
    restaurants = list(instance.restaurants.values())
    ax.scatter(
        [r.x / 1000 for r in restaurants],
        [r.y / 1000 for r in restaurants],
        s=30,
        marker="^",
        c="black",
        label="restaurant",
    )
    ax.set(xlabel="x (km)", ylabel="y (km)", title=f"{instance.name}: the day's routes", aspect="equal")
    ax.autoscale()
    ax.legend(loc="upper right", fontsize="small")
    fig.savefig(path, dpi=100)


def write_plots(instance: Instance, trace: Trace, directory: str | Path) -> list[Path]:
    """Write the click-to-door histogram, the timeline and the route map; returns the paths."""
    require_plots()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / CLICK_TO_DOOR_PNG, directory / TIMELINE_PNG, directory / ROUTES_PNG]
    _click_to_door(instance, trace, paths[0])
    _timeline(instance, trace, paths[1])
    _routes(instance, trace, paths[2])
    return paths
