"""The simulated apps' own behaviour, apart from a server: what they do when, on a fast shared clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp

from dispatch.clock import ScaledClock
from dispatch.replay.apps import Api, CourierApp, DayClock, LatLng, ReadyBoard


class _Line:
    """A world of two places one minute apart."""

    def place_of(self, stop: dict[str, Any]) -> str:
        return "door" if stop["kind"] == "dropoff" else "shop"

    def leg_minutes(self, origin: str, destination: str) -> float:
        return 0.0 if origin == destination else 1.0

    def along(self, origin: str, destination: str, fraction: float) -> LatLng:
        return (45.0, 4.0 + 0.01 * fraction)


def test_the_courier_has_the_residents_code_when_the_hand_over_is_due() -> None:
    """The code is asked for on arrival, so the request's round trip does not delay the hand-over (it did,
    once per drop-off, after the first half of the service)."""

    async def run() -> tuple[float, float, float]:
        clock = ScaledClock(datetime(2026, 1, 5, tzinfo=UTC), 6000)  # 2 minutes in 20 ms
        day = DayClock(clock, clock.now())
        asked: list[float] = []
        sent: list[tuple[str, dict[str, Any]]] = []

        async def code_for(order_id: str) -> str:
            asked.append(day.minute())
            return "1234"

        async with aiohttp.ClientSession() as session:
            app = CourierApp(
                "cou_1",
                Api(session, "http://127.0.0.1:9"),
                "token",
                day,
                _Line(),
                start_place="door",
                on_minute=0,
                off_minute=60,
                board=ReadyBoard(),
                code_for=code_for,
                pickup_service=4,
                dropoff_service=4,
                ping_every=1,
            )
            stop = {"id": "stp_1", "kind": "dropoff", "order_id": "ord_1", "state": "arrived", "job_ids": []}
            route = {"id": "rte_1", "state": "active", "stops": [stop]}
            app._merge_route(route)

            async def command(kind: str, **body: Any) -> Any:
                sent.append((kind, body))
                return {**route, "stops": [{**stop, "state": "completed"}]}

            app.socket.command = command  # type: ignore[method-assign]
            arrived = day.minute()
            await app._drop_off("stp_1", arrived)
        assert sent == [("stop.completed", {"stop_id": "stp_1", "code": "1234"})]
        return arrived, asked[0], app.log.deliveries[0][0]

    arrived, asked, delivered = asyncio.run(run())
    assert asked < arrived + 2  # before the hand-over is due: at the door
    assert delivered >= arrived + 2
