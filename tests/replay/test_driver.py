"""The replay driver: the shared clock, the server's settings, and small end-to-end replays through a real
server process on the session's PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from dispatch.clock import ScaledClock, clock_from_settings
from dispatch.config import Settings
from dispatch.replay.apps import DayClock
from dispatch.replay.driver import (
    CLOCK_START,
    ReplayOptions,
    build_trace,
    plane_mapping,
    run_replay,
    server_env,
    write_outputs,
    zone_radius,
)
from dispatch.replay.generate import generate_instance
from dispatch.replay.instance import Order, distance_m, format_number, load_instance
from dispatch.replay.trace import ASSIGNMENTS_FILE, COURIERS_FILE, ORDERS_FILE


def test_client_and_server_clocks_agree() -> None:
    """The replay builds its clock from the same (start, speed, epoch) it gives the server's environment."""
    instance = generate_instance(20, 1, day_minutes=120)
    epoch = time.time() - 3.0
    env = server_env(instance, ReplayOptions(speed=60), epoch)
    settings = Settings.from_env(env)
    server = clock_from_settings(settings.clock_speed, settings.clock_start, settings.clock_epoch)
    client = ScaledClock(CLOCK_START, 60, epoch)
    assert isinstance(server, ScaledClock)
    gap = abs((server.now() - client.now()).total_seconds())
    assert gap < 0.5  # clock seconds: a few ms of wall time between the two reads, times 60
    # Three wall seconds after the epoch, the clock is three minutes past its start.
    assert 179 < (client.now() - CLOCK_START).total_seconds() < 200


def test_day_clock_minutes_and_sleep() -> None:
    clock = ScaledClock(datetime(2026, 1, 5, tzinfo=UTC), 600)
    day = DayClock(clock, clock.now())
    assert abs(day.minute()) < 0.1
    assert day.wall_seconds(10) == pytest.approx(1.0)
    assert day.minute_of(day.at(12.5).isoformat()) == pytest.approx(12.5)

    async def wait() -> float:
        await day.sleep_until(2.0)  # 0.2 wall seconds
        return day.minute()

    assert asyncio.run(wait()) >= 2.0  # never early


def test_server_env_carries_the_instance_travel_model() -> None:
    instance = generate_instance(20, 1, day_minutes=120)
    settings = Settings.from_env(server_env(instance, ReplayOptions(speed=120, policy="nearest-idle"), 1.0))
    p = instance.parameters
    assert settings.speed_m_per_min == p.meters_per_minute
    assert settings.detour_factor == 1.0 and settings.travel_round_up
    assert settings.pickup_service_minutes == p.pickup_service_minutes
    assert settings.dropoff_service_minutes == p.dropoff_service_minutes
    assert settings.policy == "nearest-idle"
    assert settings.clock_speed == 120
    # Pings come every 2 instance minutes at this speed: a courier stays fresh between them.
    assert settings.courier_stale_s >= 2 * 120


def test_zones_cover_their_orders_within_the_mapping() -> None:
    from geo import haversine_m

    instance = generate_instance(40, 2, day_minutes=120)
    mapping = plane_mapping(instance, (45.76, 4.83))
    for order in instance.orders.values():
        r = instance.restaurants[order.restaurant]
        radius = zone_radius(instance, r.id)
        a, b = mapping.to_latlng(r.x, r.y), mapping.to_latlng(order.x, order.y)
        metres = haversine_m(*a, *b)
        assert metres == pytest.approx(distance_m(r, order), rel=1e-3)
        assert metres * 1.002 < radius  # inside the 64-gon, whose sides cut 0.12% in


def _replay(tmp_path: Path, services: tuple[str, str], policy: str) -> tuple[dict[str, object], Path]:
    instance = generate_instance(24, 7, day_minutes=120, n_restaurants=4)
    opts = ReplayOptions(speed=300, policy=policy, progress=False, round_s=20)
    result = run_replay(instance, opts, database_server_url=services[0], redis_url=services[1])
    out = tmp_path / policy
    write_outputs(out, instance, result)
    return result.metrics, out


@pytest.mark.parametrize("policy", ["ours", "nearest-idle"])
def test_end_to_end_replay(tmp_path: Path, services: tuple[str, str], policy: str) -> None:
    metrics, out = _replay(tmp_path, services, policy)
    delivered = metrics["orders"]["delivered"]  # type: ignore[index]
    assert delivered == metrics["orders"]["total"] == 24, metrics["replay"]  # type: ignore[index]
    assert metrics["feasibility"]["violations"] == 0, metrics["feasibility"]  # type: ignore[index]
    assert metrics["replay"]["app_errors"] == 0, metrics["replay"]  # type: ignore[index]
    assert metrics["replay"]["policy"] == policy  # type: ignore[index]
    written = orjson.loads((out / "metrics.json").read_bytes())
    assert written["orders"]["delivered"] == 24
    for name in (ASSIGNMENTS_FILE, ORDERS_FILE, COURIERS_FILE, "click_to_door.png", "routes.png"):
        assert (out / name).stat().st_size > 0
    lines = (out / ORDERS_FILE).read_text().splitlines()
    assert len(lines) == 25 and "NaN" not in "".join(lines[1:])
    ctd = written["click_to_door"]
    assert ctd["min"] > 0 and math.isfinite(ctd["max"])
    if policy == "nearest-idle":  # one order per trip, never bundled
        assignments = (out / ASSIGNMENTS_FILE).read_text().splitlines()[1:]
        assert all(len(line.split()) == 4 for line in assignments)


def test_an_order_no_courier_can_collect_is_refused_at_placement_and_counted_apart(
    tmp_path: Path, services: tuple[str, str]
) -> None:
    """Placed a minute before the last shift ends: no courier can be at the shop and through half the service
    in time. The server refuses it (the replay runs it with DISPATCH_UNDELIVERABLE=refuse); it is counted as
    refused, not as an app error nor as an order left behind, and the evaluator's file counts it late."""
    day = generate_instance(24, 7, day_minutes=120, n_restaurants=4)
    last_off = max(c.off_time for c in day.couriers.values())
    restaurant = next(iter(day.restaurants.values()))
    late = Order("late", restaurant.x + 300, restaurant.y, last_off - 1, restaurant.id, last_off + 10)
    day = dataclasses.replace(day, orders={**day.orders, "late": late})
    opts = ReplayOptions(speed=300, policy="ours", progress=False, round_s=20)
    result = run_replay(day, opts, database_server_url=services[0], redis_url=services[1])
    orders = result.metrics["orders"]
    assert (orders["delivered"], orders["refused"], orders["left_behind"]) == (24, 1, 0), result.metrics[
        "replay"
    ]
    assert result.trace.refused == ("late",)
    assert result.metrics["replay"]["app_errors"] == 0, result.metrics["replay"]
    write_outputs(tmp_path, day, result)
    (row,) = [
        line.split() for line in (tmp_path / ORDERS_FILE).read_text().splitlines() if line.startswith("late")
    ]
    assert row[4:] == [format_number(late.placement_time + day.parameters.max_click_to_door), "NaN"]


def test_build_trace_needs_no_server() -> None:
    """An empty day (no apps) gives every order an empty record."""
    from dispatch.replay.driver import _Day

    instance = generate_instance(5, 1, day_minutes=120)
    clock = ScaledClock(CLOCK_START, 60)
    state = _Day(instance, plane_mapping(instance, (45.0, 5.0)), None, DayClock(clock, CLOCK_START), "", "")  # type: ignore[arg-type]
    trace = build_trace(state, {})
    assert [r.order for r in trace.orders] == list(instance.orders)
    assert trace.assignments == [] and trace.moves == []


def test_replay_generate_command(tmp_path: Path) -> None:
    from dispatch.cli import main

    assert main(["replay", "generate", str(tmp_path / "day"), "--orders", "30", "--seed", "4"]) == 0
    instance = load_instance(tmp_path / "day")
    assert len(instance.orders) == 30
    assert instance.orders == generate_instance(30, 4).orders
