"""Prometheus metrics: one registry per app, so several apps in one process (tests) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dispatch_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dispatch_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.pool_size = Gauge(
            "dispatch_db_pool_connections", "PostgreSQL pool connections", registry=self.registry
        )
        self.pool_idle = Gauge(
            "dispatch_db_pool_idle_connections",
            "idle PostgreSQL connections",
            registry=self.registry,
        )
        self.websockets = Gauge(
            "dispatch_websocket_connections", "open websocket connections", registry=self.registry
        )
        self.loop_lag = Gauge(
            "dispatch_event_loop_lag_seconds",
            "how late the event loop woke a 0.1 s timer: the worst in the last 10 to 20 s",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
