"""Candidate shops for an order: near the drop-off (zone index), open, with stock, with their load."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from dispatch.core.matching import CandidateShop, StockLine
from dispatch.db import Conn
from dispatch.services.context import Services
from dispatch.services.hours import is_open_at

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
) -> tuple[list[CandidateShop], dict[str, ShopInfo]]:
    if not shop_ids or not skus:
        return [], {}
    # One round trip: each shop with its load and its stock of the order's SKUs.
    shops = await conn.fetch(
        """SELECT s.id, s.lat, s.lng, s.opening_hours, s.prep_minutes, s.capacity, s.auto_accept,
                  s.updated_at,
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
    candidates: list[CandidateShop] = []
    info: dict[str, ShopInfo] = {}
    for s in shops:
        if s["id"] not in stock:
            continue
        travel = 0.0 if fulfilment == "pickup" else svc.travel.minutes(s["lat"], s["lng"], lat, lng)
        is_open = s["load"] < s["capacity"] and is_open_at(s["id"], s["updated_at"], s["opening_hours"], at)
        candidates.append(
            CandidateShop(s["id"], stock[s["id"]], s["prep_minutes"] + travel, s["load"], is_open)
        )
        info[s["id"]] = ShopInfo(s["id"], s["lat"], s["lng"], s["prep_minutes"], s["auto_accept"])
    return candidates, info
