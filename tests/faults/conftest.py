"""One PostgreSQL, one Redis and three `dispatch serve` processes for the fault tests, all really stopped,
crashed and restarted by the tests (`dispatch/bench/stack.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatch.bench.faults import FaultStack, fault_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with fault_stack(root=tmp_path_factory.mktemp("faults")) as running:
        yield running


def assert_nothing_broken(report: dict[str, Any]) -> None:
    """What no fault may cost: an order, an event, a double decision, or a 5xx other than 503."""
    broken = {
        key: report[key]
        for key in (
            "lost",
            "duplicated",
            "double_accepts",
            "jobs_on_two_routes",
            "stock_lines_off",
            "outbox_gaps",
            "stream_gaps",
            "stream_duplicates",
            "stream_missing",
            "http_500",
            "unavailable_without_retry_after",
            "ws_internal",
            "jobs_given_back",
            "deadlocks",
        )
        if report[key]
    }
    assert not broken, (broken, report)
    # Every order got its 2xx in the end: 503s were retried with the same key until the fault was over.
    assert report["orders_2xx"] == report["orders_sent"] > 0, report
    assert report["routes_made"] > 0, report  # couriers were at work: "no job on two routes" means something
    probe = report["probe"]
    # A resident connected all along still hears about what it does after the fault (no silent client).
    assert probe["stayed_connected"] and probe["status"] == 201 and probe["event_after_s"] is not None, probe


def node_logs(stack: FaultStack) -> str:
    return "".join(node.tail(10**7) for node in stack.nodes)


def assert_no_tracebacks(stack: FaultStack) -> None:
    logs = node_logs(stack)
    assert "Traceback" not in logs, logs[logs.find("Traceback") - 500 :][:4000]


def logs_of(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
