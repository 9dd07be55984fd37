"""The demo day's pieces that need no server, and the progress bar."""

from __future__ import annotations

import io
import random

import pytest

from dispatch.cli import COMMANDS, build_parser
from dispatch.replay.demo_day import StreetWorld, _poisson
from dispatch.replay.progress import Progress
from geo import TravelModel


def test_street_world_legs_use_the_travel_model() -> None:
    world = StreetWorld(TravelModel(250, 1.0, round_up=True))
    a = world.place_of({"id": "stp_a", "location": {"lat": 45.0, "lng": 5.0}})
    b = world.place_of({"id": "stp_b", "location": {"lat": 45.01, "lng": 5.0}})  # ~1112 m north
    assert world.leg_minutes(a, b) == 5.0  # 4.45 minutes, rounded up
    assert world.along(a, b, 0.5) == pytest.approx((45.005, 5.0))
    assert world.along(a, a, 0.0) == (45.0, 5.0)


def test_orders_per_minute_average_out() -> None:
    rng = random.Random(3)
    counts = [_poisson(rng, 2.0) for _ in range(5000)]
    assert sum(counts) / len(counts) == pytest.approx(2.0, rel=0.05)
    assert _poisson(rng, 0.0) == 0


def test_progress_bar_line() -> None:
    stream = io.StringIO()
    bar = Progress(4, stream=stream)
    bar.placed()
    bar.placed()
    bar.delivered(late=True)
    bar.show(12.4)
    bar.close(13)
    text = stream.getvalue()
    assert "placed 2/4  delivered 1  late 1  minute 12" in text
    assert text.endswith("\n") and "#" in text
    quiet = io.StringIO()
    Progress(4, enabled=False, stream=quiet).close(1)
    assert quiet.getvalue() == ""


def test_commands_are_registered() -> None:
    args = build_parser("simulate").parse_args(["simulate", "--minutes", "5", "--orders-per-minute", "3"])
    assert args.minutes == 5 and args.orders_per_minute == 3
    assert COMMANDS["replay"].own is not None  # replay parses its own forms (compare, offline, generate)
