from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from dispatch.replay.generate import generate_instance
from dispatch.replay.instance import Instance
from dispatch.replay.metrics import compute_metrics, describe, format_comparison, order_floor
from dispatch.replay.simulate import simulate_nearest_idle
from dispatch.replay.trace import OrderRecord, Trace


def test_tiny_day_by_hand(tiny: Instance, tiny_trace: Trace) -> None:
    m = compute_metrics(tiny, tiny_trace)
    assert m["instance"] == "tiny"
    # click-to-door 21, 28, 29 (delivered 21, 30, 34; placed 0, 2, 5); target 25, maximum 28.
    assert m["orders"] == {
        "total": 3,
        "delivered": 3,
        "delivered_share": 1.0,
        "beyond_target": 2,
        "beyond_max": 1,
        "refused": 0,
        "left_behind": 0,
    }
    assert m["click_to_door"] == pytest.approx(
        {"mean": 26, "std": math.sqrt(19), "min": 21, "p10": 22.4, "median": 28, "p90": 28.8, "max": 29}
    )
    assert m["ready_to_door"]["mean"] == pytest.approx(43 / 3)  # 11, 18, 14
    assert m["ready_to_pickup"] == pytest.approx(
        {"mean": 2 / 3, "std": math.sqrt(4 / 3), "min": 0, "p10": 0, "median": 0, "p90": 1.6, "max": 2}
    )
    assert m["click_to_door_overage"]["mean"] == pytest.approx(7 / 3)  # 0, 3, 4
    # Duty 60 + 120 minutes. Driving c1 0 + 5 + 5, c2 3 + 10; serving 2 pickups and 3 drop-offs
    # of 4 minutes. Pay c1 max(2 x 10, 1 h x 15) = 20, c2 max(1 x 10, 2 h x 15) = 30.
    assert m["couriers"] == pytest.approx(
        {
            "count": 2,
            "duty_hours": 3,
            "orders_per_courier_hour": 1,
            "bundles_per_courier_hour": 2 / 3,
            # Active: c1 from 5 to 30 + 2, c2 from 6 to 34 + 2: 27 + 30 minutes.
            "active_hours": 57 / 60,
            "orders_per_active_hour": 3 / (57 / 60),
            "bundles_per_active_hour": 2 / (57 / 60),
            "utilisation": 43 / 180,
            "driving_minutes": 23,
            "serving_minutes": 20,
            "total_pay": 50,
            "guaranteed_share": 0.5,
        }
    )
    assert m["feasibility"] == {"violations": 0, "list": []}
    # Floors: o1 10 - 0 + 2 + 5 + 2 = 19, o2 12 - 2 + 2 + 10 + 2 = 24, o3 20 - 5 + 2 + 10 + 2 = 29.
    assert [order_floor(tiny, o) for o in ("o1", "o2", "o3")] == [19, 24, 29]
    assert m["floor"]["mean"] == 24 and m["gap_to_floor"] == 26 - 24
    assert m["click_to_door_counting_undelivered"]["mean"] == 26
    json.dumps(m, allow_nan=False)


def test_undelivered_orders_count_at_the_maximum_and_the_gap_is_over_the_same_orders(
    tiny: Instance, tiny_trace: Trace
) -> None:
    trace = replace(tiny_trace, orders=[*tiny_trace.orders[:2], OrderRecord("o3", 5, 20, 6, 20, None, "c2")])
    m = compute_metrics(tiny, trace)
    assert (m["orders"]["refused"], m["orders"]["left_behind"]) == (0, 1)
    refused = compute_metrics(tiny, replace(trace, refused=("o3",)))["orders"]
    assert (refused["refused"], refused["left_behind"]) == (1, 0)
    assert m["click_to_door"]["mean"] == (21 + 28) / 2
    assert m["floor"]["mean"] == 24  # of every order
    assert m["gap_to_floor"] == (21 + 28) / 2 - (19 + 24) / 2  # of the delivered ones
    assert m["click_to_door_counting_undelivered"]["mean"] == (21 + 28 + 28) / 3  # o3 at the maximum, 28


def test_undelivered_orders_and_violations_are_reported(tiny: Instance, tiny_trace: Trace) -> None:
    trace = replace(tiny_trace, orders=[*tiny_trace.orders[:2], OrderRecord("o3", 5, 20, 6, 20, None, "c2")])
    late_ready = replace(tiny, orders={**tiny.orders, "o2": replace(tiny.orders["o2"], ready_time=13)})
    m = compute_metrics(late_ready, trace)
    assert (m["orders"]["delivered"], m["orders"]["delivered_share"]) == (2, pytest.approx(2 / 3))
    assert m["click_to_door"]["max"] == 28
    assert m["orders"]["total"] == 3
    # ready-to-pickup counts o3, picked up but not delivered: 2, -1, 0.
    assert m["ready_to_pickup"]["min"] == -1
    assert m["feasibility"]["violations"] == 1
    assert m["feasibility"]["list"][0]["rule"] == "pickup-before-ready"
    json.dumps(m, allow_nan=False)


def test_describe_edge_cases() -> None:
    assert describe([]) == dict.fromkeys(("mean", "std", "min", "p10", "median", "p90", "max"))
    one = describe([5.0])
    assert one["std"] is None
    assert one["mean"] == one["p10"] == one["max"] == 5


def test_format_comparison_puts_policies_side_by_side(tiny: Instance, tiny_trace: Trace) -> None:
    inst = generate_instance(80, seed=1)
    table = format_comparison(
        {
            "ours": compute_metrics(tiny, tiny_trace),
            "nearest-idle": compute_metrics(inst, simulate_nearest_idle(inst)),
        }
    )
    lines = table.splitlines()
    assert lines[0].split() == ["ours", "nearest-idle"]
    rows = {line[:24].strip(): line[24:].split() for line in lines[2:]}
    assert rows["orders delivered"] == ["3/3", "80/80"]
    assert rows["click-to-door mean"][0] == "26.0"
    assert rows["utilisation"][0] == "23.9%"
    assert rows["on guaranteed pay"][0] == "50.0%"
    assert rows["violations"] == ["0", "0"]
    assert len({len(line) for line in lines[:1] + lines[2:]}) == 1  # aligned columns
