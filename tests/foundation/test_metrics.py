"""/metrics shows the day: orders, offers and answers, rounds, couriers, websocket commands, pings, events,
retries, the loop's lag and the process."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from dispatch.clock import ManualClock
from dispatch.logs import new_request_id
from dispatch.metrics import Metrics
from tests.couriers.helpers import (
    DOOR,
    AuthFn,
    Client,
    add_resident,
    add_shop,
    dispatch,
    place,
    ready_courier,
)
from tests.orders.helpers import recv


async def _scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get("/metrics")
    assert r.status == 200
    found = {}
    for family in text_string_to_metric_families(await r.text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_the_day(client: Client, auth: AuthFn, clock: ManualClock) -> None:
    admin = auth("admin")
    shop = await add_shop(client, admin, {"milk": 5})
    resident = await add_resident(client, admin)
    courier = await ready_courier(client, auth, clock, DOOR, capacity=10)
    async with client.ws_connect("/v1/ws", headers=auth("shop", shop)) as ws:
        await recv(ws)
        status, order = await place(client, auth("resident", resident), [{"sku": "milk", "qty": 1}])
        assert status == 201
        status, refused = await place(client, auth("resident", resident), [{"sku": "caviar", "qty": 1}])
        assert status == 422 and refused["error"]["code"] == "unknown_sku"
        clock.advance(12)  # the shop takes 12 s to answer
        (job,) = order["jobs"]
        await ws.send_json({"type": "job.accept", "id": 1, "job_id": job["id"], "prep_minutes": 5})
        await ws.send_json({"type": "job.accept", "id": 2, "job_id": job["id"], "prep_minutes": 5})
        await ws.send_json({"type": "no.such.thing", "id": 3})
        replies: dict[int, dict[str, Any]] = {}
        while len(replies) < 3:
            message = await recv(ws)
            if message["type"] == "reply":
                replies[message["id"]] = message
    report = await dispatch(client, clock)
    assert report.routes == 1 and report.placed == 1
    m = await _scrape(client)
    assert _value(m, "dispatch_orders_total", outcome="placed") == 1
    assert _value(m, "dispatch_orders_total", outcome="unknown_sku") == 1
    assert _value(m, "dispatch_events_total", type="job.offered") == 1
    assert _value(m, "dispatch_events_total", type="job.accepted") == 1
    assert _value(m, "dispatch_events_total", type="route.offered") == 1
    assert _value(m, "dispatch_offer_answer_seconds_count", answer="accepted") == 1
    assert _value(m, "dispatch_offer_answer_seconds_sum", answer="accepted") == 12
    assert _value(m, "dispatch_ws_commands_total", type="job.accept", result="ok") == 1
    assert _value(m, "dispatch_ws_commands_total", type="job.accept", result="already_accepted") == 1
    assert _value(m, "dispatch_ws_commands_total", type="other", result="unknown_type") == 1
    assert _value(m, "dispatch_round_seconds_count") >= 1
    assert _value(m, "dispatch_round_jobs_total", outcome="placed") == 1
    assert _value(m, "dispatch_location_pings_total", outcome="stored") == 1
    assert _value(m, "dispatch_couriers", state="on_shift") == 1
    assert _value(m, "dispatch_couriers", state="busy") == 1
    assert _value(m, "dispatch_couriers", state="stale") == 0
    assert _value(m, "dispatch_realtime_events_total", outcome="published") >= 3
    assert ("dispatch_event_loop_lag_seconds", ()) in m
    assert _value(m, "process_resident_memory_bytes") > 0 and _value(m, "process_open_fds") > 0
    assert courier  # on its route
    text = await (await client.get("/metrics")).text()
    assert re.search(r"^# HELP dispatch_transaction_retries_total ", text, re.M)


def test_a_labelled_child_is_looked_up_once_and_still_counts() -> None:
    metrics = Metrics()
    child = metrics.pings.labels("stored")
    assert metrics.pings.labels("stored") is child
    child.inc()
    metrics.pings.labels("stored").inc(2)
    metrics.ws_commands.labels("ping", "ok").inc()
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    pings = {s.labels["outcome"]: s.value for s in families["dispatch_location_pings"].samples}
    assert pings["stored"] == 3
    commands = families["dispatch_ws_commands"].samples
    assert [(s.labels, s.value) for s in commands if s.name.endswith("_total")] == [
        ({"type": "ping", "result": "ok"}, 1)
    ]


def test_request_ids_are_unique_and_look_like_a_clients_own() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{16}", rid) for rid in ids)
