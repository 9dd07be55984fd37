from __future__ import annotations

import math

import pytest

from dispatch.replay.generate import DEFAULT_PARAMETERS, FAMILIES, SHIFT_LENGTHS, generate_instance
from dispatch.replay.instance import Instance
from dispatch.replay.simulate import simulate_nearest_idle


def test_deterministic_per_seed() -> None:
    assert generate_instance(200, seed=7) == generate_instance(200, seed=7)
    assert generate_instance(200, seed=7) != generate_instance(200, seed=8)


def test_name_encodes_the_variant() -> None:
    inst = generate_instance(120, seed=5, n_restaurants=30, n_neighbourhoods=3)
    assert inst.name == "g5o120r30n3a12d780k200"
    assert generate_instance(120, seed=5, orders_per_courier_hour=1.5).name.endswith("k150")


def test_ids_and_values_are_consistent() -> None:
    inst = generate_instance(300, seed=1, day_minutes=780, area_m=12_000)
    assert inst.parameters == DEFAULT_PARAMETERS
    assert list(inst.orders) == [f"o{i}" for i in range(1, 301)]
    assert list(inst.restaurants) == [f"r{i}" for i in range(1, 76)]
    assert list(inst.couriers) == [f"c{i}" for i in range(1, len(inst.couriers) + 1)]
    points = [(r.x, r.y) for r in inst.restaurants.values()]
    points += [(o.x, o.y) for o in inst.orders.values()]
    points += [(c.x, c.y) for c in inst.couriers.values()]
    assert all(0 <= x <= 12_000 and 0 <= y <= 12_000 for x, y in points)
    for o in inst.orders.values():
        assert o.restaurant in inst.restaurants
        assert 0 <= o.placement_time <= 780 - 60
        assert 10 <= o.ready_time - o.placement_time <= 30
        assert isinstance(o.placement_time, int) and isinstance(o.ready_time, int)
    for c in inst.couriers.values():
        assert c.on_time % 30 == 0
        assert 0 < c.off_time - c.on_time <= 240
    # Drop-offs a few kilometres from their restaurant, as in the published instances.
    dists = [
        math.dist((o.x, o.y), (inst.restaurants[o.restaurant].x, inst.restaurants[o.restaurant].y))
        for o in inst.orders.values()
    ]
    assert 1500 < sum(dists) / len(dists) < 3000
    assert max(dists) <= 5500 + 1


def test_lunch_and_dinner_peaks() -> None:
    inst = generate_instance(1000, seed=2, day_minutes=800)
    times = [o.placement_time for o in inst.orders.values()]

    def per_minute(start: float, end: float) -> float:
        return sum(start <= t < end for t in times) / (end - start)

    lunch, trough, dinner = per_minute(120, 200), per_minute(320, 420), per_minute(536, 616)
    assert lunch > 2 * trough
    assert dinner > 2 * trough
    assert dinner > lunch


def test_restaurants_cluster_in_neighbourhoods() -> None:
    inst = generate_instance(200, seed=4, n_restaurants=40, n_neighbourhoods=1)
    xs = [r.x for r in inst.restaurants.values()]
    ys = [r.y for r in inst.restaurants.values()]
    cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
    # One neighbourhood: every restaurant within a few kilometres of the others' centre.
    assert max(math.dist((x, y), (cx, cy)) for x, y in zip(xs, ys, strict=True)) < 3500


def test_shifts_follow_demand() -> None:
    inst = generate_instance(800, seed=3)

    def on_shift(t: float) -> int:
        return sum(c.on_time <= t < c.off_time for c in inst.couriers.values())

    assert on_shift(0.72 * 780) > 2 * on_shift(0.45 * 780)
    last_ready = max(o.ready_time for o in inst.orders.values())
    assert on_shift(last_ready) >= 1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_enough_couriers_for_the_baseline_to_deliver_everything(seed: int) -> None:
    inst = generate_instance(300, seed)
    trace = simulate_nearest_idle(inst)
    assert all(rec.delivery_time is not None for rec in trace.orders)


def test_rejects_nonsense_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        generate_instance(0, seed=1)
    with pytest.raises(ValueError, match="two hours"):
        generate_instance(10, seed=1, day_minutes=60)


def test_hard_families_stress_the_same_day() -> None:
    base = generate_instance(500, 3)
    days = {family: generate_instance(500, 3, family=family) for family in FAMILIES}
    assert days["base"] == base
    assert [days[f].name for f in FAMILIES] == [base.name] + [f"{base.name}-{f}" for f in FAMILIES[1:]]
    for family, day in days.items():
        # The same restaurants, placements and doors.
        assert day.restaurants == base.restaurants
        assert [(o.x, o.y, o.placement_time, o.restaurant) for o in day.orders.values()] == [
            (o.x, o.y, o.placement_time, o.restaurant) for o in base.orders.values()
        ]
        slow, long_prep, flat = (family in (f, "hard") for f in ("slow", "prep", "flat"))
        assert day.parameters.meters_per_minute == (256 if slow else 320)
        preps = [o.ready_time - o.placement_time for o in day.orders.values()]
        assert (min(preps), max(preps)) == ((20, 45) if long_prep else (10, 30))
        hours = sum(c.off_time - c.on_time for c in day.couriers.values())
        demand = sum(c.off_time - c.on_time for c in days["prep" if long_prep else "base"].couriers.values())
        if flat:
            # The same courier hours (to a shift), fewer couriers in the evening peak.
            assert demand <= hours < demand + max(SHIFT_LENGTHS)
            peak = 0.72 * 780

            def on_shift(inst: Instance, t: float) -> int:
                return sum(c.on_time <= t < c.off_time for c in inst.couriers.values())

            assert on_shift(day, peak) < 0.85 * on_shift(days["prep" if long_prep else "base"], peak)
        else:
            assert hours == demand
    with pytest.raises(ValueError, match="family"):
        generate_instance(10, seed=1, family="impossible")
