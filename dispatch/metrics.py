"""Prometheus metrics of one node: what an operator watches through the day.

One registry per app, so several apps in one process (tests) never collide. Services count what they decide
(orders, offer answers, rounds, pings); the realtime layer and the transaction retry keep plain counters of
their own (they know nothing of Prometheus), read when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        # --- HTTP and the node ---
        self.requests = Counter(
            "dispatch_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "dispatch_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=registry,
            buckets=_SECONDS,
        )
        self.pool_size = Gauge(
            "dispatch_db_pool_connections", "PostgreSQL pool connections", registry=registry
        )
        self.pool_idle = Gauge(
            "dispatch_db_pool_idle_connections", "idle PostgreSQL connections", registry=registry
        )
        self.websockets = Gauge(
            "dispatch_websocket_connections", "open websocket connections", registry=registry
        )
        # --- the day ---
        self.orders = Counter(
            "dispatch_orders",
            "orders this node was asked to place: `placed`, or the code they were refused with",
            ["outcome"],
            registry=registry,
        )
        self.admission_reads = Counter(
            "dispatch_admission_reads",
            "times this node read the fleet and the waiting work for the check at placement",
            registry=registry,
        )
        self.events = Counter(
            "dispatch_events",
            "events this node committed, by type (job.offered, job.accepted, job.rejected, job.expired, ...)",
            ["type"],
            registry=registry,
        )
        self.offer_answers = Histogram(
            "dispatch_offer_answer_seconds",
            "time from a job's offer to the shop's answer, by answer",
            ["answer"],
            registry=registry,
            buckets=(1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300),
        )
        self.rounds = Histogram(
            "dispatch_round_seconds",
            "dispatch rounds this node ran, by duration",
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
        )
        self.round_jobs = Counter(
            "dispatch_round_jobs",
            "jobs waiting for a courier at this node's rounds: `placed` on a route, or `held` for later",
            ["outcome"],
            registry=registry,
        )
        self.couriers = Gauge(
            "dispatch_couriers",
            "couriers by state: on_shift, busy (with a live route), stale (on shift, silent too long)",
            ["state"],
            registry=registry,
        )
        self.ws_commands = Counter(
            "dispatch_ws_commands",
            "websocket commands by type and result (`ok` or the error code)",
            ["type", "result"],
            registry=registry,
        )
        self.pings = Counter(
            "dispatch_location_pings",
            "courier location pings by outcome (stored, flagged, ignored, refused)",
            ["outcome"],
            registry=registry,
        )
        self.loop_lag = Gauge(
            "dispatch_event_loop_lag_seconds",
            "how late the event loop last woke a timer (a blocked loop shows here)",
            registry=registry,
        )
        self.zone_changes = Gauge(
            "dispatch_zone_changes_pending",
            "zone changes being covered in worker processes or waiting for one (503 beyond the limit)",
            registry=registry,
        )
        for metric in (
            self.requests,
            self.latency,
            self.orders,
            self.events,
            self.offer_answers,
            self.round_jobs,
            self.couriers,
            self.ws_commands,
            self.pings,
        ):
            _remember_children(metric)
        self.fleet_counted_at = -1e9  # loop time the couriers gauge was last refreshed
        self._counters = _Counters()
        registry.register(self._counters)
        ProcessCollector(registry=registry)  # CPU, resident memory, open file descriptors
        for collector in (PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(_Borrowed(collector))

    def count(self, name: str, help: str, read: Callable[[], Mapping[str, float]], label: str) -> None:
        """Expose counters kept elsewhere (`read` gives value by label) as `name`, read at each scrape."""
        self._counters.sources.append((name, help, read, label))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _remember_children(metric: Counter | Gauge | Histogram) -> None:
    """Make `metric.labels(...)` a dictionary lookup after the first call for those values. The library's
    own validates the values and takes a lock every time; it runs for every request, command and ping."""
    children: dict[tuple[Any, ...], Any] = {}
    find = metric.labels

    def labels(*values: Any) -> Any:
        child = children.get(values)
        if child is None:
            child = children[values] = find(*values)
        return child

    metric.labels = labels  # type: ignore[method-assign,assignment]


class _Counters(Collector):
    def __init__(self) -> None:
        self.sources: list[tuple[str, str, Callable[[], Mapping[str, float]], str]] = []

    def collect(self) -> Iterable[CounterMetricFamily]:
        for name, help, read, label in self.sources:
            family = CounterMetricFamily(name, help, labels=[label])
            for value_label, value in sorted(read().items()):
                family.add_metric([value_label], value)
            yield family


class _Borrowed(Collector):
    """A collector of the default registry shown in ours too (they are process-wide)."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self) -> Iterable[object]:  # type: ignore[override]
        return self.inner.collect()
