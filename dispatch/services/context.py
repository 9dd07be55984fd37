"""What services need from the running node, passed explicitly (no globals)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
from redis.asyncio import Redis

from dispatch.clock import Clock
from dispatch.config import Settings
from dispatch.metrics import Metrics
from dispatch.outbox import Event
from dispatch.services.locations import LiveLocations
from dispatch.services.ops_feed import OpsFeed
from dispatch.services.refreshed import Refreshed
from dispatch.services.zone_directory import ZoneDirectory
from dispatch.workers import ProcessWorkers
from geo import TravelModel

if TYPE_CHECKING:
    from dispatch.services.admission import Snapshot


class Publisher(Protocol):
    """Where committed events go for live delivery (the node's websocket hub). A failure must not raise:
    the outbox already holds the events."""

    async def publish(self, events: Sequence[tuple[str, dict[str, Any]]]) -> bool: ...


@dataclass
class Services:
    pool: asyncpg.Pool
    clock: Clock
    settings: Settings
    zones: ZoneDirectory
    hub: Publisher
    live: LiveLocations
    metrics: Metrics
    zone_workers: ProcessWorkers
    ops: OpsFeed = field(default_factory=OpsFeed)
    admission: Refreshed[Snapshot] = field(default_factory=Refreshed)  # the check at placement's picture
    travel: TravelModel = field(init=False)

    def __post_init__(self) -> None:
        self.travel = TravelModel(
            self.settings.speed_m_per_min, self.settings.detour_factor, round_up=self.settings.travel_round_up
        )

    @property
    def redis(self) -> Redis:
        """The node's Redis client (shared with the live locations)."""
        return self.live.redis

    async def publish(self, events: Sequence[Event]) -> None:
        """After commit: the fast path to every node. A failure loses nothing (clients resume)."""
        for e in events:
            self.metrics.events.labels(e.type).inc()
        self.ops.note(events)
        await self.hub.publish([(e.recipient, e.to_message()) for e in events])
