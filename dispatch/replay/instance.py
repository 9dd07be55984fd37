"""A delivery day in the format of the Grubhub Meal Delivery Routing Problem instances.

Four tab-separated files with a header line each: ``restaurants.txt``, ``orders.txt``,
``couriers.txt`` and ``instance_parameters.txt``. Coordinates are metres on a plane, times are
minutes from the start of the day. Ids stay strings ("r1", "o12", "c3"): the solution files refer
to them verbatim, and ``"0"`` is reserved there for a courier's start point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

RESTAURANTS_FILE = "restaurants.txt"
ORDERS_FILE = "orders.txt"
COURIERS_FILE = "couriers.txt"
PARAMETERS_FILE = "instance_parameters.txt"

# The published files' headers; on reading only the first column name is checked.
RESTAURANTS_HEADER = ("restaurant", "x", "y")
ORDERS_HEADER = ("order", "x", "y", "placement_time", "restaurant", "ready_time")
COURIERS_HEADER = ("courier", "x", "y", "on_time", "off_time")
PARAMETERS_HEADER = (
    "meters_per_minute",
    "pickup service minutes",
    "dropoff service minutes",
    "target click-to-door",
    "maximum click-to-door",
    "pay per order",
    "guaranteed pay per hour",
)

# In the solution files a move's origin "0" is the courier's start point.
START_POINT = "0"


class InstanceError(ValueError):
    """An instance directory that cannot be read; the message names the file and line."""


class Point(Protocol):
    @property
    def x(self) -> float: ...
    @property
    def y(self) -> float: ...


@dataclass(frozen=True)
class Restaurant:
    id: str
    x: float
    y: float


@dataclass(frozen=True)
class Order:
    id: str
    x: float
    y: float
    placement_time: float
    restaurant: str
    ready_time: float


@dataclass(frozen=True)
class Courier:
    id: str
    x: float
    y: float
    on_time: float
    off_time: float


@dataclass(frozen=True)
class Parameters:
    meters_per_minute: float
    pickup_service_minutes: float
    dropoff_service_minutes: float
    target_click_to_door: float
    max_click_to_door: float
    pay_per_order: float
    guaranteed_pay_per_hour: float


@dataclass(frozen=True)
class Instance:
    name: str
    restaurants: dict[str, Restaurant]
    orders: dict[str, Order]
    couriers: dict[str, Courier]
    parameters: Parameters

    def place(self, place_id: str, courier_id: str) -> Point:
        """Where a stop of the solution files is: "0" (the courier's start), a restaurant or an
        order (its drop-off). Restaurant and order ids never collide (checked on loading)."""
        if place_id == START_POINT:
            return self.couriers[courier_id]
        if place_id in self.restaurants:
            return self.restaurants[place_id]
        return self.orders[place_id]

    def has_place(self, place_id: str) -> bool:
        return place_id == START_POINT or place_id in self.restaurants or place_id in self.orders


def distance_m(a: Point, b: Point) -> float:
    # sqrt of the sum of squares, as the published evaluator computes it, so that ceil() agrees
    # with it even at exact multiples of the speed.
    return math.sqrt((a.x - b.x) ** 2 + (a.y - b.y) ** 2)


def travel_minutes(a: Point, b: Point, params: Parameters) -> int:
    """Travel time of the instance format: euclidean metres over the speed, rounded up."""
    return math.ceil(distance_m(a, b) / params.meters_per_minute)


# --- reading -------------------------------------------------------------------------------


def _number(token: str, file: str, line: int, column: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise InstanceError(f"{file}, line {line}: {column} is not a number: {token!r}") from None
    if not math.isfinite(value):
        raise InstanceError(f"{file}, line {line}: {column} is not finite: {token!r}")
    # Keep whole numbers as ints so that they are written back exactly as read.
    return int(value) if value.is_integer() and "." not in token and "e" not in token.lower() else value


def _rows(directory: Path, file: str, header: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """Data rows of one file as (line number, fields); fields are split on any whitespace, which
    tolerates extra tabs, spaces and blank lines (no field of the format contains a space)."""
    path = directory / file
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InstanceError(f"{file}: file not found in {directory}") from None
    except OSError as exc:
        raise InstanceError(f"{file}: cannot read: {exc}") from None
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise InstanceError(f"{file}: empty file (expected a header line)")
    header_line, header_text = numbered[0]
    first = header_text.split("\t")[0].strip().lower()
    if first != header[0]:
        raise InstanceError(
            f"{file}, line {header_line}: expected a header line starting with {header[0]!r}, "
            f"got {header_text.strip()[:40]!r}"
        )
    rows = []
    for n, line in numbered[1:]:
        fields = line.split()
        if len(fields) != len(header):
            raise InstanceError(
                f"{file}, line {n}: expected {len(header)} fields ({' '.join(header)}), got {len(fields)}"
            )
        rows.append((n, fields))
    return rows


def _check_new_id(seen: set[str], ident: str, file: str, line: int) -> None:
    if ident == START_POINT:
        raise InstanceError(f"{file}, line {line}: id {START_POINT!r} is reserved")
    if ident in seen:
        raise InstanceError(f"{file}, line {line}: duplicate id {ident!r}")
    seen.add(ident)


def load_instance(directory: str | Path) -> Instance:
    directory = Path(directory)
    restaurants: dict[str, Restaurant] = {}
    # Restaurant and order ids share one namespace: the courier moves name places by id alone.
    places: set[str] = set()
    for n, (rid, x, y) in _rows(directory, RESTAURANTS_FILE, RESTAURANTS_HEADER):
        _check_new_id(places, rid, RESTAURANTS_FILE, n)
        f = RESTAURANTS_FILE
        restaurants[rid] = Restaurant(rid, _number(x, f, n, "x"), _number(y, f, n, "y"))

    orders: dict[str, Order] = {}
    for n, (oid, x, y, placed, rid, ready) in _rows(directory, ORDERS_FILE, ORDERS_HEADER):
        f = ORDERS_FILE
        _check_new_id(places, oid, f, n)
        if rid not in restaurants:
            raise InstanceError(f"{f}, line {n}: unknown restaurant {rid!r}")
        order = Order(
            oid,
            _number(x, f, n, "x"),
            _number(y, f, n, "y"),
            _number(placed, f, n, "placement_time"),
            rid,
            _number(ready, f, n, "ready_time"),
        )
        if order.ready_time < order.placement_time:
            raise InstanceError(f"{f}, line {n}: ready_time is before placement_time")
        orders[oid] = order

    couriers: dict[str, Courier] = {}
    courier_ids: set[str] = set()
    for n, (cid, x, y, on, off) in _rows(directory, COURIERS_FILE, COURIERS_HEADER):
        f = COURIERS_FILE
        _check_new_id(courier_ids, cid, f, n)
        courier = Courier(
            cid,
            _number(x, f, n, "x"),
            _number(y, f, n, "y"),
            _number(on, f, n, "on_time"),
            _number(off, f, n, "off_time"),
        )
        if courier.off_time < courier.on_time:
            raise InstanceError(f"{f}, line {n}: off_time is before on_time")
        couriers[cid] = courier

    param_rows = _rows(directory, PARAMETERS_FILE, PARAMETERS_HEADER)
    if len(param_rows) != 1:
        raise InstanceError(f"{PARAMETERS_FILE}: expected one data line, got {len(param_rows)}")
    n, fields = param_rows[0]
    values = [
        float(_number(tok, PARAMETERS_FILE, n, col))
        for tok, col in zip(fields, PARAMETERS_HEADER, strict=True)
    ]
    parameters = Parameters(*values)
    if parameters.meters_per_minute <= 0:
        raise InstanceError(f"{PARAMETERS_FILE}, line {n}: meters_per_minute must be positive")
    if min(values) < 0:
        raise InstanceError(f"{PARAMETERS_FILE}, line {n}: parameters must not be negative")
    return Instance(directory.resolve().name, restaurants, orders, couriers, parameters)


# --- writing -------------------------------------------------------------------------------


def format_number(value: float) -> str:
    """Whole numbers without a decimal point (as in the published files), others in full."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _write(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_instance(instance: Instance, directory: str | Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fmt = format_number
    _write(
        directory / RESTAURANTS_FILE,
        RESTAURANTS_HEADER,
        [[r.id, fmt(r.x), fmt(r.y)] for r in instance.restaurants.values()],
    )
    _write(
        directory / ORDERS_FILE,
        ORDERS_HEADER,
        [
            [o.id, fmt(o.x), fmt(o.y), fmt(o.placement_time), o.restaurant, fmt(o.ready_time)]
            for o in instance.orders.values()
        ],
    )
    _write(
        directory / COURIERS_FILE,
        COURIERS_HEADER,
        [[c.id, fmt(c.x), fmt(c.y), fmt(c.on_time), fmt(c.off_time)] for c in instance.couriers.values()],
    )
    p = instance.parameters
    values = [
        p.meters_per_minute,
        p.pickup_service_minutes,
        p.dropoff_service_minutes,
        p.target_click_to_door,
        p.max_click_to_door,
        p.pay_per_order,
        p.guaranteed_pay_per_hour,
    ]
    _write(directory / PARAMETERS_FILE, PARAMETERS_HEADER, [[fmt(v) for v in values]])
