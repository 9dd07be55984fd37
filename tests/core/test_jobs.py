from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.core.errors import CoreValidationError, TransitionError
from dispatch.core.jobs import (
    TRANSITIONS,
    Fulfilment,
    Job,
    JobAction,
    JobState,
    JobTransition,
    OrderState,
    accept,
    allowed_actions,
    can_transition,
    cancel,
    collect,
    derive_order_state,
    expire,
    hand_over,
    initial_state,
    mark_delivered,
    mark_picked_up,
    mark_ready,
    mark_unfulfilled,
    order_summary,
    order_total,
    reject,
)

S = JobState
OS = OrderState
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
DEADLINE = NOW + timedelta(seconds=45)


def job(state: JobState, deadline: datetime = DEADLINE) -> Job:
    return Job("job-1", "shop-1", state, deadline)


# Each action, called by the job's holder before the deadline (after it for expire).
ACTIONS: dict[JobAction, Callable[[Job], JobTransition]] = {
    JobAction.ACCEPT: lambda j: accept(j, "shop-1", NOW, 15),
    JobAction.REJECT: lambda j: reject(j, "shop-1", NOW, "out of stock"),
    JobAction.EXPIRE: lambda j: expire(j, DEADLINE),
    JobAction.READY: lambda j: mark_ready(j, "shop-1", NOW),
    JobAction.PICK_UP: lambda j: mark_picked_up(j, NOW),
    JobAction.DELIVER: lambda j: mark_delivered(j, NOW),
    JobAction.CANCEL: lambda j: cancel(j, NOW),
    JobAction.MARK_UNFULFILLED: lambda j: mark_unfulfilled(j, NOW),
    JobAction.COLLECT: lambda j: collect(j, NOW),
}


def every_state(code: str) -> dict[JobState, str | None]:
    return dict.fromkeys(S, code)


# The full matrix, written out by hand: None = allowed, else the refusal code.
EXPECTED: dict[JobAction, dict[JobState, str | None]] = {
    JobAction.ACCEPT: {
        S.OFFERED: None,
        S.ACCEPTED: "already_accepted",
        S.READY: "already_accepted",
        S.PICKED_UP: "already_accepted",
        S.DELIVERED: "already_accepted",
        S.REJECTED: "job_not_offered",
        S.EXPIRED: "offer_expired",
        S.CANCELLED: "job_not_offered",
        S.UNFULFILLED: "job_not_offered",
    },
    JobAction.REJECT: {
        S.OFFERED: None,
        S.ACCEPTED: "cannot_reject_accepted",
        S.READY: "cannot_reject_accepted",
        S.PICKED_UP: "cannot_reject_accepted",
        S.DELIVERED: "cannot_reject_accepted",
        S.REJECTED: "already_rejected",
        S.EXPIRED: "offer_expired",
        S.CANCELLED: "job_not_offered",
        S.UNFULFILLED: "job_not_offered",
    },
    JobAction.EXPIRE: every_state("job_not_offered") | {S.OFFERED: None},
    JobAction.READY: {
        S.OFFERED: "job_not_accepted",
        S.ACCEPTED: None,
        S.READY: "already_ready",
        S.PICKED_UP: "already_picked_up",
        S.DELIVERED: "already_picked_up",
        S.REJECTED: "job_not_accepted",
        S.EXPIRED: "job_not_accepted",
        S.CANCELLED: "job_not_accepted",
        S.UNFULFILLED: "job_not_accepted",
    },
    # Goods leave the shop once ready, whoever takes them.
    JobAction.PICK_UP: every_state("job_not_accepted")
    | {
        S.ACCEPTED: "job_not_ready",
        S.READY: None,
        S.PICKED_UP: "already_picked_up",
        S.DELIVERED: "already_picked_up",
    },
    JobAction.COLLECT: every_state("job_not_accepted")
    | {
        S.ACCEPTED: "job_not_ready",
        S.READY: None,
        S.PICKED_UP: "already_picked_up",
        S.DELIVERED: "already_picked_up",
    },
    JobAction.DELIVER: every_state("job_not_picked_up")
    | {S.PICKED_UP: None, S.DELIVERED: "already_delivered"},
    JobAction.CANCEL: {
        S.OFFERED: None,
        S.ACCEPTED: None,
        S.READY: None,
        S.PICKED_UP: "already_picked_up",
        S.DELIVERED: "already_picked_up",
        S.REJECTED: "job_closed",
        S.EXPIRED: "job_closed",
        S.CANCELLED: "already_cancelled",
        S.UNFULFILLED: "job_closed",
    },
    JobAction.MARK_UNFULFILLED: every_state("job_not_refused")
    | {S.REJECTED: None, S.EXPIRED: None, S.UNFULFILLED: "already_unfulfilled"},
}

CASES = [(action, state, code) for action, row in EXPECTED.items() for state, code in row.items()]


@pytest.mark.parametrize(("action", "state", "code"), CASES, ids=[f"{a}-{s}" for a, s, _ in CASES])
def test_every_action_from_every_state(action: JobAction, state: JobState, code: str | None) -> None:
    if code is None:
        decision = ACTIONS[action](job(state))
        rule = TRANSITIONS[action]
        assert decision.action == action
        assert decision.job_id == "job-1"
        assert decision.to_state == rule.to_state
        assert decision.from_states == rule.from_states
        assert state in decision.from_states
    else:
        with pytest.raises(TransitionError) as caught:
            ACTIONS[action](job(state))
        assert caught.value.code == code


def test_matrix_agrees_with_the_transition_table() -> None:
    for action, row in EXPECTED.items():
        allowed = {state for state, code in row.items() if code is None}
        assert allowed == set(TRANSITIONS[action].from_states), action
    assert set(EXPECTED) == set(JobAction)


def test_can_transition_is_derived_from_the_table() -> None:
    edges = {
        (S.OFFERED, S.ACCEPTED),
        (S.OFFERED, S.REJECTED),
        (S.OFFERED, S.EXPIRED),
        (S.OFFERED, S.CANCELLED),
        (S.ACCEPTED, S.READY),
        (S.ACCEPTED, S.CANCELLED),
        (S.READY, S.PICKED_UP),
        (S.READY, S.DELIVERED),
        (S.READY, S.CANCELLED),
        (S.PICKED_UP, S.DELIVERED),
        (S.REJECTED, S.UNFULFILLED),
        (S.EXPIRED, S.UNFULFILLED),
    }
    for a in S:
        for b in S:
            assert can_transition(a, b) is ((a, b) in edges), (a, b)
    assert allowed_actions(S.OFFERED) == {
        JobAction.ACCEPT,
        JobAction.REJECT,
        JobAction.EXPIRE,
        JobAction.CANCEL,
    }
    assert allowed_actions(S.DELIVERED) == frozenset()


def test_from_states_are_sorted_strings_for_sql() -> None:
    for rule in TRANSITIONS.values():
        assert list(rule.from_states) == sorted(rule.from_states)
    assert TRANSITIONS[JobAction.CANCEL].from_states == ("accepted", "offered", "ready")


# --- accept ---------------------------------------------------------------------------------------


def test_accept_carries_estimate_and_deadline_guard() -> None:
    decision = accept(job(S.OFFERED), "shop-1", NOW, 20)
    assert decision.to_state == S.ACCEPTED
    assert decision.at == NOW
    assert decision.prep_minutes == 20
    assert decision.ready_by == NOW + timedelta(minutes=20)
    assert decision.deadline_after == NOW  # the CAS re-checks the deadline in SQL


def test_accept_by_another_shop_is_refused_before_anything_else() -> None:
    for state in S:
        with pytest.raises(TransitionError) as caught:
            accept(job(state), "shop-2", NOW, 0)  # bad minutes too: the holder check wins
        assert caught.value.code == "not_offer_holder"


OFFER_ANSWERS: dict[str, Callable[[datetime], JobTransition]] = {
    "accept": lambda now: accept(job(S.OFFERED), "shop-1", now, 10),
    "reject": lambda now: reject(job(S.OFFERED), "shop-1", now, "busy"),
}


@pytest.mark.parametrize("answer", OFFER_ANSWERS)
@pytest.mark.parametrize(
    ("now", "ok"),
    [
        (DEADLINE - timedelta(microseconds=1), True),
        (DEADLINE, False),
        (DEADLINE + timedelta(seconds=10), False),
    ],
)
def test_offer_is_open_strictly_before_its_deadline(answer: str, now: datetime, ok: bool) -> None:
    if ok:
        assert OFFER_ANSWERS[answer](now).from_states == (S.OFFERED,)
    else:
        with pytest.raises(TransitionError) as caught:
            OFFER_ANSWERS[answer](now)
        assert caught.value.code == "offer_expired"


@pytest.mark.parametrize("minutes", [0, -5, 241, 1000, 1.5, True, "10"])
def test_accept_validates_prep_minutes(minutes: object) -> None:
    with pytest.raises(CoreValidationError) as caught:
        accept(job(S.OFFERED), "shop-1", NOW, minutes)  # type: ignore[arg-type]
    assert caught.value.path == ("prep_minutes",)


@pytest.mark.parametrize("minutes", [1, 240])
def test_accept_prep_minutes_bounds_are_inclusive(minutes: int) -> None:
    assert accept(job(S.OFFERED), "shop-1", NOW, minutes).prep_minutes == minutes


# --- reject, expire, ready ------------------------------------------------------------------------


def test_reject_keeps_a_trimmed_reason() -> None:
    decision = reject(job(S.OFFERED), "shop-1", NOW, "  out of milk ")
    assert decision.reason == "out of milk"
    assert decision.to_state == S.REJECTED
    assert decision.deadline_after == NOW


@pytest.mark.parametrize("reason", ["", "   ", "x" * 201])
def test_reject_validates_reason(reason: str) -> None:
    with pytest.raises(CoreValidationError) as caught:
        reject(job(S.OFFERED), "shop-1", NOW, reason)
    assert caught.value.path == ("reason",)


def test_reject_by_another_shop() -> None:
    with pytest.raises(TransitionError) as caught:
        reject(job(S.ACCEPTED), "shop-2", NOW, "busy")
    assert caught.value.code == "not_offer_holder"


def test_expire_only_once_the_deadline_has_passed() -> None:
    with pytest.raises(TransitionError) as caught:
        expire(job(S.OFFERED), DEADLINE - timedelta(microseconds=1))
    assert caught.value.code == "deadline_not_reached"
    assert expire(job(S.OFFERED), DEADLINE + timedelta(hours=1)).to_state == S.EXPIRED


def test_mark_ready_by_another_shop() -> None:
    with pytest.raises(TransitionError) as caught:
        mark_ready(job(S.ACCEPTED), "shop-2", NOW)
    assert caught.value.code == "not_job_holder"


# --- order state ----------------------------------------------------------------------------------

D, P = Fulfilment.DELIVERY, Fulfilment.PICKUP

DERIVATION = [
    # rule 1: no live job, some cancelled
    ([S.CANCELLED], D, OS.CANCELLED),
    ([S.CANCELLED, S.UNFULFILLED, S.REJECTED], D, OS.CANCELLED),
    # rule 2: no live job, some unfulfilled
    ([S.UNFULFILLED], D, OS.UNFULFILLED),
    ([S.UNFULFILLED, S.EXPIRED, S.REJECTED], P, OS.UNFULFILLED),
    # rule 3: history only (a re-offer is being written)
    ([S.REJECTED], D, OS.PLACED),
    ([S.EXPIRED, S.REJECTED], D, OS.PLACED),
    # rule 4: every live job delivered
    ([S.DELIVERED, S.DELIVERED], D, OS.DELIVERED),
    ([S.DELIVERED, S.UNFULFILLED, S.REJECTED], D, OS.DELIVERED),
    ([S.DELIVERED, S.DELIVERED], P, OS.DELIVERED),  # collected by the resident
    # rule 5: something picked up or delivered (delivery)
    ([S.PICKED_UP, S.ACCEPTED], D, OS.IN_DELIVERY),
    ([S.DELIVERED, S.READY], D, OS.IN_DELIVERY),
    ([S.PICKED_UP, S.UNFULFILLED], D, OS.IN_DELIVERY),
    ([S.PICKED_UP, S.OFFERED], D, OS.IN_DELIVERY),
    # rule 6: some job dropped, the rest not picked up yet
    ([S.ACCEPTED, S.UNFULFILLED], D, OS.PARTIALLY_UNFULFILLED),
    ([S.OFFERED, S.UNFULFILLED], D, OS.PARTIALLY_UNFULFILLED),
    ([S.READY, S.CANCELLED], D, OS.PARTIALLY_UNFULFILLED),
    ([S.DELIVERED, S.READY, S.UNFULFILLED], P, OS.PARTIALLY_UNFULFILLED),
    # rule 7: some offer pending
    ([S.OFFERED], D, OS.PLACED),
    ([S.OFFERED, S.ACCEPTED, S.REJECTED], D, OS.PLACED),
    ([S.OFFERED, S.READY], P, OS.PLACED),
    # rule 8: all ready (or, for pickup, collected)
    ([S.READY, S.READY], D, OS.READY),
    ([S.READY, S.EXPIRED], D, OS.READY),
    ([S.READY, S.DELIVERED], P, OS.READY),
    # rule 9: some ready
    ([S.READY, S.ACCEPTED], D, OS.PREPARING),
    ([S.DELIVERED, S.ACCEPTED], P, OS.PREPARING),
    # rule 10: all accepted
    ([S.ACCEPTED], D, OS.ACCEPTED),
    ([S.ACCEPTED, S.ACCEPTED, S.REJECTED, S.EXPIRED], P, OS.ACCEPTED),
]


@pytest.mark.parametrize(("states", "fulfilment", "expected"), DERIVATION)
def test_order_state_derivation(states: list[JobState], fulfilment: Fulfilment, expected: OrderState) -> None:
    assert derive_order_state(states, fulfilment) == expected


def test_every_order_state_is_reachable_by_a_rule() -> None:
    assert {expected for _, _, expected in DERIVATION} == set(OrderState)


def test_order_with_no_jobs_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="at least one job"):
        derive_order_state([], D)


def test_derivation_accepts_plain_strings_from_the_database() -> None:
    assert derive_order_state(["ready", "accepted"], D) == OS.PREPARING  # type: ignore[list-item]


@given(st.lists(st.sampled_from(list(S)), min_size=1, max_size=6), st.sampled_from(list(Fulfilment)))
def test_derivation_ignores_job_order_and_history(states: list[JobState], fulfilment: Fulfilment) -> None:
    state = derive_order_state(states, fulfilment)
    assert derive_order_state(list(reversed(states)), fulfilment) == state
    if any(s not in (S.REJECTED, S.EXPIRED) for s in states):
        assert derive_order_state([*states, S.REJECTED, S.EXPIRED], fulfilment) == state
    if fulfilment == P:
        assert state != OS.IN_DELIVERY


def test_answer_to_an_expired_then_unfulfilled_offer_is_offer_expired() -> None:
    job = Job("job-1", "shop-1", S.UNFULFILLED, DEADLINE)
    acts: list[Callable[[], object]] = [
        lambda: accept(job, "shop-1", DEADLINE, 15),
        lambda: reject(job, "shop-1", DEADLINE, "no"),
    ]
    for act in acts:
        with pytest.raises(TransitionError) as err:
            act()
        assert err.value.code == "offer_expired"


# --- hand-over, initial state, total ----------------------------------------------------------------------


@pytest.mark.parametrize("fulfilment", list(Fulfilment))
def test_a_hand_over_of_goods_not_marked_ready_marks_them_ready_first(fulfilment: Fulfilment) -> None:
    steps = hand_over(job(S.ACCEPTED), "shop-1", NOW, fulfilment)
    last = JobAction.COLLECT if fulfilment == Fulfilment.PICKUP else JobAction.PICK_UP
    assert [(d.action, d.to_state) for d in steps] == [
        (JobAction.READY, S.READY),
        (last, TRANSITIONS[last].to_state),
    ]
    assert [d.action for d in hand_over(job(S.READY), "shop-1", NOW, fulfilment)] == [last]


def test_a_collected_pickup_order_and_its_job_agree() -> None:
    (step,) = hand_over(job(S.READY), "shop-1", NOW, Fulfilment.PICKUP)
    assert step.to_state == S.DELIVERED
    assert derive_order_state([step.to_state], Fulfilment.PICKUP) == OS.DELIVERED


@pytest.mark.parametrize(
    ("state", "code"),
    [(S.PICKED_UP, "already_picked_up"), (S.DELIVERED, "already_picked_up"), (S.OFFERED, "job_not_accepted")],
)
def test_a_hand_over_is_refused_like_a_pickup(state: JobState, code: str) -> None:
    with pytest.raises(TransitionError) as caught:
        hand_over(job(state), "shop-1", NOW, Fulfilment.DELIVERY)
    assert caught.value.code == code


def test_only_the_holder_hands_over() -> None:
    with pytest.raises(TransitionError) as caught:
        hand_over(job(S.READY), "shop-2", NOW, Fulfilment.DELIVERY)
    assert caught.value.code == "not_job_holder"


def test_initial_state_offers_unless_the_shop_auto_accepts() -> None:
    assert initial_state(False) == S.OFFERED
    assert initial_state(True) == S.ACCEPTED


def test_the_total_counts_the_lines_of_live_jobs_only() -> None:
    lines = [(2, 150), (1, 300)]  # 600 cents
    jobs = [(state, lines) for state in S]
    live = {S.OFFERED, S.ACCEPTED, S.READY, S.PICKED_UP, S.DELIVERED}
    assert order_total(jobs) == 600 * len(live)
    assert order_total([(S.CANCELLED, lines), (S.REJECTED, lines)]) == 0
    assert order_summary([(S.ACCEPTED, lines), (S.UNFULFILLED, [(9, 9)])], D) == (
        OS.PARTIALLY_UNFULFILLED,
        600,
    )
