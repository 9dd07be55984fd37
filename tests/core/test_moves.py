"""The rules of an operator's move, pure: what may move to which courier, and the stops the work needs."""

from __future__ import annotations

import dataclasses

import pytest

from dispatch.core.errors import TransitionError
from dispatch.core.jobs import JobState
from dispatch.core.moves import MovedJob, Target, check_move, new_stops

SHOP_A, SHOP_B, DOOR_1, DOOR_2 = (0.0, 0.0), (0.0, 0.01), (0.01, 0.0), (0.02, 0.0)


def job(job_id: str, order: str, shop: str, **changes: object) -> MovedJob:
    where = {"a": SHOP_A, "b": SHOP_B}[shop]
    door = {"o1": DOOR_1, "o2": DOOR_2}[order]
    base = MovedJob(job_id, order, shop, JobState.READY, True, "cou_x", where, door, 10.0, 1)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


ON = Target("cou_y", active=True, on_shift=True)


def refusal(jobs: list[MovedJob], target: Target = ON) -> str:
    with pytest.raises(TransitionError) as caught:
        check_move(jobs, target)
    return caught.value.code


def test_goods_still_at_the_shop_move_to_an_active_courier_on_shift() -> None:
    check_move([job("j1", "o1", "a"), job("j2", "o1", "b", state=JobState.ACCEPTED, courier_id=None)], ON)
    # Some of it with the target already (a split order's other half): the rest still moves.
    check_move([job("j1", "o1", "a", courier_id="cou_y"), job("j2", "o1", "b")], ON)


@pytest.mark.parametrize(
    ("jobs", "target", "code"),
    [
        ([], ON, "nothing_to_move"),
        ([job("j1", "o1", "a", state=JobState.PICKED_UP)], ON, "job_not_waiting"),
        ([job("j1", "o1", "a", state=JobState.OFFERED)], ON, "job_not_waiting"),
        ([job("j1", "o1", "a", delivery=False)], ON, "not_a_delivery"),
        ([job("j1", "o1", "a")], Target("cou_y", active=False, on_shift=True), "courier_inactive"),
        ([job("j1", "o1", "a")], Target("cou_y", active=True, on_shift=False), "courier_off_shift"),
        ([job("j1", "o1", "a", courier_id="cou_y")], ON, "same_courier"),
    ],
)
def test_moves_the_rules_refuse(jobs: list[MovedJob], target: Target, code: str) -> None:
    assert refusal(jobs, target) == code


def test_a_job_not_waiting_is_named_with_its_state() -> None:
    with pytest.raises(TransitionError) as caught:
        check_move([job("j1", "o1", "a"), job("j2", "o1", "b", state=JobState.DELIVERED)], ON)
    assert caught.value.details == {"jobs": {"j2": "delivered"}}


def test_a_pickup_per_shop_then_a_drop_off_per_order() -> None:
    stops = new_stops(
        [
            job("j1", "o1", "a", ready_at=12.0, items=2),
            job("j2", "o2", "a", ready_at=None, items=1),
            job("j3", "o1", "b", ready_at=15.0, items=3),
        ]
    )
    assert [(s.kind, s.shop_id or s.order_id, s.job_ids, s.items) for s in stops] == [
        ("pickup", "a", ("j1", "j2"), 3),
        ("pickup", "b", ("j3",), 3),
        ("dropoff", "o1", ("j1", "j3"), 5),
        ("dropoff", "o2", ("j2",), 1),
    ]
    assert [s.ready_at for s in stops[:2]] == [12.0, 15.0]  # when every job collected there is ready
    assert [s.location for s in stops] == [SHOP_A, SHOP_B, DOOR_1, DOOR_2]
