"""Candidate shops for an order: near the drop-off (zone index), open, with stock, with their load."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from dispatch.core.matching import CandidateShop, StockLine
from dispatch.db import Conn
from dispatch.services.context import Services
from dispatch.services.hours import is_open_at, open_minute

# Jobs that occupy a shop's capacity.
OPEN_JOB_STATES = ["offered", "accepted"]


@dataclass(frozen=True)
class ShopInfo:
    shop_id: str
    lat: float
    lng: float
    prep_minutes: int
    auto_accept: bool


def nearby_shop_ids(
    svc: Services, lat: float, lng: float, fulfilment: str, keep: Collection[str] = ()
) -> list[str]:
    """The shops that may take the order: delivering there (or, for pick-up, within walking distance),
    the nearest `max_candidate_shops` of them, plus any shop the resident picked items from (`keep`).

    In a dense city dozens of zones overlap a door; the nearest ones are the fast ones, and looking at
    all of them would cost every order time for nothing."""
    index = svc.zones.index
    limit = svc.settings.max_candidate_shops
    if fulfilment == "pickup":
        # The resident walks to the shop, so distance matters, not the shop's delivery zone.
        nearest = [s for s, _ in index.nearest_shops(lat, lng, limit, svc.settings.pickup_walk_m)]
        return nearest + [s for s in keep if s not in nearest and s in index]
    delivering = index.shops_delivering_to(lat, lng)
    if len(delivering) <= limit:
        return delivering
    nearest = index.nearest_of(lat, lng, delivering, limit)
    return nearest + [s for s in keep if s in delivering and s not in nearest]


async def load_candidates(
    conn: Conn,
    svc: Services,
    *,
    shop_ids: Collection[str],
    lat: float,
    lng: float,
    fulfilment: str,
    skus: Collection[str],
    at: datetime,
) -> tuple[list[CandidateShop], Mapping[str, ShopInfo]]:
    if not shop_ids or not skus:
        return [], {}
    # One round trip: each shop with its load and its stock of the order's SKUs. The hours come as text,
    # parsed only when they change: decoding a few dozen jsonb documents per order cost more
    # than the rest of the row.
    shops = await conn.fetch(
        """SELECT s.id, s.lat, s.lng, s.opening_hours::text AS hours, s.prep_minutes, s.capacity,
                  s.auto_accept,
                  (SELECT count(*) FROM jobs j WHERE j.shop_id = s.id AND j.state = ANY($2)) AS load,
                  ARRAY(SELECT ROW(c.sku, c.stock, c.price_cents, c.preorder_only, c.lead_minutes)
                        FROM catalogue_items c
                        WHERE c.shop_id = s.id AND c.sku = ANY($3) AND c.stock > 0) AS items
           FROM shops s WHERE s.id = ANY($1) AND s.active""",
        list(shop_ids),
        OPEN_JOB_STATES,
        list(skus),
    )
    stock: dict[str, dict[str, StockLine]] = {
        s["id"]: {sku: StockLine(qty, price, pre, lead) for sku, qty, price, pre, lead in s["items"]}
        for s in shops
        if s["items"]
    }
    stocked = [s for s in shops if s["id"] in stock]
    if fulfilment == "pickup":
        travel = [0.0] * len(stocked)
    else:  # one vectorised distance for all of them: a door has a few dozen candidates
        lats = np.fromiter((s["lat"] for s in stocked), dtype=np.float64, count=len(stocked))
        lngs = np.fromiter((s["lng"] for s in stocked), dtype=np.float64, count=len(stocked))
        travel = svc.travel.minutes_array(lat, lng, lats, lngs).tolist()
    minute = open_minute(at)
    candidates = [
        CandidateShop(
            s["id"],
            stock[s["id"]],
            s["prep_minutes"] + minutes,
            s["load"],
            s["load"] < s["capacity"] and is_open_at(s["id"], s["hours"], at, minute),
        )
        for s, minutes in zip(stocked, travel, strict=True)
    ]
    return candidates, ShopInfos({s["id"]: s for s in stocked})


class ShopInfos(Mapping[str, ShopInfo]):
    """The candidates' ShopInfo by id, each made when first asked for: an order needs those of the one or
    two shops it is split over, not of the dozens it looked at."""

    def __init__(self, rows: dict[str, Any]) -> None:
        self._rows = rows
        self._made: dict[str, ShopInfo] = {}

    def __getitem__(self, shop_id: str) -> ShopInfo:
        info = self._made.get(shop_id)
        if info is None:
            s = self._rows[shop_id]
            info = self._made[shop_id] = ShopInfo(
                s["id"], s["lat"], s["lng"], s["prep_minutes"], s["auto_accept"]
            )
        return info

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)
