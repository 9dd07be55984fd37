from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dispatch.replay.trace import CourierMove, OrderRecord, Trace, write_solution


def _lines(path: Path) -> list[list[str]]:
    text = path.read_text()
    assert "\t" not in text  # the evaluator reads the orders file with sep=' '
    return [line.split(" ") for line in text.splitlines()]


def test_solution_files_have_the_evaluator_columns(tmp_path: Path, tiny_trace: Trace) -> None:
    paths = write_solution(tiny_trace, tmp_path)
    assert [p.name for p in paths] == [
        "solution_info_assignments.txt",
        "solution_info_orders.txt",
        "solution_info_couriers.txt",
    ]
    assert _lines(paths[0]) == [
        ["assignment_time", "pickup_time", "courier", "orders"],
        ["5", "12", "c1", "o1", "o2"],
        ["6", "20", "c2", "o3"],
    ]
    assert _lines(paths[1]) == [
        ["order", "placement_time", "ready_time", "pickup_time", "dropoff_time", "courier"],
        ["o1", "0", "10", "12", "21", "c1"],
        ["o2", "2", "12", "12", "30", "c1"],
        ["o3", "5", "20", "20", "34", "c2"],
    ]
    # Each courier's moves together, in execution order, although the trace interleaves them.
    assert _lines(paths[2]) == [
        ["courier", "departure_time", "origin", "destination"],
        ["c1", "5", "0", "r1"],
        ["c1", "14", "r1", "o1"],
        ["c1", "23", "o1", "o2"],
        ["c2", "6", "0", "r2"],
        ["c2", "22", "r2", "o3"],
    ]


def test_missing_values_and_fractional_times(tmp_path: Path, tiny_trace: Trace) -> None:
    trace = replace(
        tiny_trace,
        orders=[*tiny_trace.orders[:2], OrderRecord("o3", 5, 20)],
        moves=[*tiny_trace.moves, CourierMove("c1", 32.25, "o2", "r2")],
    )
    paths = write_solution(trace, tmp_path / "out")
    assert _lines(paths[1])[3] == ["o3", "5", "20", "NaN", "NaN", "NaN"]
    assert _lines(paths[2])[4] == ["c1", "32.25", "o2", "r2"]


def test_undelivered_orders_count_at_the_maximum_for_the_evaluator(tmp_path: Path, tiny_trace: Trace) -> None:
    """The evaluator counts delivered orders as rows without NaN and computes click-to-door and its overage
    from dropoff_time: an undelivered order keeps its NaN courier (not delivered, no place checked) and is
    written at placement + the maximum click-to-door (28 here), so its lateness counts."""
    trace = replace(tiny_trace, orders=[*tiny_trace.orders[:2], OrderRecord("o3", 5, 20, 6, 20, None, "c2")])
    paths = write_solution(trace, tmp_path, max_click_to_door=28)
    assert _lines(paths[1])[1:] == [
        ["o1", "0", "10", "12", "21", "c1"],
        ["o2", "2", "12", "12", "30", "c1"],
        ["o3", "5", "20", "20", "33", "NaN"],
    ]
