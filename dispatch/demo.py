"""The demo neighbourhood loaded by `make serve` on an empty database: shops, couriers, residents.

Deterministic (a fixed seed), centred on a real-looking town centre, with catalogues that overlap only
partly, so that some orders split across shops.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from dispatch.clock import SystemClock
from dispatch.config import Settings
from dispatch.db import create_pool
from dispatch.migrate import migrate
from dispatch.services import people, shops, zones
from dispatch.services.hours import ALWAYS_OPEN

CENTRE = (45.7640, 4.8357)  # lat, lng
SEED = 20261123
_DEMO_LOCK = 0x64656D6F  # "demo"

KINDS: dict[str, list[tuple[str, str, int]]] = {
    "corner store": [
        ("milk-1l", "Milk 1 l", 129),
        ("eggs-6", "Eggs, 6", 249),
        ("bread-loaf", "Sliced loaf", 189),
        ("pasta-500g", "Pasta 500 g", 119),
        ("tomato-sauce", "Tomato sauce", 199),
        ("coffee-250g", "Coffee 250 g", 459),
        ("water-6x1.5l", "Water 6 x 1.5 l", 299),
        ("toilet-paper-6", "Toilet paper, 6 rolls", 349),
    ],
    "fruit stand": [
        ("apples-1kg", "Apples 1 kg", 299),
        ("bananas-1kg", "Bananas 1 kg", 199),
        ("tomatoes-1kg", "Tomatoes 1 kg", 349),
        ("lemons-4", "Lemons, 4", 179),
        ("salad", "Salad", 129),
        ("strawberries-500g", "Strawberries 500 g", 449),
    ],
    "bakery": [
        ("baguette", "Baguette", 110),
        ("croissant", "Croissant", 120),
        ("pain-au-chocolat", "Pain au chocolat", 135),
        ("bread-loaf", "Country loaf", 320),
        ("tart-lemon", "Lemon tart", 380),
    ],
    "cheese shop": [
        ("comte-250g", "Comté 250 g", 690),
        ("brie-200g", "Brie 200 g", 450),
        ("eggs-6", "Farm eggs, 6", 320),
        ("milk-1l", "Raw milk 1 l", 180),
    ],
}
# Pre-order-only goods: sourced on demand, so they need a slot far enough ahead.
PREORDER: dict[str, tuple[str, str, int, int]] = {
    "bakery": ("birthday-cake", "Birthday cake", 2800, 24 * 60),
    "cheese shop": ("cheese-platter", "Cheese platter", 3500, 12 * 60),
}
STREET = ("Rue", "Quai", "Place", "Cours", "Montée")
NAMES = (
    "Bellecour",
    "Mercière",
    "des Capucins",
    "Saint-Jean",
    "Terreaux",
    "Croix-Rousse",
    "Guillotière",
    "Brotteaux",
    "Ainay",
    "Perrache",
    "Part-Dieu",
    "Vaise",
)


@dataclass
class DemoSummary:
    shops: list[tuple[str, str]] = field(default_factory=list)  # (id, name)
    couriers: list[str] = field(default_factory=list)
    residents: list[str] = field(default_factory=list)
    already_loaded: bool = False

    def instructions(self, cmd: str = "dispatch token") -> str:
        """How to get a token for each demo role, with `cmd` the token command that works here."""
        if self.already_loaded:
            return "demo data: already present (the database was not empty)"
        lines = [
            f"demo data loaded: {len(self.shops)} shops, {len(self.couriers)} couriers, "
            f"{len(self.residents)} residents around {CENTRE[0]}, {CENTRE[1]}",
            "get a token for each demo role with:",
            f"  {cmd} --role admin --subject ops",
            f"  {cmd} --role shop --subject {self.shops[0][0]}      # {self.shops[0][1]}",
            f"  {cmd} --role courier --subject {self.couriers[0]}",
            f"  {cmd} --role resident --subject {self.residents[0]}",
            "add --link to any of them for a URL that opens that role's app signed in",
        ]
        return "\n".join(lines)


def _offset(lat: float, lng: float, north_m: float, east_m: float) -> tuple[float, float]:
    dlat = north_m / 111_320.0
    dlng = east_m / (111_320.0 * math.cos(math.radians(lat)))
    return lat + dlat, lng + dlng


def _hours(rng: random.Random) -> dict[str, Any]:
    # Most demo shops are open long hours so the demo works whenever it is started.
    if rng.random() < 0.6:
        return ALWAYS_OPEN
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return {
        "tz": "Europe/Paris",
        "weekly": {d: [["07:00", "21:00"]] if d != "sun" else [["08:00", "13:00"]] for d in days},
    }


def _zone(rng: random.Random, lat: float, lng: float) -> dict[str, Any]:
    radius = rng.uniform(1200, 2500)
    if rng.random() < 0.5:
        return {"type": "Circle", "center": [lng, lat], "radius_m": round(radius)}
    ring = []
    for k in range(12):
        angle = 2 * math.pi * k / 12
        r = radius * rng.uniform(0.7, 1.1)
        plat, plng = _offset(lat, lng, r * math.sin(angle), r * math.cos(angle))
        ring.append([round(plng, 6), round(plat, 6)])
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


async def _load(pool: asyncpg.Pool, settings: Settings) -> DemoSummary:
    rng = random.Random(SEED)
    now = SystemClock().now()
    summary = DemoSummary()
    kinds = list(KINDS)
    for n in range(36):
        kind = kinds[n % len(kinds)]
        lat, lng = _offset(*CENTRE, rng.uniform(-2500, 2500), rng.uniform(-2500, 2500))
        name = f"{kind.title()} {rng.choice(STREET)} {rng.choice(NAMES)}"
        zone = zones.prepare(_zone(rng, lat, lng), lat, lng, settings)
        fields = {
            "name": name,
            "lat": lat,
            "lng": lng,
            "opening_hours": _hours(rng),
            "prep_minutes": rng.choice((5, 10, 15, 20)),
            "auto_accept": rng.random() < 0.3,
            "capacity": rng.choice((5, 10, 20)),
        }
        shop = await shops.create(pool, fields, zone, now)
        summary.shops.append((shop["id"], name))
        for sku, item_name, price in KINDS[kind]:
            if rng.random() < 0.85:
                await shops.upsert_item(
                    pool,
                    shop["id"],
                    sku,
                    {
                        "name": item_name,
                        "price_cents": price,
                        "stock": rng.randint(5, 60),
                        "preorder_only": False,
                        "lead_minutes": 0,
                    },
                )
        if kind in PREORDER:
            sku, item_name, price, lead = PREORDER[kind]
            await shops.upsert_item(
                pool,
                shop["id"],
                sku,
                {
                    "name": item_name,
                    "price_cents": price,
                    "stock": 5,
                    "preorder_only": True,
                    "lead_minutes": lead,
                },
            )
    for n in range(12):
        # Room for the largest order the demo day places (3 lines of up to 2): a job no courier can carry
        # would wait for ever (see the README, Couriers).
        c = await people.create(pool, "courier", {"name": f"Courier {n + 1}", "capacity": 10}, now)
        summary.couriers.append(c["id"])
    for n in range(20):
        r = await people.create(pool, "resident", {"name": f"Resident {n + 1}"}, now)
        summary.residents.append(r["id"])
    return summary


async def load_demo(database_url: str, settings: Settings, redis_url: str | None = None) -> DemoSummary:
    pool = await create_pool(database_url, 1, 2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        summary = await _load(pool, settings)
    finally:
        await pool.close()
    if redis_url is not None:
        await zones.announce_reload(redis_url)
    return summary


async def load_demo_if_empty(database_url: str, settings: Settings) -> DemoSummary | None:
    """Load the demo once, even when several replicas start together on one empty database."""
    pool = await create_pool(database_url, 1, 3)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await conn.execute("SELECT pg_advisory_lock($1)", _DEMO_LOCK)
            try:
                if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM shops)"):
                    return None
                return await _load(pool, settings)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _DEMO_LOCK)
    finally:
        await pool.close()
