"""The job state machine and the order state derived from its jobs.

A job is the part of an order one shop prepares. `TRANSITIONS` is the single source of truth:
each action names the states it may start from and the state it leads to. The action functions
check who acts and when, then return a `JobTransition`; the service applies it with a
compare-and-set update (``UPDATE jobs SET state = $to WHERE id = $id AND state = ANY($from)``,
plus ``AND offer_deadline > $now`` when `deadline_after` is set), so a lost race changes nothing.

Refusals raise `TransitionError` with a stable code (HTTP 409); bad arguments raise
`CoreValidationError` (HTTP 422). Holder checks come first so a shop learns nothing about a job
that is not its own. An offer is open while ``now < offer_deadline``.

==================  =============================  ============  ==================================
action              from                           to            refusal codes
==================  =============================  ============  ==================================
accept              offered                        accepted      not_offer_holder, offer_expired,
                                                                 already_accepted, job_not_offered
reject              offered                        rejected      not_offer_holder, offer_expired,
                                                                 cannot_reject_accepted,
                                                                 already_rejected, job_not_offered
expire              offered                        expired       deadline_not_reached,
                                                                 job_not_offered
ready               accepted                       ready         not_job_holder, already_ready,
                                                                 already_picked_up,
                                                                 job_not_accepted
pick_up             ready                          picked_up     already_picked_up, job_not_ready,
                                                                 job_not_accepted
deliver             picked_up                      delivered     already_delivered,
                                                                 job_not_picked_up
collect             ready                          delivered     already_picked_up, job_not_ready,
                                                                 job_not_accepted
cancel              offered, accepted, ready       cancelled     already_picked_up,
                                                                 already_cancelled, job_closed
mark_unfulfilled    rejected, expired              unfulfilled   already_unfulfilled,
                                                                 job_not_refused
==================  =============================  ============  ==================================

A rejected or expired job is history: its lines go to a new job (same order) or, when no shop is
left, the job itself becomes ``unfulfilled``. Goods leave a shop only once they are ready: a job is
picked up by a courier, or collected by the resident of a ``pickup`` order (which delivers it), from
``ready`` only, so a shop handing over goods it never marked ready marks them ready first and every
stream shows ``ready`` before ``picked_up`` (`hand_over`).

A new job starts ``offered``, or ``accepted`` at once for a shop that auto-accepts
(`initial_state`). The order's total is the price of the lines of its live jobs (`order_summary`).

Order state, from the states of all the order's jobs (first matching rule wins). Jobs are *live*
(offered, accepted, ready, picked_up, delivered), *dropped* (unfulfilled, cancelled) or *history*
(rejected, expired, ignored).

1. no live job and some cancelled              -> cancelled
2. no live job and some unfulfilled            -> unfulfilled (nothing can come)
3. no live job (history only)                  -> placed (a re-offer is being arranged)
4. every live job delivered                    -> delivered (even if some were dropped)
5. some live job picked up or delivered        -> in_delivery (delivery orders only)
6. some job dropped                            -> partially_unfulfilled (the resident may cancel
   the rest, which is possible only before pickup, hence after rule 5)
7. some live job offered                       -> placed
8. every live job ready (or collected)         -> ready
9. some live job ready (or collected)          -> preparing
10. otherwise (every live job accepted)        -> accepted
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from dispatch.core.errors import CoreValidationError, TransitionError

PREP_MINUTES_MIN, PREP_MINUTES_MAX = 1, 240
REASON_MAX_CHARS = 200


class JobState(StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    READY = "ready"
    PICKED_UP = "picked_up"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    UNFULFILLED = "unfulfilled"


class JobAction(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    EXPIRE = "expire"
    READY = "ready"
    PICK_UP = "pick_up"
    DELIVER = "deliver"
    CANCEL = "cancel"
    MARK_UNFULFILLED = "mark_unfulfilled"
    COLLECT = "collect"


class OrderState(StrEnum):
    PLACED = "placed"
    ACCEPTED = "accepted"
    PREPARING = "preparing"
    READY = "ready"
    IN_DELIVERY = "in_delivery"
    DELIVERED = "delivered"
    PARTIALLY_UNFULFILLED = "partially_unfulfilled"
    UNFULFILLED = "unfulfilled"
    CANCELLED = "cancelled"


class Fulfilment(StrEnum):
    DELIVERY = "delivery"
    PICKUP = "pickup"


@dataclass(frozen=True, slots=True)
class Rule:
    from_states: tuple[JobState, ...]  # sorted, ready to bind as ``ANY($from_states)``
    to_state: JobState


def _rule(from_states: set[JobState], to_state: JobState) -> Rule:
    return Rule(tuple(sorted(from_states)), to_state)


S = JobState  # short alias for the table and checks below
TRANSITIONS: Mapping[JobAction, Rule] = MappingProxyType(
    {
        JobAction.ACCEPT: _rule({S.OFFERED}, S.ACCEPTED),
        JobAction.REJECT: _rule({S.OFFERED}, S.REJECTED),
        JobAction.EXPIRE: _rule({S.OFFERED}, S.EXPIRED),
        JobAction.READY: _rule({S.ACCEPTED}, S.READY),
        JobAction.PICK_UP: _rule({S.READY}, S.PICKED_UP),
        JobAction.DELIVER: _rule({S.PICKED_UP}, S.DELIVERED),
        JobAction.COLLECT: _rule({S.READY}, S.DELIVERED),
        JobAction.CANCEL: _rule({S.OFFERED, S.ACCEPTED, S.READY}, S.CANCELLED),
        JobAction.MARK_UNFULFILLED: _rule({S.REJECTED, S.EXPIRED}, S.UNFULFILLED),
    }
)

_LIVE = frozenset({S.OFFERED, S.ACCEPTED, S.READY, S.PICKED_UP, S.DELIVERED})
_ACCEPTED_OR_LATER = frozenset({S.ACCEPTED, S.READY, S.PICKED_UP, S.DELIVERED})


def can_transition(from_state: JobState, to_state: JobState) -> bool:
    return any(from_state in r.from_states and r.to_state == to_state for r in TRANSITIONS.values())


def allowed_actions(state: JobState) -> frozenset[JobAction]:
    return frozenset(a for a, r in TRANSITIONS.items() if state in r.from_states)


@dataclass(frozen=True, slots=True)
class Job:
    """What the core needs to know about a job to decide a transition."""

    job_id: str
    shop_id: str
    state: JobState
    offer_deadline: datetime


@dataclass(frozen=True, slots=True)
class JobTransition:
    """A decided transition for the service to apply with a compare-and-set update."""

    job_id: str
    action: JobAction
    from_states: tuple[JobState, ...]
    to_state: JobState
    at: datetime
    deadline_after: datetime | None = None  # the CAS must also require offer_deadline > this
    prep_minutes: int | None = None
    ready_by: datetime | None = None  # accept: the shop's estimate, at + prep_minutes
    reason: str | None = None  # reject


def _decide(
    job: Job,
    action: JobAction,
    at: datetime,
    *,
    deadline_after: datetime | None = None,
    prep_minutes: int | None = None,
    reason: str | None = None,
) -> JobTransition:
    rule = TRANSITIONS[action]
    # The checks in each action must agree with the table; a mismatch is a bug here, not a 409.
    assert job.state in rule.from_states, f"{action} checks let {job.state} through"
    ready_by = None if prep_minutes is None else at + timedelta(minutes=prep_minutes)
    return JobTransition(
        job.job_id,
        action,
        rule.from_states,
        rule.to_state,
        at,
        deadline_after=deadline_after,
        prep_minutes=prep_minutes,
        ready_by=ready_by,
        reason=reason,
    )


def _require_holder(job: Job, shop_id: str, code: str) -> None:
    if shop_id != job.shop_id:
        raise TransitionError(code, "this job belongs to another shop")


def accept(job: Job, shop_id: str, now: datetime, prep_minutes: int) -> JobTransition:
    _require_holder(job, shop_id, "not_offer_holder")
    if (
        isinstance(prep_minutes, bool)
        or not isinstance(prep_minutes, int)
        or not PREP_MINUTES_MIN <= prep_minutes <= PREP_MINUTES_MAX
    ):
        raise CoreValidationError(
            ("prep_minutes",),
            f"must be a whole number of minutes from {PREP_MINUTES_MIN} to {PREP_MINUTES_MAX}",
        )
    if job.state in _ACCEPTED_OR_LATER:
        raise TransitionError("already_accepted", "the job has already been accepted")
    _require_open_offer(job, now)
    return _decide(job, JobAction.ACCEPT, now, deadline_after=now, prep_minutes=prep_minutes)


def reject(job: Job, shop_id: str, now: datetime, reason: str) -> JobTransition:
    _require_holder(job, shop_id, "not_offer_holder")
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason or len(reason) > REASON_MAX_CHARS:
        raise CoreValidationError(("reason",), f"must be 1 to {REASON_MAX_CHARS} characters")
    if job.state in _ACCEPTED_OR_LATER:
        raise TransitionError("cannot_reject_accepted", "an accepted job cannot be rejected")
    if job.state == S.REJECTED:
        raise TransitionError("already_rejected", "the job has already been rejected")
    _require_open_offer(job, now)
    return _decide(job, JobAction.REJECT, now, deadline_after=now, reason=reason)


def _require_open_offer(job: Job, now: datetime) -> None:
    # An unfulfilled job answered after its deadline was an offer that expired (and found no other
    # shop): tell the shop it was too late, not merely that the job is in some other state.
    late = now >= job.offer_deadline and job.state in (S.OFFERED, S.UNFULFILLED)
    if job.state == S.EXPIRED or late:
        raise TransitionError("offer_expired", "the offer's deadline has passed")
    if job.state != S.OFFERED:
        raise TransitionError("job_not_offered", f"the job is {job.state}, not offered")


def expire(job: Job, now: datetime) -> JobTransition:
    """The deadline timer fired; `job_not_offered` means the shop answered in time."""
    if job.state != S.OFFERED:
        raise TransitionError("job_not_offered", f"the job is {job.state}, not offered")
    if now < job.offer_deadline:
        raise TransitionError("deadline_not_reached", "the offer is still open")
    return _decide(job, JobAction.EXPIRE, now)


def mark_ready(job: Job, shop_id: str, now: datetime) -> JobTransition:
    _require_holder(job, shop_id, "not_job_holder")
    if job.state == S.READY:
        raise TransitionError("already_ready", "the job is already ready")
    if job.state in (S.PICKED_UP, S.DELIVERED):
        raise TransitionError("already_picked_up", "the job has already been picked up")
    if job.state != S.ACCEPTED:
        raise TransitionError("job_not_accepted", f"the job is {job.state}, not accepted")
    return _decide(job, JobAction.READY, now)


def _require_ready(job: Job) -> None:
    if job.state in (S.PICKED_UP, S.DELIVERED):
        raise TransitionError("already_picked_up", "the job has already been picked up")
    if job.state == S.ACCEPTED:
        raise TransitionError("job_not_ready", "the shop has not marked the job ready")
    if job.state != S.READY:
        raise TransitionError("job_not_accepted", f"the job is {job.state}, not accepted")


def mark_picked_up(job: Job, now: datetime) -> JobTransition:
    """A courier took the goods; who may say so is the stop rules' business (`core/stops.py`)."""
    _require_ready(job)
    return _decide(job, JobAction.PICK_UP, now)


def collect(job: Job, now: datetime) -> JobTransition:
    """The resident of a pickup order took the goods at the counter: for them, that is the delivery."""
    _require_ready(job)
    return _decide(job, JobAction.COLLECT, now)


def hand_over(job: Job, shop_id: str, now: datetime, fulfilment: Fulfilment) -> tuple[JobTransition, ...]:
    """The shop gives the goods to the courier (delivery) or the resident (pickup): a job it has not marked
    ready is marked ready first, so that every stream shows ``ready`` before the goods leave."""
    _require_holder(job, shop_id, "not_job_holder")
    steps: list[JobTransition] = []
    if job.state == S.ACCEPTED:
        steps.append(mark_ready(job, shop_id, now))
        job = Job(job.job_id, job.shop_id, S.READY, job.offer_deadline)
    steps.append(collect(job, now) if fulfilment == Fulfilment.PICKUP else mark_picked_up(job, now))
    return tuple(steps)


def mark_delivered(job: Job, now: datetime) -> JobTransition:
    if job.state == S.DELIVERED:
        raise TransitionError("already_delivered", "the job has already been delivered")
    if job.state != S.PICKED_UP:
        raise TransitionError("job_not_picked_up", f"the job is {job.state}, not picked up")
    return _decide(job, JobAction.DELIVER, now)


def cancel(job: Job, now: datetime) -> JobTransition:
    if job.state in (S.PICKED_UP, S.DELIVERED):
        raise TransitionError("already_picked_up", "the job has already been picked up")
    if job.state == S.CANCELLED:
        raise TransitionError("already_cancelled", "the job has already been cancelled")
    if job.state not in (S.OFFERED, S.ACCEPTED, S.READY):
        raise TransitionError("job_closed", f"the job is {job.state}; nothing to cancel")
    return _decide(job, JobAction.CANCEL, now)


def mark_unfulfilled(job: Job, now: datetime) -> JobTransition:
    """No shop is left for a rejected or expired job's lines."""
    if job.state == S.UNFULFILLED:
        raise TransitionError("already_unfulfilled", "the job is already unfulfilled")
    if job.state not in (S.REJECTED, S.EXPIRED):
        raise TransitionError("job_not_refused", f"the job is {job.state}, not rejected/expired")
    return _decide(job, JobAction.MARK_UNFULFILLED, now)


def initial_state(auto_accept: bool) -> JobState:
    """A new job (placed or re-offered): offered to its shop, or accepted at once if the shop auto-accepts."""
    return S.ACCEPTED if auto_accept else S.OFFERED


Line = tuple[int, int]
"""(quantity, unit price in cents) of one line of a job."""


def order_total(jobs: Iterable[tuple[JobState, Iterable[Line]]]) -> int:
    """What the resident pays: the lines of the live jobs, those they will (still) get."""
    return sum(qty * price for state, lines in jobs if JobState(state) in _LIVE for qty, price in lines)


def order_summary(
    jobs: Iterable[tuple[JobState, Iterable[Line]]], fulfilment: Fulfilment
) -> tuple[OrderState, int]:
    """The order's (state, total in cents) from its jobs' (state, lines)."""
    listed = [(JobState(state), list(lines)) for state, lines in jobs]
    return derive_order_state([state for state, _ in listed], fulfilment), order_total(listed)


def derive_order_state(job_states: Iterable[JobState], fulfilment: Fulfilment) -> OrderState:
    """The order's state from its jobs' states; the rules are in the module docstring."""
    states = [JobState(s) for s in job_states]
    if not states:
        raise ValueError("an order has at least one job")
    live = [s for s in states if s in _LIVE]
    if not live:
        if S.CANCELLED in states:
            return OrderState.CANCELLED
        if S.UNFULFILLED in states:
            return OrderState.UNFULFILLED
        return OrderState.PLACED
    if all(s == S.DELIVERED for s in live):
        return OrderState.DELIVERED
    if any(s in (S.PICKED_UP, S.DELIVERED) for s in live) and fulfilment == Fulfilment.DELIVERY:
        return OrderState.IN_DELIVERY
    if S.UNFULFILLED in states or S.CANCELLED in states:
        return OrderState.PARTIALLY_UNFULFILLED
    if S.OFFERED in live:
        return OrderState.PLACED
    if all(s in (S.READY, S.DELIVERED) for s in live):
        return OrderState.READY
    if any(s in (S.READY, S.DELIVERED) for s in live):
        return OrderState.PREPARING
    return OrderState.ACCEPTED
