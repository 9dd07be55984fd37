"""Settings, read once from the environment (every variable is documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from dispatch.errors import StartupError


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StartupError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise StartupError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StartupError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:  # also rejects NaN
        raise StartupError(f"{name} must be at least {minimum}, got {raw}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise StartupError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise StartupError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _datetime(env: Mapping[str, str], name: str) -> datetime | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise StartupError(f"{name} must be an ISO 8601 time, got {raw!r}") from None
    if value.utcoffset() is None:
        raise StartupError(f"{name} needs a UTC offset, got {raw!r}")
    return value


POLICIES = ("ours", "nearest-idle")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=lambda: Path(".dispatch"))
    database_url: str | None = None
    redis_url: str | None = None
    secret: str | None = None
    demo: bool = True
    log_level: str = "INFO"
    log_format: str = "auto"  # auto: JSON lines unless stdout is a terminal
    max_body_bytes: int = 1 << 20
    db_pool_min: int = 2
    db_pool_max: int = 10
    shutdown_grace_s: float = 10.0
    # How long `serve` waits for PostgreSQL and Redis at start-up before giving up.
    startup_timeout_s: float = 60.0
    # Every this many seconds each node compares its connections with the outbox and backfills any gap.
    catchup_s: float = 2.0
    token_ttl_s: int = 24 * 3600
    # The longest token lifetime accepted (exp - iat, and exp - now), and the longest `dispatch token` issues.
    token_max_ttl_s: int = 30 * 24 * 3600
    # Hostile clients: a request's headers must arrive within header_timeout_s of its first byte (or of the
    # connection), its body within body_timeout_s; past max_connections new connections get a 503.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 10_000
    h3_resolution: int = 9
    zone_max_area_km2: float = 50.0
    zone_max_vertices: int = 2000
    # Cells of one zone's cover (bounds the CPU a zone change costs), and the processes covering zones.
    zone_max_cells: int = 10_000
    zone_workers: int = 1
    zone_queue: int = 8  # zone changes waiting for a worker beyond the running ones; more get 503
    speed_m_per_min: float = 250.0
    detour_factor: float = 1.3
    offer_timeout_s: float = 45.0
    timer_poll_s: float = 0.5
    run_timers: bool = True
    clock_speed: float = 1.0
    clock_start: datetime | None = None
    clock_epoch: float | None = None
    pickup_walk_m: float = 1500.0
    max_order_lines: int = 50
    max_line_qty: int = 99
    max_candidate_shops: int = 30
    # --- couriers (issue 5) ---
    courier_stale_s: float = 30.0
    dispatch_round_s: float = 5.0
    courier_auto_accept: bool = True
    route_offer_s: float = 30.0
    proximity_m: float = 30.0
    location_skew_s: float = 5.0
    courier_max_speed_m_s: float = 40.0
    split_slack_minutes: float = 10.0
    # Matching cost = delivery minute + this x minutes driven empty to the first shop (see README, Replay).
    empty_leg_weight: float = 0.5
    # Work whose best courier would wait longer than this at the shops is held for a later round.
    defer_wait_minutes: float = 0.0
    pickup_service_minutes: float = 4.0
    dropoff_service_minutes: float = 4.0
    # --- replay (issue 6) ---
    policy: str = "ours"  # the dispatch policy: "ours" (bundling, optimal matching) or "nearest-idle"
    travel_round_up: bool = False  # travel minutes rounded up to whole minutes (as the replay's instances)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            host=env.get("DISPATCH_HOST") or defaults.host,
            port=_int(env, "DISPATCH_PORT", defaults.port, 0),
            data_dir=Path(env.get("DISPATCH_DATA_DIR") or defaults.data_dir),
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            secret=env.get("DISPATCH_SECRET") or None,
            demo=_bool(env, "DISPATCH_DEMO", defaults.demo),
            log_level=(env.get("DISPATCH_LOG_LEVEL") or defaults.log_level).upper(),
            log_format=env.get("DISPATCH_LOG_FORMAT") or defaults.log_format,
            max_body_bytes=_int(env, "DISPATCH_MAX_BODY_BYTES", defaults.max_body_bytes, 1024),
            db_pool_min=_int(env, "DISPATCH_DB_POOL_MIN", defaults.db_pool_min, 1),
            db_pool_max=_int(env, "DISPATCH_DB_POOL_MAX", defaults.db_pool_max, 1),
            shutdown_grace_s=_float(env, "DISPATCH_SHUTDOWN_GRACE", defaults.shutdown_grace_s),
            startup_timeout_s=_float(env, "DISPATCH_STARTUP_TIMEOUT", defaults.startup_timeout_s, 1.0),
            catchup_s=_float(env, "DISPATCH_CATCHUP_S", defaults.catchup_s, 0.1),
            token_ttl_s=_int(env, "DISPATCH_TOKEN_TTL", defaults.token_ttl_s, 1),
            token_max_ttl_s=_int(env, "DISPATCH_TOKEN_MAX_TTL", defaults.token_max_ttl_s, 1),
            header_timeout_s=_float(env, "DISPATCH_HEADER_TIMEOUT", defaults.header_timeout_s, 0.1),
            body_timeout_s=_float(env, "DISPATCH_BODY_TIMEOUT", defaults.body_timeout_s, 0.1),
            max_connections=_int(env, "DISPATCH_MAX_CONNECTIONS", defaults.max_connections, 1),
            h3_resolution=_int(env, "DISPATCH_H3_RESOLUTION", defaults.h3_resolution, 0),
            zone_max_area_km2=_float(env, "DISPATCH_ZONE_MAX_AREA_KM2", defaults.zone_max_area_km2),
            zone_max_vertices=_int(env, "DISPATCH_ZONE_MAX_VERTICES", defaults.zone_max_vertices, 4),
            zone_max_cells=_int(env, "DISPATCH_ZONE_MAX_CELLS", defaults.zone_max_cells, 1),
            zone_workers=_int(env, "DISPATCH_ZONE_WORKERS", defaults.zone_workers, 1),
            zone_queue=_int(env, "DISPATCH_ZONE_QUEUE", defaults.zone_queue, 0),
            speed_m_per_min=_float(env, "DISPATCH_SPEED_M_PER_MIN", defaults.speed_m_per_min, 1.0),
            detour_factor=_float(env, "DISPATCH_DETOUR_FACTOR", defaults.detour_factor, 1.0),
            offer_timeout_s=_float(env, "DISPATCH_OFFER_TIMEOUT", defaults.offer_timeout_s, 1.0),
            timer_poll_s=_float(env, "DISPATCH_TIMER_POLL", defaults.timer_poll_s, 0.01),
            pickup_walk_m=_float(env, "DISPATCH_PICKUP_WALK_M", defaults.pickup_walk_m, 0.0),
            max_order_lines=_int(env, "DISPATCH_MAX_ORDER_LINES", defaults.max_order_lines, 1),
            max_line_qty=_int(env, "DISPATCH_MAX_LINE_QTY", defaults.max_line_qty, 1),
            max_candidate_shops=_int(env, "DISPATCH_MAX_CANDIDATE_SHOPS", defaults.max_candidate_shops, 1),
            clock_speed=_float(env, "DISPATCH_CLOCK_SPEED", defaults.clock_speed, 1e-6),
            clock_start=_datetime(env, "DISPATCH_CLOCK_START"),
            clock_epoch=_float(env, "DISPATCH_CLOCK_EPOCH", 0.0) or None,
            # --- couriers (issue 5) ---
            courier_stale_s=_float(env, "DISPATCH_COURIER_STALE_S", defaults.courier_stale_s, 1.0),
            dispatch_round_s=_float(env, "DISPATCH_ROUND_S", defaults.dispatch_round_s, 0.05),
            courier_auto_accept=_bool(env, "DISPATCH_COURIER_AUTO_ACCEPT", defaults.courier_auto_accept),
            route_offer_s=_float(env, "DISPATCH_ROUTE_OFFER_S", defaults.route_offer_s, 1.0),
            proximity_m=_float(env, "DISPATCH_PROXIMITY_M", defaults.proximity_m, 1.0),
            location_skew_s=_float(env, "DISPATCH_LOCATION_SKEW_S", defaults.location_skew_s),
            courier_max_speed_m_s=_float(
                env, "DISPATCH_COURIER_MAX_SPEED_M_S", defaults.courier_max_speed_m_s, 1.0
            ),
            split_slack_minutes=_float(env, "DISPATCH_SPLIT_SLACK_MIN", defaults.split_slack_minutes),
            empty_leg_weight=_float(env, "DISPATCH_EMPTY_LEG_WEIGHT", defaults.empty_leg_weight),
            defer_wait_minutes=_float(env, "DISPATCH_DEFER_WAIT_MIN", defaults.defer_wait_minutes),
            pickup_service_minutes=_float(
                env, "DISPATCH_PICKUP_SERVICE_MIN", defaults.pickup_service_minutes
            ),
            dropoff_service_minutes=_float(
                env, "DISPATCH_DROPOFF_SERVICE_MIN", defaults.dropoff_service_minutes
            ),
            policy=_choice(env, "DISPATCH_POLICY", defaults.policy, POLICIES),
            travel_round_up=_bool(env, "DISPATCH_TRAVEL_ROUND_UP", defaults.travel_round_up),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
