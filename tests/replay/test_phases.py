"""`replay phases`: two runs of a day compared order by order, from the files each run writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.core.assignment import DispatchParams
from dispatch.core.routes import ServiceTimes
from dispatch.replay.cli import replay_main
from dispatch.replay.instance import Instance, write_instance
from dispatch.replay.offline import simulate_policy
from dispatch.replay.phases import compare, order_phases
from dispatch.replay.trace import write_solution


def test_an_orders_phases_are_read_from_the_evaluators_files(tiny: Instance, tmp_path: Path) -> None:
    params = DispatchParams(service=ServiceTimes(4, 4), empty_leg_weight=0.5, defer_wait_minutes=0)
    trace = simulate_policy(tiny, "ours", params, round_minutes=1, phase_minutes=0)
    write_solution(trace, tmp_path / "a")
    trace_late = simulate_policy(tiny, "ours", params, round_minutes=1)  # rounds half a minute later
    write_solution(trace_late, tmp_path / "b")
    a, b = order_phases(tiny, tmp_path / "a"), order_phases(tiny, tmp_path / "b")
    # o1: placed at 0, ready at 10; c1 (starting at r1) sent at 10, collects at 12, at the door at 21.
    assert a["o1"] == {
        "assigned": 10,
        "set_off": 10,
        "at_shop": 0,
        "pickup": 2,
        "counter": 2,
        "ride": 9,
        "click_to_door": 21,
    }
    assert b["o1"]["set_off"] == 10.5 and b["o1"]["click_to_door"] == 21.5
    table = compare(a, b)
    assert table["set_off"]["median"] == pytest.approx(0.5)
    assert table["counter"]["diff"] == pytest.approx(0)
    write_instance(tiny, tmp_path / "day")
    code = replay_main(["phases", str(tmp_path / "day"), str(tmp_path / "a"), str(tmp_path / "b")])
    assert code == 0
