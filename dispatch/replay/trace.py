"""The recorded outcome of a replayed day, and its export as the published evaluator's files.

Times are instance minutes; a live replay records them as floats on its scaled clock.

The evaluator (``MDRP_code/compute_performance_summary.py`` of grubhub/mdrplib) reads
``solution_info_assignments.txt`` and ``solution_info_couriers.txt`` by splitting on any
whitespace, but ``solution_info_orders.txt`` with ``pandas.read_table(sep=' ')`` and the column
names ``order placement_time ready_time pickup_time dropoff_time courier``. The files are
therefore written space-separated (a tab there would make its columns unreadable) and with
``dropoff_time`` as the delivery column; missing values are ``NaN``, which it skips.

An order never delivered would be a row of ``NaN`` that the evaluator leaves out of click-to-door
and counts with an overage of 0 (``max(0, NaN)`` is 0 in Python), understating both. Given the
instance's maximum click-to-door, such an order is written delivered at placement + that maximum,
with no courier: the evaluator still counts it as not delivered (its row has a ``NaN``, and with
no courier no place is checked), but its click-to-door and overage count at the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dispatch.replay.instance import format_number

ASSIGNMENTS_FILE = "solution_info_assignments.txt"
ORDERS_FILE = "solution_info_orders.txt"
COURIERS_FILE = "solution_info_couriers.txt"

ASSIGNMENTS_HEADER = ("assignment_time", "pickup_time", "courier", "orders")
ORDERS_HEADER = (
    "order",
    "placement_time",
    "ready_time",
    "pickup_time",
    "dropoff_time",
    "courier",
)
COURIERS_HEADER = ("courier", "departure_time", "origin", "destination")
SEPARATOR = " "


@dataclass(frozen=True)
class AssignmentRecord:
    """An executed assignment: a bundle of orders from one restaurant, picked up together by
    one courier and delivered in the listed sequence."""

    assignment_time: float
    pickup_time: float
    courier: str
    order_ids: tuple[str, ...]


@dataclass(frozen=True)
class OrderRecord:
    """What happened to one order; the times after placement are None if it never got there."""

    order: str
    placement_time: float
    ready_time: float
    assignment_time: float | None = None
    pickup_time: float | None = None
    delivery_time: float | None = None
    courier: str | None = None


@dataclass(frozen=True)
class CourierMove:
    """A courier leaving ``origin`` for ``destination``: "0" (its start point), a restaurant id
    or an order id (the order's drop-off point)."""

    courier: str
    departure_time: float
    origin: str
    destination: str


@dataclass
class Trace:
    assignments: list[AssignmentRecord] = field(default_factory=list)
    orders: list[OrderRecord] = field(default_factory=list)
    # Each courier's moves in execution order (couriers may interleave).
    moves: list[CourierMove] = field(default_factory=list)
    refused: tuple[str, ...] = ()  # orders refused at placement (never placed)

    def moves_by_courier(self) -> dict[str, list[CourierMove]]:
        by_courier: dict[str, list[CourierMove]] = {}
        for move in self.moves:
            by_courier.setdefault(move.courier, []).append(move)
        return by_courier


def _opt(value: float | str | None) -> str:
    if value is None:
        return "NaN"
    return value if isinstance(value, str) else format_number(value)


def _missed(order: OrderRecord, max_click_to_door: float | None) -> float | None:
    """The drop-off time an undelivered order is written with, or None (delivered, or no maximum given)."""
    if order.delivery_time is not None or max_click_to_door is None:
        return None
    return order.placement_time + max_click_to_door


def _write(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    lines = [SEPARATOR.join(header)] + [SEPARATOR.join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_solution(
    trace: Trace, directory: str | Path, *, max_click_to_door: float | None = None
) -> list[Path]:
    """Write the three solution files; returns their paths. With `max_click_to_door`, orders not delivered
    count at it (see the module docstring)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / ASSIGNMENTS_FILE, directory / ORDERS_FILE, directory / COURIERS_FILE]
    _write(
        paths[0],
        ASSIGNMENTS_HEADER,
        [[_opt(a.assignment_time), _opt(a.pickup_time), a.courier, *a.order_ids] for a in trace.assignments],
    )
    _write(
        paths[1],
        ORDERS_HEADER,
        [
            [
                o.order,
                _opt(o.placement_time),
                _opt(o.ready_time),
                _opt(o.pickup_time),
                _opt(o.delivery_time if missed is None else missed),
                _opt(o.courier if missed is None else None),
            ]
            for o in trace.orders
            for missed in [_missed(o, max_click_to_door)]
        ],
    )
    # The evaluator groups a courier's moves by consecutive lines, so keep each courier's together.
    _write(
        paths[2],
        COURIERS_HEADER,
        [
            [m.courier, _opt(m.departure_time), m.origin, m.destination]
            for moves in trace.moves_by_courier().values()
            for m in moves
        ],
    )
    return paths
