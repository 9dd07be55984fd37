"""Route and stop rules: whose turn a stop is, what proves an arrival, a pickup and a drop-off, the wrong-code
lock, what becomes of stops whose jobs went away, and when a route closes.

Pure: positions, codes and the time come in as arguments. `STOP_TRANSITIONS` and `ROUTE_TRANSITIONS` are the
single source of truth for the states; the action functions check who acts and what proves it, then return a
decision that the service applies with a compare-and-set update under the courier's row lock
(``UPDATE stops SET state = $to ... WHERE id = $id AND state = ANY($from)``, and ``AND NOT locked`` but
for a cancel), in one transaction with its events. Refusals raise `TransitionError` with a stable code (HTTP
409) and, where it helps, `details`. Bounds are inclusive (a fix exactly ``stale_s`` old, or exactly at the
radius, proves presence); job decisions come in job id order, a job's ``ready`` before its pickup.

Stops:

=========  ================  ==========  ======================================================
action     from              to          refusal codes, in the order they are checked
=========  ================  ==========  ======================================================
arrive     pending           arrived     the turn; already_arrived; presence (couriers)
complete   pending, arrived  completed   the turn; then by kind, below
cancel     pending, arrived  cancelled   none: the service cancels stops left with no job
=========  ================  ==========  ======================================================

*The turn* (any actor): stop_already_completed; stop_cancelled (or its route no longer live);
route_not_accepted; stop_locked; stop_out_of_order (details: next_stop_id). A courier does its stops one at a
time: its live routes in the order they were made, each route's stops by ``seq``.

*Presence* (a courier arriving anywhere, or completing a pickup): its last trusted fix (the latest one not
flagged as an implausible jump) must exist (position_unknown), be at most ``stale_s`` old (position_stale;
details: age_s, stale_s), and lie within ``arrival_radius_m`` of the stop with an accuracy no worse than that
(too_far; details: distance_m, accuracy_m, radius_m). An arrival proven so is recorded as ``position``.

*Pickups*. A pickup stop completes once none of its jobs waits (accepted or ready) any more:

- the courier collects every waiting job: nothing_to_pick_up; presence; job_not_ready (details: job_ids) —
  the courier's word alone needs the shop's ``ready``. Proof ``courier``.
- the shop hands one job over: already_picked_up, job_not_accepted; a job not yet ready is marked ready
  first. Other jobs still waiting keep the stop open. Proof ``shop``.
- an admin collects every waiting job, marking ready those that are not: nothing_to_pick_up. Proof ``admin``.

*Drop-offs* deliver the stop's jobs on board (nothing_to_deliver when none is), proven by, first match:

1. an admin: ``admin``;
2. the resident's code: ``code``. A wrong one is counted and refused (wrong_code; details: attempts_left);
   the `MAX_WRONG_CODES`-th locks the stop (stop_locked) until an admin unlocks it;
3. no code: code_required, unless the resident allowed the courier's position to stand in for it; then its
   latest fix must be neither flagged nor stale and lie within ``door_m`` of the door with an accuracy no
   worse (proximity_not_proven; details: distance_m, accuracy_m, limit_m). Proof ``proximity``.

Stops whose jobs went away (a cancelled order, work given back) are *settled*: a stop with a job still to
collect or on board keeps those; a pickup whose other jobs were collected is complete; anything else is
cancelled.

Routes:

==========  ================  ==========  ==================================================
action      from              to          when
==========  ================  ==========  ==================================================
accept      offered           active      the courier, before the deadline
decline     offered           declined    the courier
expire      offered           expired     the deadline passed unanswered
withdraw    offered           cancelled   the courier went off shift or stale
complete    offered, active   completed   no open stop left, and some stop was completed
cancel      offered, active   cancelled   no open stop left, and none was completed
==========  ================  ==========  ==================================================

A refused answer to an offer: offer_expired (still offered past its deadline, or expired), already_accepted,
route_not_offered (declining an accepted route), else route_<state>.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

from dispatch.core import jobs as job_rules
from dispatch.core.errors import TransitionError
from dispatch.core.jobs import JobState, JobTransition
from dispatch.core.routes import Point
from geo import haversine_m

MAX_WRONG_CODES = 5
StopKind = Literal["pickup", "dropoff"]


class StopState(StrEnum):
    PENDING = "pending"
    ARRIVED = "arrived"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class RouteState(StrEnum):
    OFFERED = "offered"
    ACTIVE = "active"
    COMPLETED = "completed"
    DECLINED = "declined"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class StopAction(StrEnum):
    ARRIVE = "arrive"
    COMPLETE = "complete"
    CANCEL = "cancel"


class RouteAction(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    EXPIRE = "expire"
    WITHDRAW = "withdraw"
    COMPLETE = "complete"
    CANCEL = "cancel"


class Actor(StrEnum):
    COURIER = "courier"
    SHOP = "shop"
    ADMIN = "admin"


class Proof(StrEnum):
    POSITION = "position"  # an arrival, by the courier's trusted fix
    COURIER = "courier"  # a pickup, by the courier at the counter (ready goods, trusted fix)
    SHOP = "shop"
    CODE = "code"
    PROXIMITY = "proximity"  # a drop-off, by the courier's fix at the door, when the resident allows it
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Rule:
    from_states: tuple[str, ...]  # sorted, ready to bind as ``ANY($from_states)``
    to_state: str


def _rule(from_states: set[str], to_state: str) -> Rule:
    return Rule(tuple(sorted(from_states)), to_state)


SS, RS = StopState, RouteState
STOP_TRANSITIONS: Mapping[StopAction, Rule] = MappingProxyType(
    {
        StopAction.ARRIVE: _rule({SS.PENDING}, SS.ARRIVED),
        StopAction.COMPLETE: _rule({SS.PENDING, SS.ARRIVED}, SS.COMPLETED),
        StopAction.CANCEL: _rule({SS.PENDING, SS.ARRIVED}, SS.CANCELLED),
    }
)
ROUTE_TRANSITIONS: Mapping[RouteAction, Rule] = MappingProxyType(
    {
        RouteAction.ACCEPT: _rule({RS.OFFERED}, RS.ACTIVE),
        RouteAction.DECLINE: _rule({RS.OFFERED}, RS.DECLINED),
        RouteAction.EXPIRE: _rule({RS.OFFERED}, RS.EXPIRED),
        RouteAction.WITHDRAW: _rule({RS.OFFERED}, RS.CANCELLED),
        RouteAction.COMPLETE: _rule({RS.OFFERED, RS.ACTIVE}, RS.COMPLETED),
        RouteAction.CANCEL: _rule({RS.OFFERED, RS.ACTIVE}, RS.CANCELLED),
    }
)
LIVE_ROUTES: tuple[str, ...] = (RS.ACTIVE, RS.OFFERED)  # a courier's work to do, or to answer
OPEN_STOPS: tuple[str, ...] = STOP_TRANSITIONS[StopAction.COMPLETE].from_states

WAITING = frozenset({JobState.ACCEPTED, JobState.READY})  # at the shop, still to collect
_COLLECTED = frozenset({JobState.PICKED_UP, JobState.DELIVERED})


@dataclass(frozen=True, slots=True)
class StopView:
    """What the rules need to know about a stop."""

    stop_id: str
    kind: StopKind
    state: StopState
    route_state: RouteState
    location: Point
    locked: bool = False
    wrong_codes: int = 0


@dataclass(frozen=True, slots=True)
class Fix:
    location: Point
    accuracy_m: float
    at: datetime


@dataclass(frozen=True, slots=True)
class Limits:
    arrival_radius_m: float  # DISPATCH_ARRIVAL_RADIUS_M
    door_m: float  # DISPATCH_PROXIMITY_M
    stale_s: float  # DISPATCH_COURIER_STALE_S


@dataclass(frozen=True, slots=True)
class StopTransition:
    """A decided stop change; `proof` goes to the stop's arrival or completion proof."""

    stop_id: str
    action: StopAction
    from_states: tuple[str, ...]
    to_state: StopState
    at: datetime
    proof: Proof | None = None


@dataclass(frozen=True, slots=True)
class Pickup:
    jobs: tuple[JobTransition, ...]  # in the order to apply: a job's ready before its pick_up
    stop: StopTransition | None  # None: other jobs still wait here


@dataclass(frozen=True, slots=True)
class Delivery:
    jobs: tuple[JobTransition, ...]
    stop: StopTransition


@dataclass(frozen=True, slots=True)
class WrongCode:
    """A wrong code to count (compare-and-set on the count it was decided from), then refuse."""

    stop_id: str
    counted_from: int
    wrong_codes: int
    locked: bool

    def refusal(self) -> TransitionError:
        if self.locked:
            return TransitionError("stop_locked", "too many wrong codes: the stop is locked")
        left = MAX_WRONG_CODES - self.wrong_codes
        return TransitionError("wrong_code", "that is not the order's code", details={"attempts_left": left})


@dataclass(frozen=True, slots=True)
class Settlement:
    """What becomes of a stop once some of its jobs went away: `cancel`/`complete` it, or `keep` `job_ids`."""

    outcome: Literal["keep", "complete", "cancel"]
    job_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteTransition:
    route_id: str
    action: RouteAction
    from_states: tuple[str, ...]
    to_state: RouteState
    at: datetime


# --- the turn and presence ------------------------------------------------------------------------------


def check_turn(stop: StopView, next_stop_id: str | None) -> None:
    """May anyone act on this stop now? `next_stop_id`: the courier's first open stop."""
    if stop.state == SS.COMPLETED:
        raise TransitionError("stop_already_completed", "the stop is already completed")
    if stop.state == SS.CANCELLED or stop.route_state not in LIVE_ROUTES:
        raise TransitionError("stop_cancelled", "the stop is no longer on a live route")
    if stop.route_state == RS.OFFERED:
        raise TransitionError("route_not_accepted", "accept the route first")
    if stop.locked:
        raise TransitionError("stop_locked", "too many wrong codes: the stop is locked")
    if next_stop_id != stop.stop_id:
        raise TransitionError(
            "stop_out_of_order",
            "stops complete in order; another stop comes first",
            details={"next_stop_id": next_stop_id},
        )


def check_presence(fix: Fix | None, place: Point, now: datetime, limits: Limits) -> float:
    """The courier's trusted fix proves it is at `place`; returns the distance in metres."""
    if fix is None:
        raise TransitionError("position_unknown", "no trusted position from you yet: send your location")
    age = (now - fix.at).total_seconds()
    if age > limits.stale_s:
        raise TransitionError(
            "position_stale",
            "your last trusted position is too old: send your location",
            details={"age_s": round(age, 1), "stale_s": limits.stale_s},
        )
    distance = haversine_m(fix.location[0], fix.location[1], place[0], place[1])
    radius = limits.arrival_radius_m
    if distance > radius or fix.accuracy_m > radius:
        raise TransitionError(
            "too_far",
            f"your last trusted position is not within {radius:g} m of the stop",
            details={"distance_m": round(distance, 1), "accuracy_m": fix.accuracy_m, "radius_m": radius},
        )
    return distance


def _decide(stop: StopView, action: StopAction, at: datetime, proof: Proof | None) -> StopTransition:
    rule = STOP_TRANSITIONS[action]
    # The checks of each action must agree with the table; a mismatch is a bug here, not a 409.
    assert stop.state in rule.from_states, f"{action} checks let {stop.state} through"
    return StopTransition(stop.stop_id, action, rule.from_states, StopState(rule.to_state), at, proof)


# --- arrival ----------------------------------------------------------------------------------------------


def arrive(
    stop: StopView, next_stop_id: str | None, now: datetime, actor: Actor, fix: Fix | None, limits: Limits
) -> StopTransition:
    """The courier (or an admin for it) says it is at the stop."""
    check_turn(stop, next_stop_id)
    if stop.state == SS.ARRIVED:
        raise TransitionError("already_arrived", "already arrived at this stop")
    if actor == Actor.ADMIN:
        return _decide(stop, StopAction.ARRIVE, now, Proof.ADMIN)
    if actor != Actor.COURIER:
        raise ValueError(f"{actor} does not arrive at stops")
    check_presence(fix, stop.location, now, limits)
    return _decide(stop, StopAction.ARRIVE, now, Proof.POSITION)


# --- pickups ----------------------------------------------------------------------------------------------


def pick_up(
    stop: StopView,
    next_stop_id: str | None,
    jobs: Sequence[job_rules.Job],
    now: datetime,
    actor: Actor,
    *,
    fix: Fix | None = None,
    limits: Limits | None = None,
    handed_over: str | None = None,
) -> Pickup:
    """Goods leave the shop. `jobs`: the stop's jobs still on this route; `handed_over`: the one job the shop
    hands over (shops only); `fix` and `limits`: the courier's presence (couriers only)."""
    if stop.kind != "pickup":
        raise ValueError("pick_up is for pickup stops")
    check_turn(stop, next_stop_id)
    waiting = [j for j in jobs if j.state in WAITING]
    if actor == Actor.SHOP:  # the job's own rules refuse one already picked up, or not accepted
        taken = [j for j in jobs if j.job_id == handed_over]
        if not taken:
            raise ValueError(f"job {handed_over} is not collected at stop {stop.stop_id}")
    else:
        if not waiting:
            raise TransitionError("nothing_to_pick_up", "nothing left to pick up here")
        taken = waiting
        if actor == Actor.COURIER:
            if limits is None:
                raise ValueError("a courier's pickup needs the presence limits")
            check_presence(fix, stop.location, now, limits)
            unready = sorted(j.job_id for j in taken if j.state != JobState.READY)
            if unready:
                raise TransitionError(
                    "job_not_ready",
                    "the shop has not marked every job here ready; wait for it, or for its hand-over",
                    details={"job_ids": unready},
                )
    decisions: list[JobTransition] = []
    for job in sorted(taken, key=lambda j: j.job_id):
        if actor == Actor.COURIER:
            decisions.append(job_rules.mark_picked_up(job, now))
        else:  # the shop's hand-over, or an admin's standing in for it: ready first
            decisions += job_rules.hand_over(job, job.shop_id, now, job_rules.Fulfilment.DELIVERY)
    left = {j.job_id for j in waiting} - {j.job_id for j in taken}
    proof = {Actor.COURIER: Proof.COURIER, Actor.SHOP: Proof.SHOP, Actor.ADMIN: Proof.ADMIN}[actor]
    done = None if left else _decide(stop, StopAction.COMPLETE, now, proof)
    return Pickup(tuple(decisions), done)


# --- drop-offs --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoorEvidence:
    """What may prove a drop-off besides an admin: the code typed, the order's code and whether the resident
    lets the courier's position stand in for it, and the courier's latest fix (flagged or not)."""

    code: str | None
    expected_code: str | None
    allow_proximity: bool
    latest: Fix | None = None
    latest_flagged: bool = False


def drop_off(
    stop: StopView,
    next_stop_id: str | None,
    jobs: Sequence[job_rules.Job],
    now: datetime,
    actor: Actor,
    evidence: DoorEvidence,
    limits: Limits,
) -> Delivery | WrongCode:
    """The goods on board for this door are handed over, or a wrong code is to be counted."""
    if stop.kind != "dropoff":
        raise ValueError("drop_off is for drop-off stops")
    check_turn(stop, next_stop_id)
    aboard = sorted((j for j in jobs if j.state == JobState.PICKED_UP), key=lambda j: j.job_id)
    if not aboard:
        raise TransitionError("nothing_to_deliver", "nothing on board for this drop-off")
    proof = Proof.ADMIN if actor == Actor.ADMIN else _door_proof(stop, now, evidence, limits)
    if proof is None:
        counted = stop.wrong_codes + 1
        return WrongCode(stop.stop_id, stop.wrong_codes, counted, counted >= MAX_WRONG_CODES)
    delivered = tuple(job_rules.mark_delivered(j, now) for j in aboard)
    return Delivery(delivered, _decide(stop, StopAction.COMPLETE, now, proof))


def _door_proof(stop: StopView, now: datetime, evidence: DoorEvidence, limits: Limits) -> Proof | None:
    """CODE or PROXIMITY; None for a wrong code; raises when no proof was offered at all."""
    if evidence.code is not None:
        expected = evidence.expected_code or ""
        return Proof.CODE if expected and _same(evidence.code, expected) else None
    if not evidence.allow_proximity:
        raise TransitionError("code_required", "this drop-off needs the resident's code")
    fix = evidence.latest
    if fix is None or evidence.latest_flagged or (now - fix.at).total_seconds() > limits.stale_s:
        raise TransitionError("proximity_not_proven", "no recent trusted position proves you are at the door")
    distance = haversine_m(fix.location[0], fix.location[1], stop.location[0], stop.location[1])
    if distance > limits.door_m or fix.accuracy_m > limits.door_m:
        raise TransitionError(
            "proximity_not_proven",
            "your position does not prove you are at the door",
            details={
                "distance_m": round(distance, 1),
                "accuracy_m": fix.accuracy_m,
                "limit_m": limits.door_m,
            },
        )
    return Proof.PROXIMITY


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison, so timing does not leak how much of a guess was right."""
    return hmac.compare_digest(given.encode(), expected.encode())


# --- stops whose jobs went away, and closing routes -------------------------------------------------------


def settle(kind: StopKind, jobs: Mapping[str, JobState]) -> Settlement:
    """`jobs`: the stop's jobs still on its route, with their states (cancelled ones included)."""

    def having(states: Collection[JobState]) -> tuple[str, ...]:
        return tuple(sorted(j for j, s in jobs.items() if JobState(s) in states))

    if kind == "pickup":
        if having(WAITING):
            return Settlement("keep", having(WAITING | _COLLECTED))
        return Settlement("complete") if having(_COLLECTED) else Settlement("cancel")
    coming = having(WAITING | {JobState.PICKED_UP})
    return Settlement("keep", coming) if coming else Settlement("cancel")


def settled(stop_id: str, state: StopState, settlement: Settlement, now: datetime) -> StopTransition | None:
    """The stop change a settlement makes (None: the stop stays open, with the settlement's jobs)."""
    if settlement.outcome == "keep":
        return None
    action = StopAction.COMPLETE if settlement.outcome == "complete" else StopAction.CANCEL
    rule = STOP_TRANSITIONS[action]
    assert state in rule.from_states, f"settling a {state} stop"
    return StopTransition(stop_id, action, rule.from_states, StopState(rule.to_state), now)


def close_route(
    route_id: str, state: RouteState, stop_states: Collection[StopState], now: datetime
) -> RouteTransition | None:
    """A live route with no open stop left ends: completed if any stop was, else cancelled."""
    if state not in LIVE_ROUTES or any(s in OPEN_STOPS for s in stop_states):
        return None
    action = RouteAction.COMPLETE if SS.COMPLETED in stop_states else RouteAction.CANCEL
    rule = ROUTE_TRANSITIONS[action]
    return RouteTransition(route_id, action, rule.from_states, RouteState(rule.to_state), now)


def refuse_answer(action: RouteAction, state: RouteState) -> TransitionError:
    """Why a courier's accept or decline of an offer changed nothing (the route is `state` now)."""
    if state in (RS.OFFERED, RS.EXPIRED):  # offered still: its deadline passed before the answer
        return TransitionError("offer_expired", "the offer has expired")
    if state == RS.ACTIVE:
        if action == RouteAction.DECLINE:
            return TransitionError("route_not_offered", "an accepted route cannot be declined")
        return TransitionError("already_accepted", "the route is already accepted")
    return TransitionError(f"route_{state}", f"the route is {state}")
