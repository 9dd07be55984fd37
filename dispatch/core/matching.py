"""Matching an order's items to candidate shops and splitting it into one job per shop.

The caller has already narrowed the candidates to shops near the drop-off point, evaluated whether
each is open at the requested time and estimated its ready-and-travel minutes; this module only
decides.

Rules:

- Duplicate requested lines with the same (sku, shop_id) are merged by adding their quantities,
  keeping the position of the first. A SKU pinned to a shop and also requested unpinned stays two
  lines; the pinned quantity is set aside from that shop's stock before the unpinned line is placed.
- A shop can supply a line when it is open, holds the SKU, the line is not pinned to another shop,
  and the stock line is usable for the timing: a ``preorder_only`` line needs a slot starting at
  least ``lead_minutes`` after ``placed_at`` (an asap order cannot take it). ``lead_minutes`` of
  ordinary stock is ignored.
- A line is supplied whole by one shop when any single candidate has the quantity; otherwise (and
  never for pinned lines) it is split over the chosen shops, largest stock first.
- The chosen set covers every line with the fewest shops; ties go to the smallest maximum
  ready-and-travel minutes, then the smallest total load, then the lexicographically smallest
  sorted tuple of shop ids.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# Work cap of the exact search, in search nodes (a few µs each, so about 0.1 s). See `_Search`.
MAX_SEARCH_NODES = 20_000


@dataclass(frozen=True, slots=True)
class RequestedItem:
    sku: str
    qty: int
    shop_id: str | None = None  # set when picked from a shop's catalogue: only it may supply

    def __post_init__(self) -> None:
        if self.qty < 1:
            raise ValueError(f"qty must be positive, got {self.qty}")


@dataclass(frozen=True, slots=True)
class StockLine:
    qty_available: int
    price_cents: int
    preorder_only: bool = False
    lead_minutes: int = 0


@dataclass(frozen=True, slots=True)
class CandidateShop:
    shop_id: str
    stock: Mapping[str, StockLine]
    ready_and_travel_minutes: float
    load: int = 0  # jobs currently open at the shop
    open: bool = True  # evaluated by the caller for the requested time


@dataclass(frozen=True, slots=True)
class OrderTiming:
    placed_at: datetime
    slot_start: datetime | None = None  # None = as soon as possible

    def __post_init__(self) -> None:
        for at in (self.placed_at, self.slot_start):
            if at is not None and at.utcoffset() is None:
                raise ValueError("order timing needs timezone-aware datetimes")


@dataclass(frozen=True, slots=True)
class PlannedLine:
    sku: str
    qty: int
    unit_price_cents: int


@dataclass(frozen=True, slots=True)
class PlannedJob:
    shop_id: str
    lines: tuple[PlannedLine, ...]


@dataclass(frozen=True, slots=True)
class SplitPlan:
    jobs: tuple[PlannedJob, ...]  # sorted by shop_id
    optimal: bool = True  # False when the work cap stopped the search (see `_Search`)


@dataclass(frozen=True, slots=True)
class UnavailableItem:
    sku: str
    shop_id: str | None  # the pinned shop, if any
    qty_requested: int
    qty_coverable: int  # what the candidates could supply in total, < qty_requested


@dataclass(frozen=True, slots=True)
class Unavailable:
    items: tuple[UnavailableItem, ...]  # in request order


@dataclass(frozen=True, slots=True)
class Rematch:
    jobs: tuple[PlannedJob, ...]  # new offers, sorted by shop_id
    unplaced: tuple[UnavailableItem, ...]  # lines no remaining shop can take
    optimal: bool = True


def plan_order(
    items: Sequence[RequestedItem],
    candidates: Sequence[CandidateShop],
    timing: OrderTiming,
    *,
    max_nodes: int = MAX_SEARCH_NODES,
) -> SplitPlan | Unavailable:
    """Split an order over the fewest shops, or say which items cannot be covered."""
    if not items:
        raise ValueError("an order needs at least one item")
    lines = _merge_items(items)
    shops = _unique_shops(candidates)
    table = _availability_table(lines, shops, timing)
    missing = _unavailable(lines, table)
    if missing:
        return Unavailable(tuple(item for _, item in missing))
    jobs, optimal = _place(lines, shops, table, max_nodes)
    return SplitPlan(jobs, optimal)


def rematch(
    lines_to_place: Sequence[RequestedItem],
    candidates: Sequence[CandidateShop],
    timing: OrderTiming,
    refused_shop_ids: Collection[str],
    *,
    max_nodes: int = MAX_SEARCH_NODES,
) -> Rematch:
    """Re-offer a refused job's lines to the best shops that have not refused them.

    Same rules as `plan_order`, but partial: lines no remaining shop can take (whole) are returned
    as `unplaced` while the others are still placed. Pass lines with their original pin, so a
    line pinned to the refusing shop comes back unplaced.
    """
    if not lines_to_place:
        raise ValueError("nothing to re-place")
    refused = set(refused_shop_ids)
    shops = [s for s in _unique_shops(candidates) if s.shop_id not in refused]
    lines = _merge_items(lines_to_place)
    table = _availability_table(lines, shops, timing)
    missing = _unavailable(lines, table)
    if missing:
        dropped = {i for i, _ in missing}
        lines = [line for i, line in enumerate(lines) if i not in dropped]
        # Dropped pinned lines no longer hold stock back from the others.
        table = _availability_table(lines, shops, timing)
    jobs, optimal = _place(lines, shops, table, max_nodes) if lines else ((), True)
    return Rematch(jobs, tuple(item for _, item in missing), optimal)


# --- input preparation --------------------------------------------------------------------------


def _merge_items(items: Sequence[RequestedItem]) -> list[RequestedItem]:
    merged: dict[tuple[str, str | None], int] = {}
    for item in items:
        key = (item.sku, item.shop_id)
        merged[key] = merged.get(key, 0) + item.qty
    return [RequestedItem(sku, qty, shop_id) for (sku, shop_id), qty in merged.items()]


def _unique_shops(candidates: Sequence[CandidateShop]) -> list[CandidateShop]:
    ids = [c.shop_id for c in candidates]
    if len(set(ids)) != len(ids):
        raise ValueError("candidate shop ids must be unique")
    return [c for c in candidates if c.open]


def _usable(stock: StockLine, timing: OrderTiming) -> bool:
    if not stock.preorder_only:
        return True
    if timing.slot_start is None:
        return False
    return timing.slot_start - timing.placed_at >= timedelta(minutes=stock.lead_minutes)


def _availability(
    line: RequestedItem, shop: CandidateShop, timing: OrderTiming, pinned: Mapping[tuple[str, str], int]
) -> int:
    """How much of `line` the shop can supply (0 when it cannot supply it at all)."""
    if line.shop_id is not None and line.shop_id != shop.shop_id:
        return 0
    stock = shop.stock.get(line.sku)
    if stock is None or not _usable(stock, timing):
        return 0
    held_for_pins = 0 if line.shop_id is not None else pinned.get((line.sku, shop.shop_id), 0)
    return max(0, stock.qty_available - held_for_pins)


def _availability_table(
    lines: Sequence[RequestedItem], shops: Sequence[CandidateShop], timing: OrderTiming
) -> list[list[int]]:
    """One row per shop: how much of each line it can supply."""
    pinned = {(ln.sku, ln.shop_id): ln.qty for ln in lines if ln.shop_id is not None}
    return [[_availability(line, shop, timing, pinned) for line in lines] for shop in shops]


def _unavailable(lines: Sequence[RequestedItem], table: list[list[int]]) -> list[tuple[int, UnavailableItem]]:
    """The lines all candidates together cannot cover, with their index."""
    out = []
    for i, line in enumerate(lines):
        total = sum(row[i] for row in table)
        if total < line.qty:
            out.append((i, UnavailableItem(line.sku, line.shop_id, line.qty, total)))
    return out


# --- search -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Shop:
    shop: CandidateShop
    whole: int  # bitmask of the whole lines this shop can supply entirely
    split: tuple[int, ...]  # availability for each split line

    @property
    def rank(self) -> tuple[float, int, str]:
        return (self.shop.ready_and_travel_minutes, self.shop.load, self.shop.shop_id)

    def dominated_by(self, other: _Shop) -> bool:
        """`other` can replace self in any plan without making it worse (see `_reduce`)."""
        a, b = self.shop, other.shop
        return (
            not any(self.split)
            and self.whole & ~other.whole == 0
            and b.ready_and_travel_minutes <= a.ready_and_travel_minutes
            and b.load <= a.load
            and (b.load < a.load or b.shop_id < a.shop_id)
        )


Cost = tuple[int, float, int, tuple[str, ...]]


def _place(
    lines: Sequence[RequestedItem],
    shops: Sequence[CandidateShop],
    avail: list[list[int]],
    max_nodes: int,
) -> tuple[tuple[PlannedJob, ...], bool]:
    whole_idx = [i for i, ln in enumerate(lines) if max(a[i] for a in avail) >= ln.qty]
    split_idx = [i for i in range(len(lines)) if i not in whole_idx]
    avail_by_id = {s.shop_id: row for s, row in zip(shops, avail, strict=True)}
    if not split_idx:
        # The common order: some shop has everything. No plan has fewer shops than one, and one-shop plans
        # compare by (ready, load, id), which is the rank: the best such shop is the optimum, no search
        # (and no option built for each of the dozens of candidates).
        needs = [(i, lines[i].qty) for i in whole_idx]
        alone = [
            shop for shop, row in zip(shops, avail, strict=True) if all(row[i] >= qty for i, qty in needs)
        ]
        if alone:
            best = min(alone, key=lambda s: (s.ready_and_travel_minutes, s.load, s.shop_id))
            return _allocate(lines, [best], whole_idx, split_idx, avail_by_id), True
    options = []
    for shop, row in zip(shops, avail, strict=True):
        whole = sum(1 << b for b, i in enumerate(whole_idx) if row[i] >= lines[i].qty)
        split = tuple(row[i] for i in split_idx)
        if whole or any(split):
            options.append(_Shop(shop, whole, split))
    full = (1 << len(whole_idx)) - 1
    search = _Search(_reduce(options), full, [lines[i].qty for i in split_idx], max_nodes)
    chosen, optimal = search.run()
    return _allocate(lines, chosen, whole_idx, split_idx, avail_by_id), optimal


def _reduce(options: list[_Shop]) -> list[_Shop]:
    """Drop dominated shops and order the rest by (ready, load, id).

    A shop is dominated when another finishes a superset of its lines, is no slower, has no more
    load, and is strictly less loaded or has a smaller id: swapping it for the other (or just
    dropping it if the other is already there) never worsens any tie-break, so some optimal plan
    avoids it. Shops that help with split lines are never dominated: their quantities add up, so
    dropping one can lose coverage. The relation is a strict order and every dominator comes
    earlier in (ready, load, id) order, so one pass comparing each shop with the shops kept before
    it is enough. Shops with identical coverage (the common case: many shops selling milk) are
    settled first in O(n log n).
    """
    groups: dict[int, list[_Shop]] = {}
    survivors: list[_Shop] = []
    for opt in options:
        if any(opt.split):
            survivors.append(opt)
        else:
            groups.setdefault(opt.whole, []).append(opt)
    for group in groups.values():
        group.sort(key=lambda o: o.rank)
        min_load: int | None = None
        min_id_by_load: dict[int, str] = {}
        for opt in group:
            load, shop_id = opt.shop.load, opt.shop.shop_id
            earlier_id = min_id_by_load.get(load)
            if not (
                (min_load is not None and min_load < load)
                or (earlier_id is not None and earlier_id < shop_id)
            ):
                survivors.append(opt)
            min_load = load if min_load is None else min(min_load, load)
            min_id_by_load[load] = shop_id if earlier_id is None else min(earlier_id, shop_id)
    survivors.sort(key=lambda o: o.rank)
    kept: list[_Shop] = []
    for opt in survivors:
        if not any(opt.dominated_by(other) for other in kept):
            kept.append(opt)
    return kept


class _CapReached(Exception):
    pass


class _Search:
    """Exact minimum set cover with lexicographic tie-breaks, by branch and bound.

    Shops are indexed by (ready, load, id). A node picks the unfinished line with the fewest
    allowed shops and branches on each of them in index order; branch i excludes the shops of
    branches < i, so every shop set is visited at most once. Pruning: a node whose bound
    (shops so far + 1, max ready so far, load so far) is already worse than the best plan is cut,
    and once the size bound reaches the best size only shops no slower than the best's slowest
    stay allowed. The greedy cover seeds the best plan, so pruning bites from the first node.

    Complexity: O(sum over k <= K of C(m, k)) nodes in the worst case (m shops after dominance
    reduction, K the optimal size). In practice pinned or rare lines have few shops and branch
    first: with 200 candidates, orders of up to ten lines take tens to hundreds of nodes, twenty
    lines a few thousand; fifty random lines can reach the cap. Fallback: after `max_nodes` nodes
    the search stops and returns the best plan found so far (at worst the greedy one, which is a
    valid cover with no redundant shop), flagged `optimal=False`.
    """

    def __init__(self, shops: list[_Shop], whole_full: int, split_need: list[int], cap: int):
        self.shops = shops
        self.whole_full = whole_full
        self.split_need = split_need
        self.cap = cap
        self.nodes = 0
        # For each line, the bitmask of shops that can finish it (whole) or help (split).
        self.whole_shops = [
            sum(1 << i for i, s in enumerate(shops) if s.whole >> b & 1)
            for b in range(whole_full.bit_length())
        ]
        self.split_shops = [
            sum(1 << i for i, s in enumerate(shops) if s.split[j] > 0) for j in range(len(split_need))
        ]
        self.readies = [s.shop.ready_and_travel_minutes for s in shops]  # ascending
        # Most lines one shop can finish or help: a lower bound on the shops still needed.
        self.max_gain = max(s.whole.bit_count() + sum(a > 0 for a in s.split) for s in shops)
        self.best: list[int] = []
        self.best_cost: Cost | None = None

    def run(self) -> tuple[list[CandidateShop], bool]:
        self._consider(self._greedy())
        optimal = True
        try:
            start = (0, (0,) * len(self.split_need))
            self._dfs([], start, (1 << len(self.shops)) - 1, float("-inf"), 0)
        except _CapReached:
            optimal = False
        return [self.shops[i].shop for i in self.best], optimal

    def _add(self, state: tuple[int, tuple[int, ...]], i: int) -> tuple[int, tuple[int, ...]]:
        covered, sums = state
        shop = self.shops[i]
        return covered | shop.whole, tuple(x + y for x, y in zip(sums, shop.split, strict=True))

    def _done(self, state: tuple[int, tuple[int, ...]]) -> bool:
        covered, sums = state
        return covered == self.whole_full and all(s >= n for s, n in zip(sums, self.split_need, strict=True))

    def _cost(self, chosen: list[int]) -> Cost:
        picked = [self.shops[i].shop for i in chosen]
        return (
            len(picked),
            max(s.ready_and_travel_minutes for s in picked),
            sum(s.load for s in picked),
            tuple(sorted(s.shop_id for s in picked)),
        )

    def _consider(self, chosen: list[int]) -> None:
        cost = self._cost(chosen)
        if self.best_cost is None or cost < self.best_cost:
            self.best, self.best_cost = list(chosen), cost

    def _greedy(self) -> list[int]:
        """Repeatedly take the shop that finishes the most lines; then drop redundant shops."""
        chosen: list[int] = []
        state = (0, (0,) * len(self.split_need))
        while not self._done(state):
            covered, sums = state
            best, best_gain = -1, 0
            for i, shop in enumerate(self.shops):  # strict > keeps the fastest of equal gains
                if i in chosen:
                    continue
                helped = sum(
                    1 for s, n, a in zip(sums, self.split_need, shop.split, strict=True) if s < n and a > 0
                )
                gain = (shop.whole & ~covered).bit_count() + helped
                if gain > best_gain:
                    best, best_gain = i, gain
            assert best >= 0, "greedy cover stuck on a line the candidates cannot cover"
            chosen.append(best)
            state = self._add(state, best)
        for i in sorted(chosen, reverse=True):  # slowest first
            rest = [j for j in chosen if j != i]
            if self._done(self._state(rest)):
                chosen = rest
        return chosen

    def _state(self, chosen: list[int]) -> tuple[int, tuple[int, ...]]:
        state = (0, (0,) * len(self.split_need))
        for i in chosen:
            state = self._add(state, i)
        return state

    def _dfs(
        self,
        chosen: list[int],
        state: tuple[int, tuple[int, ...]],
        allowed: int,
        max_ready: float,
        load: int,
    ) -> None:
        self.nodes += 1
        if self.nodes > self.cap:
            raise _CapReached
        if self._done(state):
            self._consider(chosen)
            return
        assert self.best_cost is not None  # seeded by the greedy plan
        best_k, best_ready, best_load, _ = self.best_cost
        covered, sums = state
        unfinished = (self.whole_full & ~covered).bit_count() + sum(
            s < n for s, n in zip(sums, self.split_need, strict=True)
        )
        at_least = len(chosen) + -(-unfinished // self.max_gain)
        if (at_least, max_ready, load) > (best_k, best_ready, best_load):
            return
        if at_least == best_k:  # only plans of the best size remain: no shop slower than its
            allowed &= (1 << bisect_right(self.readies, best_ready)) - 1
        branch = self._branch_mask(state, allowed)
        if branch is None:
            return
        for i in _bits(branch):
            shop = self.shops[i].shop
            allowed &= ~(1 << i)  # later siblings exclude this shop
            self._dfs(
                [*chosen, i],
                self._add(state, i),
                allowed,
                max(max_ready, shop.ready_and_travel_minutes),
                load + shop.load,
            )

    def _branch_mask(self, state: tuple[int, tuple[int, ...]], allowed: int) -> int | None:
        """Allowed shops of the most constrained unfinished line; None if a line is hopeless."""
        covered, sums = state
        best: int | None = None
        for b in _bits(self.whole_full & ~covered):
            mask = self.whole_shops[b] & allowed
            if best is None or mask.bit_count() < best.bit_count():
                best = mask
        for j, (have, need) in enumerate(zip(sums, self.split_need, strict=True)):
            if have >= need:
                continue
            mask = self.split_shops[j] & allowed
            if have + sum(self.shops[i].split[j] for i in _bits(mask)) < need:
                return None
            if best is None or mask.bit_count() < best.bit_count():
                best = mask
        return best or None


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


# --- allocation ---------------------------------------------------------------------------------


def _allocate(
    lines: Sequence[RequestedItem],
    chosen: list[CandidateShop],
    whole_idx: list[int],
    split_idx: list[int],
    avail: Mapping[str, list[int]],
) -> tuple[PlannedJob, ...]:
    """Give each whole line to the fastest chosen shop that has it; split the rest greedily."""
    order = sorted(chosen, key=lambda s: (s.ready_and_travel_minutes, s.load, s.shop_id))
    per_shop: dict[str, list[tuple[int, int]]] = {s.shop_id: [] for s in order}
    for i in whole_idx:
        shop = next(s for s in order if avail[s.shop_id][i] >= lines[i].qty)
        per_shop[shop.shop_id].append((i, lines[i].qty))
    for i in split_idx:
        remaining = lines[i].qty
        for shop in sorted(order, key=lambda s: -avail[s.shop_id][i]):  # stable: fastest first
            take = min(remaining, avail[shop.shop_id][i])
            if take > 0:
                per_shop[shop.shop_id].append((i, take))
                remaining -= take
        assert remaining == 0, "search returned a set that does not cover a split line"
    by_id = {s.shop_id: s for s in chosen}
    jobs = []
    for shop_id, parts in sorted(per_shop.items()):
        if not parts:  # a shop left without lines only happens in the capped fallback
            continue
        qty_by_sku: dict[str, int] = {}  # a pinned and an unpinned line of one SKU become one
        for i, qty in sorted(parts):
            qty_by_sku[lines[i].sku] = qty_by_sku.get(lines[i].sku, 0) + qty
        stock = by_id[shop_id].stock
        planned = (PlannedLine(sku, q, stock[sku].price_cents) for sku, q in qty_by_sku.items())
        jobs.append(PlannedJob(shop_id, tuple(planned)))
    return tuple(jobs)
