"""The route and stop rules (dispatch/core/stops.py): whose turn, what proves an arrival, a pickup and a
drop-off, the wrong-code lock, stops left without work, closing routes. No event loop, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from dispatch.core.errors import TransitionError
from dispatch.core.jobs import Job, JobAction, JobState
from dispatch.core.stops import (
    LIVE_ROUTES,
    MAX_WRONG_CODES,
    OPEN_STOPS,
    ROUTE_TRANSITIONS,
    STOP_TRANSITIONS,
    Actor,
    Delivery,
    DoorEvidence,
    Fix,
    Limits,
    Pickup,
    Proof,
    RouteAction,
    RouteState,
    Settlement,
    StopAction,
    StopState,
    StopView,
    WrongCode,
    arrive,
    check_presence,
    close_route,
    drop_off,
    pick_up,
    refuse_answer,
    settle,
    settled,
)
from geo import destination

SS, RS, J = StopState, RouteState, JobState
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
SHOP = (45.7620, 4.8300)
DOOR = (45.7600, 4.8300)
LIMITS = Limits(arrival_radius_m=100.0, door_m=30.0, stale_s=30.0)


def at(place: tuple[float, float], metres: float = 0.0, *, accuracy: float = 5.0, age_s: float = 1.0) -> Fix:
    """A fix `metres` north of `place`, `age_s` old."""
    point = destination(place[0], place[1], 0.0, metres) if metres else place
    return Fix(point, accuracy, NOW - timedelta(seconds=age_s))


def stop(
    kind: str = "pickup",
    state: StopState = SS.PENDING,
    route: RouteState = RS.ACTIVE,
    *,
    locked: bool = False,
    wrong_codes: int = 0,
) -> StopView:
    return StopView("stp-1", kind, state, route, SHOP if kind == "pickup" else DOOR, locked, wrong_codes)  # type: ignore[arg-type]


def job(job_id: str, state: JobState) -> Job:
    return Job(job_id, "shop-1", state, NOW)


def refused(call: Callable[[], object]) -> TransitionError:
    with pytest.raises(TransitionError) as caught:
        call()
    return caught.value


def door(
    code: str | None = None,
    *,
    allow_proximity: bool = False,
    latest: Fix | None = None,
    flagged: bool = False,
) -> DoorEvidence:
    return DoorEvidence(code, "1234", allow_proximity, latest, flagged)


# --- the tables -------------------------------------------------------------------------------------------

# Every stop action from every stop state, written out by hand: None = allowed, else the refusal code. The
# actions are the courier's, at the stop with ready goods (a cancel is the service settling a stop).
ACTIONS: dict[StopAction, Callable[[StopState], object]] = {
    StopAction.ARRIVE: lambda s: arrive(stop(state=s), "stp-1", NOW, Actor.COURIER, at(SHOP), LIMITS),
    StopAction.COMPLETE: lambda s: pick_up(
        stop(state=s), "stp-1", [job("j1", J.READY)], NOW, Actor.COURIER, fix=at(SHOP), limits=LIMITS
    ),
    StopAction.CANCEL: lambda s: settled("stp-1", s, Settlement("cancel"), NOW),
}
EXPECTED: dict[StopAction, dict[StopState, str | None]] = {
    StopAction.ARRIVE: {
        SS.PENDING: None,
        SS.ARRIVED: "already_arrived",
        SS.COMPLETED: "stop_already_completed",
        SS.CANCELLED: "stop_cancelled",
    },
    StopAction.COMPLETE: {
        SS.PENDING: None,
        SS.ARRIVED: None,
        SS.COMPLETED: "stop_already_completed",
        SS.CANCELLED: "stop_cancelled",
    },
}
CASES = [(a, s, code) for a, row in EXPECTED.items() for s, code in row.items()]


@pytest.mark.parametrize(("action", "state", "code"), CASES, ids=[f"{a}-{s}" for a, s, _ in CASES])
def test_every_stop_action_from_every_state(action: StopAction, state: StopState, code: str | None) -> None:
    if code is None:
        ACTIONS[action](state)
    else:
        assert refused(lambda: ACTIONS[action](state)).code == code


def test_the_matrix_agrees_with_the_stop_table() -> None:
    for action, row in EXPECTED.items():
        assert {s for s, code in row.items() if code is None} == set(STOP_TRANSITIONS[action].from_states)
    assert set(STOP_TRANSITIONS[StopAction.CANCEL].from_states) == set(OPEN_STOPS)
    for state in (SS.PENDING, SS.ARRIVED):
        decision = ACTIONS[StopAction.CANCEL](state)
        assert decision is not None and decision.to_state == SS.CANCELLED  # type: ignore[attr-defined]


def test_tables_bind_as_sorted_sql_arrays() -> None:
    for rule in [*STOP_TRANSITIONS.values(), *ROUTE_TRANSITIONS.values()]:
        assert list(rule.from_states) == sorted(rule.from_states)
    assert sorted(OPEN_STOPS) == ["arrived", "pending"]
    assert sorted(LIVE_ROUTES) == ["active", "offered"]


def test_route_table() -> None:
    assert {a: (r.from_states, r.to_state) for a, r in ROUTE_TRANSITIONS.items()} == {
        RouteAction.ACCEPT: (("offered",), "active"),
        RouteAction.DECLINE: (("offered",), "declined"),
        RouteAction.EXPIRE: (("offered",), "expired"),
        RouteAction.WITHDRAW: (("offered",), "cancelled"),
        RouteAction.COMPLETE: (("active", "offered"), "completed"),
        RouteAction.CANCEL: (("active", "offered"), "cancelled"),
    }


# --- the turn ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("view", "next_stop", "code"),
    [
        (stop(route=RS.COMPLETED), "stp-1", "stop_cancelled"),
        (stop(route=RS.CANCELLED), "stp-1", "stop_cancelled"),
        (stop(route=RS.OFFERED), "stp-1", "route_not_accepted"),
        (stop(locked=True), "stp-1", "stop_locked"),
        (stop(), "stp-0", "stop_out_of_order"),
        (stop(), None, "stop_out_of_order"),
        # first refusal wins: a completed stop is completed, whatever else
        (stop(state=SS.COMPLETED, route=RS.OFFERED, locked=True), "stp-0", "stop_already_completed"),
        (stop(route=RS.OFFERED, locked=True), "stp-0", "route_not_accepted"),
        (stop(locked=True), "stp-0", "stop_locked"),
    ],
)
def test_the_turn_refusals_and_their_order(view: StopView, next_stop: str | None, code: str) -> None:
    jobs = [job("j1", J.READY)]
    calls: list[Callable[[], object]] = [  # nobody acts out of turn, an admin included
        lambda: arrive(view, next_stop, NOW, Actor.COURIER, at(SHOP), LIMITS),
        lambda: arrive(view, next_stop, NOW, Actor.ADMIN, None, LIMITS),
        lambda: pick_up(view, next_stop, jobs, NOW, Actor.SHOP, handed_over="j1"),
        lambda: pick_up(view, next_stop, jobs, NOW, Actor.ADMIN),
    ]
    for call in calls:
        assert refused(call).code == code


def test_out_of_order_names_the_next_stop() -> None:
    error = refused(lambda: arrive(stop(), "stp-0", NOW, Actor.COURIER, at(SHOP), LIMITS))
    assert error.details == {"next_stop_id": "stp-0"}


# --- presence ---------------------------------------------------------------------------------------------


def test_an_arrival_is_proven_by_the_trusted_position_within_the_radius() -> None:
    decision = arrive(stop(), "stp-1", NOW, Actor.COURIER, at(SHOP, 99.0), LIMITS)
    assert (decision.action, decision.to_state, decision.proof) == (
        StopAction.ARRIVE,
        SS.ARRIVED,
        Proof.POSITION,
    )
    assert decision.from_states == STOP_TRANSITIONS[StopAction.ARRIVE].from_states
    assert decision.at == NOW


def test_too_far_says_how_far_and_the_radius() -> None:
    error = refused(lambda: arrive(stop(), "stp-1", NOW, Actor.COURIER, at(SHOP, 1236.0), LIMITS))
    assert error.code == "too_far"
    assert error.details == {
        "distance_m": pytest.approx(1236.0, abs=0.5),
        "accuracy_m": 5.0,
        "radius_m": 100.0,
    }


@pytest.mark.parametrize(
    ("fix", "code"),
    [
        (None, "position_unknown"),
        (at(SHOP, age_s=30.5), "position_stale"),
        (at(SHOP, 101.0), "too_far"),
        (at(SHOP, accuracy=150.0), "too_far"),  # a fix that vague proves nothing about 100 m
    ],
)
def test_presence_refusals(fix: Fix | None, code: str) -> None:
    assert refused(lambda: check_presence(fix, SHOP, NOW, LIMITS)).code == code


@pytest.mark.parametrize("fix", [at(SHOP, age_s=30.0), at(SHOP, accuracy=100.0), at(SHOP, age_s=-2.0)])
def test_presence_bounds_are_inclusive(fix: Fix) -> None:
    assert check_presence(fix, SHOP, NOW, LIMITS) == pytest.approx(0.0)


def test_a_stale_position_says_its_age() -> None:
    error = refused(lambda: check_presence(at(SHOP, age_s=90.0), SHOP, NOW, LIMITS))
    assert error.details == {"age_s": 90.0, "stale_s": 30.0}


def test_an_admin_arrives_for_the_courier_without_a_position() -> None:
    decision = arrive(stop(), "stp-1", NOW, Actor.ADMIN, None, LIMITS)
    assert (decision.to_state, decision.proof) == (SS.ARRIVED, Proof.ADMIN)
    assert refused(lambda: arrive(stop(state=SS.ARRIVED), "stp-1", NOW, Actor.ADMIN, None, LIMITS)).code == (
        "already_arrived"
    )


def test_the_arrival_is_the_couriers_or_an_admins() -> None:
    with pytest.raises(ValueError, match="does not arrive"):
        arrive(stop(), "stp-1", NOW, Actor.SHOP, at(SHOP), LIMITS)


# --- pickups ----------------------------------------------------------------------------------------------


def courier_pickup(jobs: list[Job], fix: Fix | None = None) -> Pickup:
    return pick_up(stop(), "stp-1", jobs, NOW, Actor.COURIER, fix=fix or at(SHOP, 20.0), limits=LIMITS)


def test_the_courier_collects_ready_goods_at_the_shop() -> None:
    decision = courier_pickup([job("j2", J.READY), job("j1", J.READY), job("j0", J.CANCELLED)])
    assert [(d.job_id, d.action) for d in decision.jobs] == [
        ("j1", JobAction.PICK_UP),
        ("j2", JobAction.PICK_UP),
    ]
    assert decision.stop is not None
    assert (decision.stop.to_state, decision.stop.proof) == (SS.COMPLETED, Proof.COURIER)


def test_the_couriers_word_alone_needs_the_shops_ready() -> None:
    error = refused(
        lambda: courier_pickup([job("j1", J.READY), job("j2", J.ACCEPTED), job("j3", J.ACCEPTED)])
    )
    assert (error.code, error.details) == ("job_not_ready", {"job_ids": ["j2", "j3"]})


def test_presence_comes_before_readiness_and_nothing_left_before_presence() -> None:
    far = at(SHOP, 1498.0)
    assert refused(lambda: courier_pickup([job("j1", J.ACCEPTED)], far)).code == "too_far"
    assert refused(lambda: courier_pickup([job("j1", J.PICKED_UP), job("j2", J.CANCELLED)], far)).code == (
        "nothing_to_pick_up"
    )


def test_the_shop_hands_over_one_job_marking_it_ready_first() -> None:
    jobs = [job("j1", J.ACCEPTED), job("j2", J.READY)]
    first = pick_up(stop(), "stp-1", jobs, NOW, Actor.SHOP, handed_over="j1")
    assert [(d.job_id, d.action) for d in first.jobs] == [("j1", JobAction.READY), ("j1", JobAction.PICK_UP)]
    assert first.stop is None  # j2 still waits at the counter
    jobs = [job("j1", J.PICKED_UP), job("j2", J.READY)]
    last = pick_up(stop(), "stp-1", jobs, NOW, Actor.SHOP, handed_over="j2")
    assert [(d.job_id, d.action) for d in last.jobs] == [("j2", JobAction.PICK_UP)]
    assert last.stop is not None and last.stop.proof == Proof.SHOP
    again = refused(lambda: pick_up(stop(), "stp-1", jobs, NOW, Actor.SHOP, handed_over="j1"))
    assert again.code == "already_picked_up"


def test_an_admin_collects_for_the_courier_without_position_or_ready() -> None:
    decision = pick_up(stop(), "stp-1", [job("j1", J.ACCEPTED), job("j2", J.READY)], NOW, Actor.ADMIN)
    assert [(d.job_id, d.action) for d in decision.jobs] == [
        ("j1", JobAction.READY),
        ("j1", JobAction.PICK_UP),
        ("j2", JobAction.PICK_UP),
    ]
    assert decision.stop is not None and decision.stop.proof == Proof.ADMIN


# --- drop-offs --------------------------------------------------------------------------------------------

ABOARD = [job("j1", J.PICKED_UP), job("j2", J.PICKED_UP)]


def courier_drop(evidence: DoorEvidence, view: StopView | None = None) -> Delivery | WrongCode:
    return drop_off(view or stop("dropoff"), "stp-1", ABOARD, NOW, Actor.COURIER, evidence, LIMITS)


def test_the_residents_code_proves_the_drop_off() -> None:
    decision = courier_drop(door("1234"))
    assert isinstance(decision, Delivery)
    assert [(d.job_id, d.action) for d in decision.jobs] == [
        ("j1", JobAction.DELIVER),
        ("j2", JobAction.DELIVER),
    ]
    assert (decision.stop.to_state, decision.stop.proof) == (SS.COMPLETED, Proof.CODE)


def test_wrong_codes_count_and_the_last_locks() -> None:
    for counted in range(MAX_WRONG_CODES):
        decision = courier_drop(door("9999"), stop("dropoff", wrong_codes=counted))
        assert isinstance(decision, WrongCode)
        assert (decision.counted_from, decision.wrong_codes) == (counted, counted + 1)
        error = decision.refusal()
        if counted + 1 < MAX_WRONG_CODES:
            assert not decision.locked
            assert (error.code, error.details) == (
                "wrong_code",
                {"attempts_left": MAX_WRONG_CODES - counted - 1},
            )
        else:
            assert decision.locked and error.code == "stop_locked"
    locked = stop("dropoff", wrong_codes=MAX_WRONG_CODES, locked=True)
    assert refused(lambda: courier_drop(door("1234"), locked)).code == "stop_locked"


def test_an_order_without_a_code_accepts_none() -> None:
    evidence = DoorEvidence("1234", None, False)
    assert isinstance(courier_drop(evidence), WrongCode)


def test_without_a_code_the_door_needs_the_residents_leave_and_a_close_fix() -> None:
    assert refused(lambda: courier_drop(door())).code == "code_required"
    close = at(DOOR, 29.0)
    decision = courier_drop(door(allow_proximity=True, latest=close))
    assert isinstance(decision, Delivery) and decision.stop.proof == Proof.PROXIMITY
    for evidence in (
        door(allow_proximity=True),
        door(allow_proximity=True, latest=close, flagged=True),
        door(allow_proximity=True, latest=at(DOOR, age_s=31.0)),
    ):
        assert refused(lambda: courier_drop(evidence)).code == "proximity_not_proven"  # noqa: B023
    error = refused(lambda: courier_drop(door(allow_proximity=True, latest=at(DOOR, 31.0))))
    assert error.code == "proximity_not_proven"
    assert error.details == {"distance_m": pytest.approx(31.0, abs=0.5), "accuracy_m": 5.0, "limit_m": 30.0}


def test_an_admin_completes_the_drop_off_without_the_code() -> None:
    decision = drop_off(stop("dropoff"), "stp-1", ABOARD, NOW, Actor.ADMIN, door(), LIMITS)
    assert isinstance(decision, Delivery) and decision.stop.proof == Proof.ADMIN


def test_nothing_on_board_is_refused_before_any_code_is_counted() -> None:
    jobs = [job("j1", J.DELIVERED), job("j2", J.CANCELLED)]
    error = refused(
        lambda: drop_off(stop("dropoff"), "stp-1", jobs, NOW, Actor.COURIER, door("9999"), LIMITS)
    )
    assert error.code == "nothing_to_deliver"


# --- stops whose jobs went away, closing routes, answers ----------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "jobs", "expected"),
    [
        ("pickup", {"a": J.READY, "b": J.CANCELLED}, Settlement("keep", ("a",))),
        ("pickup", {"a": J.ACCEPTED, "b": J.PICKED_UP}, Settlement("keep", ("a", "b"))),
        ("pickup", {"a": J.PICKED_UP, "b": J.CANCELLED}, Settlement("complete")),  # partly handed over: done
        ("pickup", {"a": J.CANCELLED}, Settlement("cancel")),
        ("pickup", {}, Settlement("cancel")),  # every job given back
        ("dropoff", {"a": J.PICKED_UP, "b": J.CANCELLED}, Settlement("keep", ("a",))),
        ("dropoff", {"a": J.READY, "b": J.PICKED_UP}, Settlement("keep", ("a", "b"))),
        ("dropoff", {"a": J.CANCELLED, "b": J.UNFULFILLED}, Settlement("cancel")),
    ],
)
def test_settling_a_stop(kind: str, jobs: dict[str, JobState], expected: Settlement) -> None:
    assert settle(kind, jobs) == expected  # type: ignore[arg-type]


def test_a_settled_stop_changes_by_the_table() -> None:
    assert settled("stp-1", SS.PENDING, Settlement("keep", ("a",)), NOW) is None
    done = settled("stp-1", SS.ARRIVED, Settlement("complete"), NOW)
    assert done is not None and (done.action, done.to_state) == (StopAction.COMPLETE, SS.COMPLETED)


@pytest.mark.parametrize(
    ("state", "stops", "expected"),
    [
        (RS.ACTIVE, [SS.COMPLETED, SS.PENDING], None),
        (RS.ACTIVE, [SS.COMPLETED, SS.ARRIVED], None),
        (RS.ACTIVE, [SS.COMPLETED, SS.CANCELLED], RS.COMPLETED),
        (RS.ACTIVE, [SS.CANCELLED, SS.CANCELLED], RS.CANCELLED),
        (RS.OFFERED, [SS.CANCELLED], RS.CANCELLED),
        (RS.COMPLETED, [SS.COMPLETED], None),  # closed already
        (RS.DECLINED, [SS.CANCELLED], None),
    ],
)
def test_closing_a_route(state: RouteState, stops: list[StopState], expected: RouteState | None) -> None:
    decision = close_route("rte-1", state, stops, NOW)
    if expected is None:
        assert decision is None
    else:
        assert decision is not None and decision.to_state == expected
        assert state in decision.from_states


@pytest.mark.parametrize(
    ("action", "state", "code"),
    [
        (RouteAction.ACCEPT, RS.OFFERED, "offer_expired"),  # the deadline passed before the answer
        (RouteAction.ACCEPT, RS.EXPIRED, "offer_expired"),
        (RouteAction.ACCEPT, RS.ACTIVE, "already_accepted"),
        (RouteAction.DECLINE, RS.ACTIVE, "route_not_offered"),
        (RouteAction.DECLINE, RS.DECLINED, "route_declined"),
        (RouteAction.ACCEPT, RS.CANCELLED, "route_cancelled"),
    ],
)
def test_refused_answers_to_an_offer(action: RouteAction, state: RouteState, code: str) -> None:
    assert refuse_answer(action, state).code == code
