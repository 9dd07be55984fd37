from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.core.matching import (
    CandidateShop,
    OrderTiming,
    PlannedJob,
    PlannedLine,
    RequestedItem,
    SplitPlan,
    StockLine,
    Unavailable,
    UnavailableItem,
    plan_order,
    rematch,
)

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
ASAP = OrderTiming(T0)


def shop(
    shop_id: str,
    ready: float = 10,
    load: int = 0,
    *,
    open: bool = True,
    price: int = 100,
    **stock: int | StockLine,
) -> CandidateShop:
    lines = {sku: s if isinstance(s, StockLine) else StockLine(s, price) for sku, s in stock.items()}
    return CandidateShop(shop_id, lines, ready, load, open)


def items(**qty: int) -> list[RequestedItem]:
    return [RequestedItem(sku, q) for sku, q in qty.items()]


def plan(
    wanted: Sequence[RequestedItem], shops: Sequence[CandidateShop], timing: OrderTiming = ASAP
) -> SplitPlan:
    result = plan_order(wanted, shops, timing)
    assert isinstance(result, SplitPlan), result
    assert result.optimal
    return result


def shop_ids(result: SplitPlan) -> list[str]:
    return [job.shop_id for job in result.jobs]


def allocation(result: SplitPlan) -> dict[str, dict[str, int]]:
    return {job.shop_id: {ln.sku: ln.qty for ln in job.lines} for job in result.jobs}


# --- basic covering -----------------------------------------------------------------------------


def test_single_shop_covering_everything_gets_one_job_with_its_prices() -> None:
    result = plan(
        items(milk=2, bread=1),
        [shop("a", milk=5, bread=1, price=250), shop("b", milk=5)],
    )
    assert result.jobs == (PlannedJob("a", (PlannedLine("milk", 2, 250), PlannedLine("bread", 1, 250))),)


def test_order_split_across_two_shops_when_none_has_everything() -> None:
    result = plan(items(milk=1, bread=1), [shop("a", milk=3), shop("b", bread=3)])
    assert allocation(result) == {"a": {"milk": 1}, "b": {"bread": 1}}


def test_fewest_shops_beats_faster_shops() -> None:
    shops = [shop("fast1", 5, milk=1), shop("fast2", 5, bread=1), shop("slow", 30, milk=1, bread=1)]
    assert shop_ids(plan(items(milk=1, bread=1), shops)) == ["slow"]


def test_closed_shops_are_never_chosen() -> None:
    shops = [shop("a", 5, open=False, milk=1), shop("b", 20, milk=1)]
    assert shop_ids(plan(items(milk=1), shops)) == ["b"]


# --- tie-breaks ---------------------------------------------------------------------------------


def test_tie_broken_by_latest_ready_time_not_the_sum() -> None:
    # Only {a, b} (max 20, sum 21) and {c, d} (max 15, sum 30) cover everything with two shops.
    shops = [
        shop("a", 1, x1=1, x2=1),
        shop("b", 20, y1=1, y2=1),
        shop("c", 15, x1=1, y1=1),
        shop("d", 15, x2=1, y2=1),
    ]
    assert shop_ids(plan(items(x1=1, x2=1, y1=1, y2=1), shops)) == ["c", "d"]


def test_tie_broken_by_total_load_after_ready_time() -> None:
    shops = [
        shop("a", 10, load=3, milk=1),
        shop("b", 10, load=0, bread=1),
        shop("c", 10, load=1, milk=1),
        shop("d", 10, load=1, bread=1),
    ]
    # {a, b}: load 3; {c, d}: load 2; {c, b}: load 1 -- the mixed pair wins.
    assert shop_ids(plan(items(milk=1, bread=1), shops)) == ["b", "c"]


def test_load_only_breaks_ties_of_ready_time() -> None:
    shops = [shop("busy", 10, load=9, milk=1), shop("idle", 11, load=0, milk=1)]
    assert shop_ids(plan(items(milk=1), shops)) == ["busy"]


def test_final_tie_broken_by_shop_id() -> None:
    shops = [shop(sid, 10, load=1, milk=1) for sid in ("s3", "s1", "s2")]
    assert shop_ids(plan(items(milk=1), shops)) == ["s1"]


def test_shop_id_tie_break_compares_sorted_id_tuples() -> None:
    shops = [
        shop("a", 10, milk=1),
        shop("z", 10, bread=1),
        shop("b", 10, milk=1),
        shop("c", 10, bread=1),
    ]
    assert shop_ids(plan(items(milk=1, bread=1), shops)) == ["a", "c"]


# --- pre-orders ---------------------------------------------------------------------------------


CAKE = StockLine(qty_available=5, price_cents=2500, preorder_only=True, lead_minutes=120)


def test_asap_order_cannot_take_preorder_only_items() -> None:
    result = plan_order(items(cake=1), [shop("bakery", cake=CAKE)], ASAP)
    assert result == Unavailable((UnavailableItem("cake", None, 1, 0),))


@pytest.mark.parametrize(
    ("lead_after", "ok"),
    [(timedelta(minutes=120), True), (timedelta(minutes=119, seconds=59), False)],
)
def test_preorder_needs_slot_at_least_lead_minutes_after_placing(lead_after: timedelta, ok: bool) -> None:
    timing = OrderTiming(T0, slot_start=T0 + lead_after)
    result = plan_order(items(cake=1), [shop("bakery", cake=CAKE)], timing)
    assert isinstance(result, SplitPlan) is ok


def test_preorder_shop_only_used_when_slot_allows_it() -> None:
    shops = [shop("bakery", 5, cake=CAKE, bread=1), shop("market", 20, cake=1), shop("b2", bread=1)]
    later = OrderTiming(T0, slot_start=T0 + timedelta(hours=3))
    assert shop_ids(plan(items(cake=1, bread=1), shops, later)) == ["bakery"]
    assert shop_ids(plan(items(cake=1, bread=1), shops, ASAP)) == ["b2", "market"]


def test_lead_minutes_of_ordinary_stock_do_not_block_asap() -> None:
    line = StockLine(3, 100, preorder_only=False, lead_minutes=600)
    assert shop_ids(plan(items(milk=1), [shop("a", milk=line)])) == ["a"]


# --- shop-pinned items --------------------------------------------------------------------------


def test_pinned_item_only_comes_from_its_shop() -> None:
    wanted = [RequestedItem("milk", 1, shop_id="b"), RequestedItem("bread", 1)]
    shops = [shop("a", 5, milk=9, bread=9), shop("b", 30, milk=9, bread=9)]
    # "a" is faster, but "b" must be in the plan, and then covers everything alone.
    assert allocation(plan(wanted, shops)) == {"b": {"milk": 1, "bread": 1}}


def test_pinned_item_unavailable_when_its_shop_lacks_it() -> None:
    wanted = [RequestedItem("milk", 3, shop_id="b")]
    result = plan_order(wanted, [shop("a", milk=9), shop("b", milk=2)], ASAP)
    assert result == Unavailable((UnavailableItem("milk", "b", 3, 2),))


def test_pinned_item_unavailable_when_its_shop_is_not_a_candidate() -> None:
    result = plan_order([RequestedItem("milk", 1, "gone")], [shop("a", milk=9)], ASAP)
    assert result == Unavailable((UnavailableItem("milk", "gone", 1, 0),))


def test_pinned_item_is_never_split() -> None:
    wanted = [RequestedItem("milk", 4, shop_id="b")]
    result = plan_order(wanted, [shop("a", milk=3), shop("b", milk=3)], ASAP)
    assert result == Unavailable((UnavailableItem("milk", "b", 4, 3),))


def test_pinned_quantity_is_set_aside_before_the_unpinned_line() -> None:
    wanted = [RequestedItem("milk", 2, shop_id="a"), RequestedItem("milk", 2)]
    shops = [shop("a", 5, milk=3), shop("b", 30, milk=2)]
    # "a" has 3: 2 are held for the pinned line, so the unpinned 2 must come from "b".
    assert allocation(plan(wanted, shops)) == {"a": {"milk": 2}, "b": {"milk": 2}}


# --- splitting one SKU --------------------------------------------------------------------------


def test_sku_not_split_when_one_shop_has_the_quantity() -> None:
    shops = [shop("a", 5, apple=3), shop("b", 5, apple=2), shop("c", 40, apple=5)]
    assert allocation(plan(items(apple=5), shops)) == {"c": {"apple": 5}}


def test_sku_split_greedily_over_fewest_shops_when_no_shop_has_it() -> None:
    shops = [shop("a", 5, apple=2), shop("b", 5, apple=5), shop("c", 5, apple=4)]
    assert allocation(plan(items(apple=8), shops)) == {"b": {"apple": 5}, "c": {"apple": 3}}


def test_split_sku_shares_shops_with_other_lines() -> None:
    shops = [shop("a", 5, apple=5), shop("b", 5, apple=3, pear=1), shop("c", 5, apple=4)]
    # {a, b} covers 8 apples and the pear with two shops; "a" gives the most, "b" the rest.
    assert allocation(plan(items(apple=7, pear=1), shops)) == {
        "a": {"apple": 5},
        "b": {"apple": 2, "pear": 1},
    }


def test_no_split_even_if_splitting_would_need_fewer_shops() -> None:
    shops = [shop("a", apple=4, pear=1), shop("c", apple=2, plum=1), shop("big", apple=10)]
    # Splitting apples over {a, c} would cover all in 2 shops, but "big" has all 6 apples.
    assert allocation(plan(items(apple=6, pear=1, plum=1), shops)) == {
        "a": {"pear": 1},
        "big": {"apple": 6},
        "c": {"plum": 1},
    }


# --- unavailable items, merging, validation ------------------------------------------------------


def test_unavailable_lists_exactly_the_missing_items_in_request_order() -> None:
    shops = [shop("a", milk=9, eggs=2), shop("b", eggs=1, salt=1)]
    result = plan_order(items(eggs=6, milk=1, caviar=1, salt=1), shops, ASAP)
    assert result == Unavailable((UnavailableItem("eggs", None, 6, 3), UnavailableItem("caviar", None, 1, 0)))


def test_duplicate_skus_are_merged_at_their_first_position() -> None:
    wanted = [RequestedItem("milk", 1), RequestedItem("bread", 1), RequestedItem("milk", 2)]
    result = plan(wanted, [shop("a", milk=3, bread=1)])
    assert result.jobs[0].lines == (PlannedLine("milk", 3, 100), PlannedLine("bread", 1, 100))
    # Merged, 4 milk is more than the shop has.
    wanted.append(RequestedItem("milk", 1))
    assert plan_order(wanted, [shop("a", milk=3, bread=1)], ASAP) == Unavailable(
        (UnavailableItem("milk", None, 4, 3),)
    )


def test_contract_violations_raise_value_error() -> None:
    with pytest.raises(ValueError, match="qty"):
        RequestedItem("milk", 0)
    with pytest.raises(ValueError, match="unique"):
        plan_order(items(milk=1), [shop("a", milk=1), shop("a", milk=2)], ASAP)
    with pytest.raises(ValueError, match="at least one item"):
        plan_order([], [shop("a", milk=1)], ASAP)
    with pytest.raises(ValueError, match="timezone-aware"):
        OrderTiming(datetime(2026, 5, 4, 12))


# --- search: exactness, cap fallback, speed ------------------------------------------------------


GREEDY_TRAP = [
    # Greedy takes "g" (4 lines), then the fast "r" and "s"; none of the three is redundant.
    # The optimum is {p, q}.
    shop("g", 1, l1=1, l2=1, l4=1, l5=1),
    shop("r", 1, l3=1),
    shop("s", 1, l6=1),
    shop("p", 9, l1=1, l2=1, l3=1),
    shop("q", 9, l4=1, l5=1, l6=1),
]


def test_exact_search_beats_the_greedy_cover() -> None:
    wanted = items(l1=1, l2=1, l3=1, l4=1, l5=1, l6=1)
    assert shop_ids(plan(wanted, GREEDY_TRAP)) == ["p", "q"]


def test_work_cap_falls_back_to_a_valid_greedy_plan() -> None:
    wanted = items(l1=1, l2=1, l3=1, l4=1, l5=1, l6=1)
    result = plan_order(wanted, GREEDY_TRAP, ASAP, max_nodes=1)
    assert isinstance(result, SplitPlan)
    assert not result.optimal
    assert len(result.jobs) == 3
    assert sorted(ln.sku for job in result.jobs for ln in job.lines) == [f"l{i}" for i in range(1, 7)]


def random_city(seed: int, n_shops: int, n_lines: int) -> tuple[list[RequestedItem], list[CandidateShop]]:
    rnd = random.Random(seed)
    skus = [f"sku{i}" for i in range(n_lines * 3)]
    shops = []
    for i in range(n_shops):
        carried = rnd.sample(skus, rnd.randint(1, len(skus) // 2))
        stock = {sku: StockLine(rnd.randint(1, 10), 100) for sku in carried}
        shops.append(CandidateShop(f"shop{i:03d}", stock, rnd.randint(5, 40), rnd.randint(0, 5)))
    wanted = [RequestedItem(sku, rnd.randint(1, 6)) for sku in rnd.sample(skus, n_lines)]
    return wanted, shops


def test_large_order_over_200_shops_stays_fast_and_valid() -> None:
    wanted, shops = random_city(7, n_shops=200, n_lines=50)
    started = time.perf_counter()
    result = plan_order(wanted, shops, ASAP)
    elapsed = time.perf_counter() - started
    assert isinstance(result, SplitPlan)
    assert_plan_is_valid(result, wanted, shops, ASAP)
    assert elapsed < 3.0  # the work cap bounds it to about a tenth of this


# --- rematch ------------------------------------------------------------------------------------


def test_rematch_skips_shops_that_refused() -> None:
    shops = [shop("a", 5, milk=3, bread=1), shop("b", 10, milk=3, bread=1), shop("c", 20, milk=3)]
    result = rematch(items(milk=2, bread=1), shops, ASAP, refused_shop_ids={"a"})
    assert result.jobs == (PlannedJob("b", (PlannedLine("milk", 2, 100), PlannedLine("bread", 1, 100))),)
    assert result.unplaced == ()


def test_rematch_returns_what_no_remaining_shop_can_take() -> None:
    shops = [shop("a", milk=3, bread=1), shop("b", milk=1)]
    result = rematch(items(milk=2, bread=1), shops, ASAP, refused_shop_ids=["a"])
    assert result.jobs == ()
    assert result.unplaced == (
        UnavailableItem("milk", None, 2, 1),
        UnavailableItem("bread", None, 1, 0),
    )


def test_rematch_places_the_lines_it_can() -> None:
    shops = [shop("a", milk=3, bread=1), shop("b", bread=1)]
    result = rematch(items(milk=2, bread=1), shops, ASAP, refused_shop_ids=["a"])
    assert result.jobs == (PlannedJob("b", (PlannedLine("bread", 1, 100),)),)
    assert result.unplaced == (UnavailableItem("milk", None, 2, 0),)


def test_rematch_of_a_line_pinned_to_the_refuser_is_unplaced_and_frees_its_hold() -> None:
    wanted = [RequestedItem("milk", 2, shop_id="a"), RequestedItem("milk", 2)]
    shops = [shop("a", milk=2), shop("b", milk=2)]
    result = rematch(wanted, shops, ASAP, refused_shop_ids=["a"])
    assert result.unplaced == (UnavailableItem("milk", "a", 2, 0),)
    assert result.jobs == (PlannedJob("b", (PlannedLine("milk", 2, 100),)),)


# --- property: the plan is valid and no plan with fewer (or better) shops exists ----------------


def usable(stock: StockLine, timing: OrderTiming) -> bool:
    if not stock.preorder_only:
        return True
    return timing.slot_start is not None and (
        timing.slot_start - timing.placed_at >= timedelta(minutes=stock.lead_minutes)
    )


def effective_stock(
    wanted: Sequence[RequestedItem], shops: Sequence[CandidateShop], timing: OrderTiming
) -> dict[tuple[str, str | None], dict[str, int]]:
    """(sku, pin) -> shop id -> quantity the shop may supply, written independently of the module."""
    merged: dict[tuple[str, str | None], int] = {}
    for item in wanted:
        merged[item.sku, item.shop_id] = merged.get((item.sku, item.shop_id), 0) + item.qty
    out: dict[tuple[str, str | None], dict[str, int]] = {}
    for sku, pin in merged:
        out[sku, pin] = {}
        for s in shops:
            stock = s.stock.get(sku)
            if not s.open or stock is None or not usable(stock, timing) or pin not in (None, s.shop_id):
                continue
            held = merged.get((sku, s.shop_id), 0) if pin is None else 0
            if stock.qty_available - held > 0:
                out[sku, pin][s.shop_id] = stock.qty_available - held
    return out


def merged_demand(wanted: Sequence[RequestedItem]) -> dict[tuple[str, str | None], int]:
    out: dict[tuple[str, str | None], int] = {}
    for item in wanted:
        out[item.sku, item.shop_id] = out.get((item.sku, item.shop_id), 0) + item.qty
    return out


def assert_plan_is_valid(
    result: SplitPlan,
    wanted: Sequence[RequestedItem],
    shops: Sequence[CandidateShop],
    timing: OrderTiming,
) -> None:
    by_id = {s.shop_id: s for s in shops}
    taken: dict[tuple[str, str], int] = {}
    for job in result.jobs:
        assert job.lines, "a job without lines"
        s = by_id[job.shop_id]
        assert s.open
        for line in job.lines:
            stock = s.stock[line.sku]
            assert usable(stock, timing)
            assert line.unit_price_cents == stock.price_cents
            assert line.qty > 0
            taken[job.shop_id, line.sku] = taken.get((job.shop_id, line.sku), 0) + line.qty
    for (shop_id, sku), qty in taken.items():
        assert qty <= by_id[shop_id].stock[sku].qty_available
    demand = merged_demand(wanted)
    for (sku, pin), qty in demand.items():
        if pin is not None:
            assert taken.get((pin, sku), 0) >= qty
    per_sku: dict[str, int] = {}
    for (sku, _), qty in demand.items():
        per_sku[sku] = per_sku.get(sku, 0) + qty
    assert {sku: sum(q for (_, s), q in taken.items() if s == sku) for sku in per_sku} == per_sku
    assert {s for _, s in taken} == set(per_sku)


def brute_force_best(
    wanted: Sequence[RequestedItem], shops: Sequence[CandidateShop], timing: OrderTiming
) -> list[str] | None:
    """The best shop set by the documented rules, over every subset; None if nothing covers."""
    demand = merged_demand(wanted)
    avail = effective_stock(wanted, shops, timing)
    if any(sum(avail[key].values()) < qty for key, qty in demand.items()):
        return None
    whole = {key for key, qty in demand.items() if max(avail[key].values()) >= qty}
    ids = sorted(s.shop_id for s in shops)
    info = {s.shop_id: s for s in shops}
    for size in range(1, len(ids) + 1):
        valid = [
            combo
            for combo in itertools.combinations(ids, size)
            if all(
                any(avail[key].get(sid, 0) >= qty for sid in combo)
                if key in whole
                else sum(avail[key].get(sid, 0) for sid in combo) >= qty
                for key, qty in demand.items()
            )
        ]
        if valid:
            best = min(
                valid,
                key=lambda combo: (
                    max(info[sid].ready_and_travel_minutes for sid in combo),
                    sum(info[sid].load for sid in combo),
                    combo,
                ),
            )
            return list(best)
    raise AssertionError("feasible demand but no covering subset")


SKUS = ("a", "b", "c", "d")


@st.composite
def instances(draw: st.DrawFn) -> tuple[list[RequestedItem], list[CandidateShop], OrderTiming]:
    n_shops = draw(st.integers(1, 6))
    shop_ids = [f"s{i}" for i in range(n_shops)]
    shops = []
    for sid in shop_ids:
        stock: dict[str, StockLine] = {}
        for sku in draw(st.sets(st.sampled_from(SKUS))):
            stock[sku] = StockLine(
                draw(st.integers(0, 4)),
                draw(st.integers(50, 60)),
                preorder_only=draw(st.booleans()) and draw(st.booleans()),
                lead_minutes=draw(st.sampled_from([0, 30, 90])),
            )
        shops.append(
            CandidateShop(
                sid,
                stock,
                draw(st.sampled_from([5.0, 10.0, 15.0])),
                draw(st.integers(0, 2)),
                open=draw(st.integers(0, 5)) > 0,
            )
        )
    wanted = draw(
        st.lists(
            st.builds(
                RequestedItem,
                st.sampled_from(SKUS),
                st.integers(1, 5),
                st.one_of(st.none(), st.none(), st.none(), st.sampled_from([*shop_ids, "elsewhere"])),
            ),
            min_size=1,
            max_size=5,
        )
    )
    slot = draw(st.sampled_from([None, timedelta(minutes=30), timedelta(minutes=60)]))
    return wanted, shops, OrderTiming(T0, None if slot is None else T0 + slot)


@settings(max_examples=250, deadline=None)
@given(instances())
def test_plan_is_valid_and_optimal_against_brute_force(
    case: tuple[list[RequestedItem], list[CandidateShop], OrderTiming],
) -> None:
    wanted, shops, timing = case
    result = plan_order(wanted, shops, timing)
    expected = brute_force_best(wanted, shops, timing)
    if expected is None:
        assert isinstance(result, Unavailable)
        demand = merged_demand(wanted)
        avail = effective_stock(wanted, shops, timing)
        missing = {key for key, qty in demand.items() if sum(avail[key].values()) < qty}
        assert {(u.sku, u.shop_id) for u in result.items} == missing
        for u in result.items:
            assert u.qty_requested == demand[u.sku, u.shop_id]
            assert u.qty_coverable == sum(avail[u.sku, u.shop_id].values())
        return
    assert isinstance(result, SplitPlan)
    assert result.optimal
    assert_plan_is_valid(result, wanted, shops, timing)
    assert shop_ids(result) == expected
    # Whole lines are not split: an unpinned line that one shop could supply comes from one job
    # (beyond what that job's shop supplies for a line pinned to it).
    avail = effective_stock(wanted, shops, timing)
    demand = merged_demand(wanted)
    for (sku, pin), qty in demand.items():
        if pin is None and max(avail[sku, pin].values()) >= qty:
            suppliers = [
                job.shop_id
                for job in result.jobs
                for ln in job.lines
                if ln.sku == sku and ln.qty > demand.get((sku, job.shop_id), 0)
            ]
            assert len(suppliers) == 1


def test_rematch_property_never_uses_refusers() -> None:
    rnd = random.Random(3)
    for seed in range(30):
        wanted, shops = random_city(seed, n_shops=12, n_lines=4)
        refused = {s.shop_id for s in rnd.sample(shops, 4)}
        result = rematch(wanted, shops, ASAP, refused)
        assert not {job.shop_id for job in result.jobs} & refused
        placed = {ln.sku for job in result.jobs for ln in job.lines}
        assert placed.isdisjoint({u.sku for u in result.unplaced})
        assert placed | {u.sku for u in result.unplaced} == {w.sku for w in wanted}
