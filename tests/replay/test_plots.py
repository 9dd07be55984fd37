from __future__ import annotations

from pathlib import Path

from dispatch.replay.generate import generate_instance
from dispatch.replay.instance import Instance
from dispatch.replay.plots import write_plots
from dispatch.replay.simulate import simulate_nearest_idle
from dispatch.replay.trace import OrderRecord, Trace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_pngs(paths: list[Path]) -> None:
    assert [p.name for p in paths] == ["click_to_door.png", "timeline.png", "routes.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 5_000  # axes, labels and data, not a blank canvas


def test_plots_of_a_simulated_day(tmp_path: Path) -> None:
    inst = generate_instance(60, seed=2)
    _assert_pngs(write_plots(inst, simulate_nearest_idle(inst), tmp_path / "plots"))


def test_plots_of_a_day_with_nothing_delivered(tmp_path: Path, tiny: Instance) -> None:
    trace = Trace(orders=[OrderRecord(o.id, o.placement_time, o.ready_time) for o in tiny.orders.values()])
    _assert_pngs(write_plots(tiny, trace, tmp_path))
