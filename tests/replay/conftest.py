"""A tiny hand-computed day shared by the replay tests.

Speed 100 m/min, service 4 + 4, target 25, maximum 28, pay 10 per order or 15 an hour.
r1 (0,0), r2 (1000,0). o1 (0,500) and o2 (0,1000) from r1, o3 (1000,1000) from r2.
c1 starts at (0,0) (on r1), on 0-60; c2 starts at (1000,300), on 0-120.

The feasible trace: c1 takes the bundle (o1, o2) at 5, is at r1 at 5, picks up at 12 (o2's
ready time), leaves at 14, reaches o1 at 19 (500 m), delivers at 21, leaves at 23, reaches o2 at
28, delivers at 30. c2 takes o3 at 6, reaches r2 at 9 (300 m), picks up at 20, leaves at 22,
reaches o3 at 32 (1000 m), delivers at 34.
"""

from __future__ import annotations

import pytest

from dispatch.replay.instance import Courier, Instance, Order, Parameters, Restaurant
from dispatch.replay.trace import AssignmentRecord, CourierMove, OrderRecord, Trace


@pytest.fixture
def tiny() -> Instance:
    return Instance(
        "tiny",
        {"r1": Restaurant("r1", 0, 0), "r2": Restaurant("r2", 1000, 0)},
        {
            "o1": Order("o1", 0, 500, 0, "r1", 10),
            "o2": Order("o2", 0, 1000, 2, "r1", 12),
            "o3": Order("o3", 1000, 1000, 5, "r2", 20),
        },
        {"c1": Courier("c1", 0, 0, 0, 60), "c2": Courier("c2", 1000, 300, 0, 120)},
        Parameters(100, 4, 4, 25, 28, 10, 15),
    )


@pytest.fixture
def tiny_trace() -> Trace:
    return Trace(
        assignments=[
            AssignmentRecord(5, 12, "c1", ("o1", "o2")),
            AssignmentRecord(6, 20, "c2", ("o3",)),
        ],
        orders=[
            OrderRecord("o1", 0, 10, 5, 12, 21, "c1"),
            OrderRecord("o2", 2, 12, 5, 12, 30, "c1"),
            OrderRecord("o3", 5, 20, 6, 20, 34, "c2"),
        ],
        moves=[
            CourierMove("c1", 5, "0", "r1"),
            CourierMove("c2", 6, "0", "r2"),
            CourierMove("c1", 14, "r1", "o1"),
            CourierMove("c2", 22, "r2", "o3"),
            CourierMove("c1", 23, "o1", "o2"),
        ],
    )
