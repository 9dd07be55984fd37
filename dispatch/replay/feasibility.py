"""Feasibility of a replayed day against the instance's rules.

The rules are those of the published evaluator, made a little stricter where it is lenient
(it checks places, not the half service times, and only the first order's restaurant):

========================== ================================================================
rule                       violated when
========================== ================================================================
unknown-id                 the trace names an order, courier or place the instance lacks
duplicate-order            an order has more than one order record (delivered more than once)
multiple-assignments       an order is in more than one assignment (or twice in one)
record-mismatch            an order record disagrees with its assignment (courier, times), or
                           says picked up/delivered without being in any assignment
mixed-bundle               a bundle holds orders of different restaurants
assigned-before-placement  an assignment is made before one of its orders is placed
pickup-before-ready        a bundle is picked up before one of its orders is ready
pickup-after-off-time      a bundle is picked up after the courier's off time
before-shift               a courier moves or picks up before its on time
broken-chain               a move does not start where the courier's previous move ended
                           (the first one starts at "0")
departure-before-arrival   a move leaves before the courier reached its origin (travel time
                           ``ceil(euclidean / speed)`` from the previous departure)
out-of-sequence            a bundle's deliveries are not in its order, or precede its pickup
pickup-place               at pickup time the courier is not at the bundle's restaurant
delivery-place             at delivery time the courier is not at the order's drop-off point
service-time               at the right place, but a pickup (delivery) less than half the
                           pickup (drop-off) service time after arriving or before leaving
========================== ================================================================

Every time comparison allows ``tolerance`` minutes, for a live replay whose clock jitters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from dispatch.replay.instance import START_POINT, Instance, travel_minutes
from dispatch.replay.trace import AssignmentRecord, CourierMove, OrderRecord, Trace

RULES = (
    "unknown-id",
    "duplicate-order",
    "multiple-assignments",
    "record-mismatch",
    "mixed-bundle",
    "assigned-before-placement",
    "pickup-before-ready",
    "pickup-after-off-time",
    "before-shift",
    "broken-chain",
    "departure-before-arrival",
    "out-of-sequence",
    "pickup-place",
    "delivery-place",
    "service-time",
)


@dataclass(frozen=True)
class Violation:
    rule: str
    order: str | None
    courier: str | None
    message: str

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass
class _Stay:
    place: str
    arrival: float
    departure: float


class _Checker:
    def __init__(self, instance: Instance, tolerance: float) -> None:
        self.instance = instance
        self.tol = tolerance
        self.found: list[Violation] = []

    def flag(self, rule: str, message: str, order: str | None = None, courier: str | None = None) -> None:
        self.found.append(Violation(rule, order, courier, message))

    def early(self, t: float, bound: float) -> bool:
        """``t`` is before ``bound`` by more than the tolerance."""
        return t < bound - self.tol

    # -- records and assignments ----------------------------------------------------------

    def order_records(self, records: list[OrderRecord]) -> dict[str, OrderRecord]:
        by_order: dict[str, OrderRecord] = {}
        for rec in records:
            if rec.order not in self.instance.orders:
                self.flag("unknown-id", f"order record for unknown order {rec.order!r}", rec.order)
            elif rec.courier is not None and rec.courier not in self.instance.couriers:
                self.flag("unknown-id", f"unknown courier {rec.courier!r}", rec.order, rec.courier)
            elif rec.order in by_order:
                self.flag("duplicate-order", "more than one order record", rec.order, rec.courier)
            else:
                by_order[rec.order] = rec
        return by_order

    def assignments(self, assignments: list[AssignmentRecord]) -> list[AssignmentRecord]:
        seen: set[str] = set()
        valid = []
        for a in assignments:
            unknown = [o for o in a.order_ids if o not in self.instance.orders]
            if a.courier not in self.instance.couriers:
                unknown.append(a.courier)
            if unknown or not a.order_ids:
                what = f"unknown {unknown}" if unknown else "no orders"
                self.flag("unknown-id", f"assignment names {what}", None, a.courier)
                continue
            for o in a.order_ids:
                if o in seen:
                    self.flag("multiple-assignments", "order assigned more than once", o, a.courier)
                seen.add(o)
            valid.append(a)
        return valid

    def assignment(self, a: AssignmentRecord, records: dict[str, OrderRecord]) -> None:
        inst, c = self.instance, self.instance.couriers[a.courier]
        restaurants = {inst.orders[o].restaurant for o in a.order_ids}
        if len(restaurants) > 1:
            self.flag("mixed-bundle", f"bundle from {sorted(restaurants)}", a.order_ids[0], c.id)
        for o in a.order_ids:
            order = inst.orders[o]
            if self.early(a.assignment_time, order.placement_time):
                self.flag(
                    "assigned-before-placement",
                    f"assigned at {a.assignment_time}, placed at {order.placement_time}",
                    o,
                    c.id,
                )
            if self.early(a.pickup_time, order.ready_time):
                self.flag(
                    "pickup-before-ready",
                    f"picked up at {a.pickup_time}, ready at {order.ready_time}",
                    o,
                    c.id,
                )
        if self.early(c.off_time, a.pickup_time):
            self.flag(
                "pickup-after-off-time",
                f"picked up at {a.pickup_time}, off at {c.off_time}",
                a.order_ids[0],
                c.id,
            )
        if self.early(a.pickup_time, c.on_time):
            self.flag(
                "before-shift",
                f"picked up at {a.pickup_time}, on at {c.on_time}",
                a.order_ids[0],
                c.id,
            )
        previous: tuple[str, float] | None = None  # the last delivered order of the bundle
        for o in a.order_ids:
            rec = records.get(o)
            if rec is None:
                self.flag("record-mismatch", "assigned but has no order record", o, c.id)
                continue
            if rec.courier != c.id or self.differ(rec.pickup_time, a.pickup_time):
                self.flag(
                    "record-mismatch",
                    f"record says courier {rec.courier} pickup {rec.pickup_time}, assignment "
                    f"says {c.id} pickup {a.pickup_time}",
                    o,
                    c.id,
                )
            elif rec.assignment_time is not None and self.differ(rec.assignment_time, a.assignment_time):
                self.flag("record-mismatch", "assignment time differs", o, c.id)
            if rec.delivery_time is None:
                continue
            if self.early(rec.delivery_time, a.pickup_time):
                self.flag(
                    "out-of-sequence",
                    f"delivered at {rec.delivery_time}, before its pickup at {a.pickup_time}",
                    o,
                    c.id,
                )
            elif previous is not None and self.early(rec.delivery_time, previous[1]):
                self.flag(
                    "out-of-sequence",
                    f"delivered at {rec.delivery_time}, before {previous[0]} (at {previous[1]}) "
                    f"which comes first in bundle {list(a.order_ids)}",
                    o,
                    c.id,
                )
            previous = (o, rec.delivery_time)

    def differ(self, a: float | None, b: float | None) -> bool:
        if a is None or b is None:
            return a is not b
        return abs(a - b) > self.tol

    # -- moves and places -----------------------------------------------------------------

    def stays(self, courier: str, moves: list[CourierMove]) -> list[_Stay]:
        """Where the courier is between its moves, each stay from arrival to next departure."""
        inst, c = self.instance, self.instance.couriers[courier]
        stays = [_Stay(START_POINT, -math.inf, math.inf)]
        for m in moves:
            if not (inst.has_place(m.origin) and inst.has_place(m.destination)):
                self.flag("unknown-id", f"move {m.origin} -> {m.destination}", None, courier)
                break
            here = stays[-1]
            if m.origin != here.place:
                self.flag(
                    "broken-chain", f"move from {m.origin} but courier is at {here.place}", None, courier
                )
            if self.early(m.departure_time, here.arrival):
                self.flag(
                    "departure-before-arrival",
                    f"leaves {m.origin} at {m.departure_time}, arrived at {here.arrival}",
                    None,
                    courier,
                )
            if self.early(m.departure_time, c.on_time):
                self.flag("before-shift", f"moves at {m.departure_time}, on at {c.on_time}", None, courier)
            here.departure = m.departure_time
            tt = travel_minutes(
                inst.place(m.origin, courier), inst.place(m.destination, courier), inst.parameters
            )
            stays.append(_Stay(m.destination, m.departure_time + tt, math.inf))
        return stays

    def visit(
        self, stays: list[_Stay], place: str, t: float, half_service: float, absent_rule: str
    ) -> tuple[str, str] | None:
        """Whether the courier is at ``place`` at ``t``, half a service after arriving and half
        a service before leaving: None if so, else the rule broken and why."""
        there = False
        for s in stays:
            if s.place != place:
                continue
            if not (self.early(t, s.arrival + half_service) or self.early(s.departure - half_service, t)):
                return None
            there = there or not (self.early(t, s.arrival) or self.early(s.departure, t))
        if there:
            return (
                "service-time",
                f"courier at {place} less than {half_service} min after arriving or before leaving",
            )
        return absent_rule, f"courier not at {place}"


def check(instance: Instance, trace: Trace, *, tolerance: float = 0.0) -> list[Violation]:
    """All violations of the instance's rules in ``trace`` (empty when feasible)."""
    ck = _Checker(instance, tolerance)
    params = instance.parameters
    records = ck.order_records(trace.orders)
    assignments = ck.assignments(trace.assignments)
    assigned = {o: a for a in assignments for o in a.order_ids}
    for a in assignments:
        ck.assignment(a, records)
    for rec in records.values():
        if rec.order not in assigned and (
            rec.courier is not None or rec.pickup_time is not None or rec.delivery_time is not None
        ):
            ck.flag("record-mismatch", "picked up or delivered without an assignment", rec.order, rec.courier)

    moves = trace.moves_by_courier()
    stays: dict[str, list[_Stay]] = {}
    # Deterministic order: couriers as they first move, then those that only pick up.
    for courier in dict.fromkeys([*moves, *(a.courier for a in assignments)]):
        if courier not in instance.couriers:
            ck.flag("unknown-id", f"moves of unknown courier {courier!r}", None, courier)
            continue
        stays[courier] = ck.stays(courier, moves.get(courier, []))

    for a in assignments:
        restaurant = instance.orders[a.order_ids[0]].restaurant
        half = params.pickup_service_minutes / 2
        broken = ck.visit(stays[a.courier], restaurant, a.pickup_time, half, "pickup-place")
        if broken:
            ck.flag(broken[0], f"pickup at {a.pickup_time}: {broken[1]}", a.order_ids[0], a.courier)
        for o in a.order_ids:
            delivery = records[o].delivery_time if o in records else None
            if delivery is None:
                continue
            half = params.dropoff_service_minutes / 2
            broken = ck.visit(stays[a.courier], o, delivery, half, "delivery-place")
            if broken:
                ck.flag(broken[0], f"delivery at {delivery}: {broken[1]}", o, a.courier)
    return ck.found
