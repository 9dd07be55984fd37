"""What operators' consoles hear live: hints of what changed (orders, couriers, shops), gathered from the
events this node commits and sent at most every `FLUSH_S` as one volatile `ops.changed` message.

A hint is not a record: a console reads the things back over HTTP, and after a reconnect reads everything
again. So a lost hint costs at most a late refresh, and the cost on the write path is a few set additions
per committed transaction, whatever the traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dispatch.outbox import Event

FLUSH_S = 0.5
RECIPIENT = "ops"  # every operator's websocket follows this stream (no resident, shop or courier id is it)
MAX_IDS = 500  # per kind in one hint; beyond it a console reads everything again anyway


class OpsFeed:
    def __init__(self) -> None:
        self._orders: set[str] = set()
        self._couriers: set[str] = set()
        self._shops: set[str] = set()
        self._events = 0

    def note(self, events: Sequence[Event]) -> None:
        for e in events:
            self._events += 1
            kind = e.type.partition(".")[0]
            if kind == "order":
                order_id = e.data.get("id") or e.data.get("order_id")
                if isinstance(order_id, str):
                    self._orders.add(order_id)
            elif kind == "job":
                self._shops.add(e.recipient)
                self._orders.add(e.data["order_id"])
            elif kind in ("route", "courier"):
                self._couriers.add(e.recipient)

    def take(self) -> dict[str, Any] | None:
        """The hint gathered since the last take (None: nothing happened)."""
        if not self._events:
            return None
        hint = {
            "type": "ops.changed",
            "data": {
                "orders": sorted(self._orders)[:MAX_IDS],
                "couriers": sorted(self._couriers)[:MAX_IDS],
                "shops": sorted(self._shops)[:MAX_IDS],
                "events": self._events,
            },
        }
        self._orders, self._couriers, self._shops, self._events = set(), set(), set(), 0
        return hint
