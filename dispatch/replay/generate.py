"""Generated delivery days in the instance format, for tests and development.

The structure follows the published instances' summaries: restaurants clustered in a few
neighbourhoods of a square area, drop-offs a few kilometres from their restaurant (mean about
2.3 km), order placements with a lunch and a larger dinner peak over a day of ``day_minutes``,
ready times 10-30 minutes after placement, a few popular restaurants (Zipf-like popularity, so
bundling has something to work with), and courier shifts of 2-4 hours staggered on half-hour
boundaries to follow demand. The fleet is sized from the realised demand so that even the
``nearest-idle`` baseline delivers every order.

Families (``family``) make harder days from the same draws:

- ``base``: the above;
- ``flat``: the same courier hours, but shifts that ignore demand: starts spread evenly over the
  day, so too few couriers are on shift in the evening peak (and some at the end of the day);
- ``slow``: travel at 80% of the speed (``meters_per_minute``);
- ``prep``: preparation of 20-45 minutes instead of 10-30;
- ``hard``: all three.

Deterministic per seed: only ``random.Random(seed)`` is used, whose streams Python keeps stable.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Callable

from dispatch.replay.instance import Courier, Instance, Order, Parameters, Restaurant

DEFAULT_PARAMETERS = Parameters(320, 4, 4, 40, 90, 10, 15)
BLOCK = 30  # shift boundaries, minutes
SHIFT_LENGTHS = (120, 180, 240)
FAMILIES = ("base", "flat", "slow", "prep", "hard")
SLOW_SPEED = 0.8  # of the speed, on slow days
FLAT_SHARE = 0.5  # of the courier hours, on flat days
PREP = {False: (10, 30), True: (20, 45)}  # minutes from placement to ready, by long preparation


def _point_in_area(draw: Callable[[], tuple[float, float]], area_m: float) -> tuple[int, int]:
    """A drawn point, redrawn while outside the area (clipping would pile points on its edge)."""
    for _ in range(100):
        x, y = draw()
        if 0 <= x <= area_m and 0 <= y <= area_m:
            return round(x), round(y)
    return round(min(area_m, max(0.0, x))), round(min(area_m, max(0.0, y)))


def _around(rng: random.Random, cx: float, cy: float, sd: float) -> Callable[[], tuple[float, float]]:
    return lambda: (rng.gauss(cx, sd), rng.gauss(cy, sd))


def _drop_off(rng: random.Random, r: Restaurant) -> Callable[[], tuple[float, float]]:
    # 0.1-5.5 km, mostly about 1.5 km: a mean near the published instances' 2.3 km.
    def draw() -> tuple[float, float]:
        dist, angle = rng.triangular(100, 5500, 1500), rng.uniform(0, 2 * math.pi)
        return r.x + dist * math.cos(angle), r.y + dist * math.sin(angle)

    return draw


def _placement_time(rng: random.Random, day_minutes: int) -> int:
    # 35% lunch, 50% dinner, 15% spread over the day; resampled until inside the ordering
    # window, which closes an hour before the end of the day so that every order can be served.
    last = day_minutes - 60
    while True:
        u = rng.random()
        if u < 0.35:
            t = rng.gauss(0.2 * day_minutes, 0.06 * day_minutes)
        elif u < 0.85:
            t = rng.gauss(0.72 * day_minutes, 0.07 * day_minutes)
        else:
            t = rng.uniform(0, last)
        if 0 <= t <= last:
            return round(t)


def _shifts(
    ready_times: list[float], orders_per_courier_hour: float, end: float
) -> list[tuple[float, float]]:
    """Shifts on half-hour boundaries covering, in each block, enough couriers for the orders
    ready from half an hour before to an hour after the block's start."""
    n_blocks = math.ceil(end / BLOCK)
    required = []
    for b in range(n_blocks):
        start = b * BLOCK
        demand = sum(1 for t in ready_times if start - BLOCK <= t < start + 2 * BLOCK) / 1.5
        required.append(max(1, math.ceil(demand / orders_per_courier_hour)) if demand else 0)
    shifts: list[tuple[float, float]] = []
    for b, need in enumerate(required):
        start = b * BLOCK
        on_duty = sum(1 for on, off in shifts if on <= start < off)
        for k in range(need - on_duty):
            length = SHIFT_LENGTHS[(b + k) % len(SHIFT_LENGTHS)]
            shifts.append((start, min(start + length, end)))
    return shifts


def _flat_shifts(demand_shifts: list[tuple[float, float]], end: float) -> list[tuple[float, float]]:
    """As many courier hours as `demand_shifts`, FLAT_SHARE of them in shifts starting evenly over the day
    regardless of demand (on half-hour boundaries, lengths cycling through SHIFT_LENGTHS, cut at the end of
    the day), the rest as every other shift of `demand_shifts`."""
    kept = demand_shifts[:: round(1 / (1 - FLAT_SHARE))] if FLAT_SHARE < 1 else []
    hours = sum(off - on for on, off in demand_shifts) - sum(off - on for on, off in kept)
    n_blocks = max(1, math.ceil(end / BLOCK))
    shifts: list[tuple[float, float]] = []
    total, k = 0.0, 0
    while total < hours:
        length = SHIFT_LENGTHS[k % len(SHIFT_LENGTHS)]
        start = ((k * 7) % n_blocks) * BLOCK  # 7 is prime to most block counts: starts spread out
        off = min(start + length, end)
        if off > start:
            shifts.append((start, off))
            total += off - start
        k += 1
    return sorted(kept + shifts)


def generate_instance(
    n_orders: int,
    seed: int,
    *,
    n_restaurants: int | None = None,
    n_neighbourhoods: int = 4,
    area_m: float = 12_000.0,
    day_minutes: int = 780,
    orders_per_courier_hour: float = 2.0,
    parameters: Parameters = DEFAULT_PARAMETERS,
    family: str = "base",
) -> Instance:
    """A generated day. ``orders_per_courier_hour`` sizes the fleet: lower means more couriers.

    The name encodes the variant: ``g{seed}o{orders}r{restaurants}n{neighbourhoods}``
    ``a{area km}d{day minutes}k{100 x orders per courier-hour}``, then ``-{family}`` but for ``base``.
    The families draw the same restaurants, placements, doors and courier start points as ``base``.
    """
    if n_orders < 1 or n_neighbourhoods < 1 or area_m <= 0 or orders_per_courier_hour <= 0:
        raise ValueError("generate_instance needs positive sizes")
    if day_minutes < 4 * BLOCK:
        raise ValueError("day_minutes must be at least two hours")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}")
    flat, slow, long_prep = (family in (f, "hard") for f in ("flat", "slow", "prep"))
    n_restaurants = n_restaurants or max(3, n_orders // 4)
    rng = random.Random(seed)
    margin = 0.15 * area_m

    hoods = [
        (rng.uniform(margin, area_m - margin), rng.uniform(margin, area_m - margin))
        for _ in range(n_neighbourhoods)
    ]
    restaurants = {}
    for i in range(1, n_restaurants + 1):
        x, y = _point_in_area(_around(rng, *hoods[(i - 1) % n_neighbourhoods], 700), area_m)
        restaurants[f"r{i}"] = Restaurant(f"r{i}", x, y)

    # Popularity is independent of the neighbourhood: shuffle before giving Zipf weights.
    ranked = list(restaurants.values())
    rng.shuffle(ranked)
    cum_weights = list(itertools.accumulate(1 / (k + 1) ** 0.7 for k in range(len(ranked))))
    placements = sorted(_placement_time(rng, day_minutes) for _ in range(n_orders))
    orders = {}
    for i, placed in enumerate(placements, start=1):
        r = rng.choices(ranked, cum_weights=cum_weights)[0]
        x, y = _point_in_area(_drop_off(rng, r), area_m)
        prep = rng.randint(*PREP[False])
        if long_prep:  # scaled, so the rest of the stream (and the day) stays the same
            low, high = PREP[True]
            prep = low + round((prep - PREP[False][0]) * (high - low) / (PREP[False][1] - PREP[False][0]))
        orders[f"o{i}"] = Order(f"o{i}", x, y, placed, r.id, placed + prep)

    end = max(o.ready_time for o in orders.values()) + 60
    shifts = _shifts([o.ready_time for o in orders.values()], orders_per_courier_hour, end)
    if flat:
        shifts = _flat_shifts(shifts, end)
    couriers = {}
    for i, (on, off) in enumerate(shifts, start=1):
        # Most couriers start in a neighbourhood, some anywhere in the area.
        if rng.random() < 0.7:
            x, y = _point_in_area(_around(rng, *rng.choice(hoods), 1500), area_m)
        else:
            x, y = round(rng.uniform(0, area_m)), round(rng.uniform(0, area_m))
        couriers[f"c{i}"] = Courier(f"c{i}", x, y, on, off)

    name = (
        f"g{seed}o{n_orders}r{n_restaurants}n{n_neighbourhoods}"
        f"a{area_m / 1000:g}d{day_minutes}k{round(orders_per_courier_hour * 100)}"
    )
    if family != "base":
        name += f"-{family}"
    if slow:
        parameters = dataclasses.replace(
            parameters, meters_per_minute=round(parameters.meters_per_minute * SLOW_SPEED)
        )
    return Instance(name, restaurants, orders, couriers, parameters)
