"""What the operator console reads beyond the listings: an order's timeline (its events, as each recipient
got them), the dispatch rounds, the headline figures, the live routes, and for any app the area the shops
cover and a zone's H3 cells. Reads only: every change goes through the services that own it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from h3.api import basic_int as h3

from dispatch.core.stops import LIVE_ROUTES
from dispatch.db import retried
from dispatch.errors import NotFound
from dispatch.services.context import Services
from dispatch.services.orders import OPEN_STATES as OPEN_ORDERS
from dispatch.services.routes import routes_json

ROLES = {"res": "resident", "shop": "shop", "cou": "courier"}
TIMELINE_MAX = 1000


@retried
async def timeline(svc: Services, order_id: str) -> dict[str, Any]:
    """Every event about the order, oldest first: the resident's (order.*), its shops' (job.*), and its
    couriers' route events while the route held one of its stops. Volatile positions are not stored."""
    order = await svc.pool.fetchrow("SELECT resident_id, created_at FROM orders WHERE id = $1", order_id)
    if order is None:
        raise NotFound(f"no order {order_id}", code="order_not_found")
    shops = await svc.pool.fetch("SELECT DISTINCT shop_id FROM jobs WHERE order_id = $1", order_id)
    couriers = await svc.pool.fetch(
        """SELECT DISTINCT r.courier_id FROM stops s JOIN routes r ON r.id = s.route_id
           WHERE s.order_id = $1 OR s.job_ids && ARRAY(SELECT id FROM jobs WHERE order_id = $1)""",
        order_id,
    )
    recipients = [order["resident_id"], *(r["shop_id"] for r in shops), *(r["courier_id"] for r in couriers)]
    # Each recipient's events are found through (recipient, seq); those before the order cannot be about it.
    rows = await svc.pool.fetch(
        """SELECT recipient, seq, type, payload, created_at FROM events
           WHERE recipient = ANY ($1::text[]) AND created_at >= $2
             AND (payload ->> 'id' = $3 OR payload ->> 'order_id' = $3
                  OR payload @> jsonb_build_object('stops', jsonb_build_array(
                                                      jsonb_build_object('order_id', $3::text))))
           ORDER BY created_at, id LIMIT $4""",
        recipients,
        order["created_at"],
        order_id,
        TIMELINE_MAX,
    )
    return {
        "order_id": order_id,
        "events": [
            {
                "recipient": r["recipient"],
                "role": ROLES[r["recipient"].partition("_")[0]],
                "seq": r["seq"],
                "type": r["type"],
                "at": r["created_at"].isoformat(),
                "data": r["payload"],
            }
            for r in rows
        ],
    }


@retried
async def rounds(svc: Services, limit: int, busy: bool) -> list[dict[str, Any]]:
    """The latest dispatch rounds, newest first (`busy`: only those that had work waiting)."""
    rows = await svc.pool.fetch(
        """SELECT * FROM dispatch_rounds WHERE NOT $1 OR jobs > 0 OR released > 0
           ORDER BY round DESC LIMIT $2""",
        busy,
        limit,
    )
    return [
        {
            "round": r["round"],
            "node": r["node"],
            "at": r["at"].isoformat(),
            "jobs": r["jobs"],
            "couriers": r["couriers"],
            "routes": r["routes"],
            "placed": r["placed"],
            "held": None if r["placed"] is None else r["jobs"] - r["placed"],
            "released": r["released"],
            "seconds": r["seconds"],
        }
        for r in rows
    ]


@retried
async def headline(svc: Services) -> dict[str, Any]:
    now = svc.clock.now()
    hour_ago = now - timedelta(hours=1)
    late = timedelta(minutes=svc.settings.late_after_min)
    row = await svc.pool.fetchrow(
        """SELECT
             (SELECT count(*) FROM orders WHERE created_at >= $1) AS placed,
             (SELECT count(*) FROM orders WHERE state = ANY ($4::text[])) AS in_progress,
             (SELECT count(*) FROM orders WHERE state = ANY ($4::text[])
                AND coalesce(slot_end, created_at) + $3 < $2) AS late_open,
             (SELECT count(*) FROM jobs WHERE state = 'offered') AS job_offers,
             (SELECT count(*) FROM routes WHERE state = 'offered') AS route_offers""",
        hour_ago,
        now,
        late,
        list(OPEN_ORDERS),
    )
    done = await svc.pool.fetchrow(
        """SELECT count(*) AS n,
                  avg(extract(epoch FROM updated_at - created_at)) / 60 AS mean_min,
                  count(*) FILTER (WHERE updated_at > coalesce(slot_end, created_at) + $2) AS late
           FROM orders WHERE state = 'delivered' AND updated_at >= $1""",
        hour_ago,
        late,
    )
    assert row is not None and done is not None
    mean = done["mean_min"]
    return {
        "at": now.isoformat(),
        "orders_last_hour": row["placed"],
        "delivered_last_hour": done["n"],
        "mean_click_to_door_min": None if mean is None else round(float(mean), 1),
        "late_after_min": svc.settings.late_after_min,
        "late_open": row["late_open"],
        "late_delivered_last_hour": done["late"],
        "open_job_offers": row["job_offers"],
        "open_route_offers": row["route_offers"],
        "orders_in_progress": row["in_progress"],
    }


@retried
async def live_routes(svc: Services, courier_id: str | None) -> list[dict[str, Any]]:
    """Routes offered or under way (one courier's, or everyone's), in the order their couriers run them."""
    rows = await svc.pool.fetch(
        """SELECT id FROM routes WHERE state = ANY ($1::text[]) AND ($2::text IS NULL OR courier_id = $2)
           ORDER BY courier_id, ordinal LIMIT 5000""",
        list(LIVE_ROUTES),
        courier_id,
    )
    ids = [r["id"] for r in rows]
    bodies = await routes_json(svc.pool, ids)
    return [bodies[i] for i in ids]


@retried
async def area(svc: Services) -> dict[str, Any]:
    row = await svc.pool.fetchrow(
        """SELECT min(lat) AS south, min(lng) AS west, max(lat) AS north, max(lng) AS east, count(*) AS n
           FROM shops WHERE active"""
    )
    assert row is not None
    return {
        "south": row["south"],
        "west": row["west"],
        "north": row["north"],
        "east": row["east"],
        "shops": row["n"],
    }


@retried
async def cells(svc: Services, shop_id: str) -> dict[str, Any]:
    """The H3 cells of a shop's zone cover, with their outlines (the index answers "who delivers here" from
    these: interior cells at once, edge cells by an exact test)."""
    row = await svc.pool.fetchrow(
        """SELECT s.id, c.resolution, c.interior, c.edge
           FROM shops s LEFT JOIN shop_covers c ON c.shop_id = s.id WHERE s.id = $1""",
        shop_id,
    )
    if row is None:
        raise NotFound(f"no shop with id {shop_id}", code="shop_not_found")
    found = [(cell, False) for cell in row["interior"] or ()] + [(cell, True) for cell in row["edge"] or ()]
    return {
        "shop_id": shop_id,
        "resolution": row["resolution"],
        "cells": [
            {
                "cell": h3.int_to_str(cell),
                "edge": edge,
                "boundary": [[round(lat, 6), round(lng, 6)] for lat, lng in h3.cell_to_boundary(cell)],
            }
            for cell, edge in found
        ],
    }
