"""Settings: one definition per setting (its environment variable, type, bounds, default and help), from which
the environment is read, `dispatch config` reports the effective values and the README's table is produced
(`dispatch config --markdown`; a test keeps the README equal to it).

`Settings(...)` is the defaults plus what is passed (tests, benchmarks); `Settings.from_env()` reads the
environment (the CLI), and a bad value is one `StartupError` naming the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, Field, JsonValue, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from dispatch.errors import StartupError

POLICIES = ("ours", "nearest-idle")
SECRETS = frozenset({"secret"})  # masked by `dispatch config`; URLs are shown without their passwords
Level = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


def setting(
    default: Any,
    env: str,
    help: str,
    *,
    flag: str | None = None,
    shown: str | None = None,
    internal: bool = False,
    **bounds: Any,
) -> Any:
    """A setting read from `env`. `flag`: the `serve` option that overrides it; `shown`: the default as the
    README says it (when the value itself would mislead, e.g. a relative path); `internal`: for tests and
    tools, left out of the README."""
    extra: dict[str, JsonValue] = {"flag": flag, "shown": shown, "internal": internal}
    return Field(default, validation_alias=env, description=help, json_schema_extra=extra, **bounds)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, validate_by_name=True, extra="forbid")

    # --- the server ---
    host: str = setting("127.0.0.1", "DISPATCH_HOST", "address to listen on", flag="--host", min_length=1)
    port: int = setting(8080, "DISPATCH_PORT", "port to listen on", flag="--port", ge=0, le=65535)
    data_dir: Path = setting(
        Path(".dispatch"),
        "DISPATCH_DATA_DIR",
        "embedded PostgreSQL and Redis data, the generated secret, the lock",
        flag="--data-dir",
        shown="./.dispatch",
    )
    database_url: str | None = setting(
        None,
        "DATABASE_URL",
        "PostgreSQL URL; when set, no embedded PostgreSQL is started",
        shown="(embedded)",
    )
    redis_url: str | None = setting(
        None,
        "REDIS_URL",
        "Redis URL (`redis://host:6379/0`, `unix:///path`); when set, no embedded Redis",
        shown="(embedded)",
    )
    secret: str | None = setting(
        None,
        "DISPATCH_SECRET",
        "HS256 token signing secret (32+ bytes). **Set it when running several servers.**",
        shown="generated once into `DATA_DIR/secret`",
    )
    workers: int = setting(
        0,
        "DISPATCH_WORKERS",
        "server processes sharing the port, kept running by one parent (0: one per core)",
        flag="--workers",
        ge=0,
        le=256,
    )
    reuse_port: bool = setting(
        False, "DISPATCH_REUSE_PORT", "bind the port with SO_REUSEPORT (a worker of --workers)", internal=True
    )
    supervisor_pid: int | None = setting(
        None,
        "DISPATCH_SUPERVISOR_PID",
        "stop when this parent is gone (a worker of --workers outliving a killed parent would keep the port)",
        internal=True,
        ge=1,
    )
    profile_dir: Path | None = setting(
        None,
        "DISPATCH_PROFILE_DIR",
        "write a cProfile of each server process here when it stops (`serve-PID.prof`; for benchmarks)",
    )
    listen_when_ready: bool = setting(
        False,
        "DISPATCH_LISTEN_WHEN_READY",
        "accept connections only once ready (a restarted worker of --workers)",
        internal=True,
    )
    demo: bool = setting(
        True, "DISPATCH_DEMO", "load the demo neighbourhood into an empty database", flag="--demo/--no-demo"
    )
    log_level: Level = setting(
        "INFO", "DISPATCH_LOG_LEVEL", "log level: DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )
    log_format: Literal["auto", "json", "text"] = setting(
        "auto", "DISPATCH_LOG_FORMAT", "`json` lines, `text`, or `auto` (JSON unless stdout is a terminal)"
    )
    max_body_bytes: int = setting(
        1 << 20, "DISPATCH_MAX_BODY_BYTES", "request body limit (413 above it)", ge=1024
    )
    db_pool_min: int = setting(
        2, "DISPATCH_DB_POOL_MIN", "PostgreSQL connections kept open per process", ge=1
    )
    db_pool_max: int = setting(
        10,
        "DISPATCH_DB_POOL_MAX",
        "most PostgreSQL connections per process (a request waits at most 10 s for a free one, then gets "
        "`503`)",
        ge=1,
    )
    shutdown_grace_s: float = setting(
        10.0, "DISPATCH_SHUTDOWN_GRACE", "seconds to finish in-flight requests on SIGTERM", ge=0
    )
    startup_timeout_s: float = setting(
        60.0,
        "DISPATCH_STARTUP_TIMEOUT",
        "seconds `serve` waits for PostgreSQL and Redis at start-up before giving up",
        ge=1,
    )
    catchup_s: float = setting(
        2.0,
        "DISPATCH_CATCHUP_S",
        "seconds between a node's comparisons of its websocket connections with the outbox",
        ge=0.1,
    )
    token_ttl_s: int = setting(
        24 * 3600, "DISPATCH_TOKEN_TTL", "default lifetime (s) of tokens printed by `dispatch token`", ge=1
    )
    token_max_ttl_s: int = setting(
        30 * 24 * 3600,
        "DISPATCH_TOKEN_MAX_TTL",
        "longest token lifetime (s) accepted (exp - iat, and exp - now) and issued by `dispatch token`",
        ge=1,
    )
    # Hostile clients: a request's headers must arrive within header_timeout_s of its first byte (or of the
    # connection), its body within body_timeout_s; past max_connections new connections get a 503.
    header_timeout_s: float = setting(
        10.0,
        "DISPATCH_HEADER_TIMEOUT",
        "seconds for a request's headers to arrive, from its first byte or the connection (408 past it)",
        ge=0.1,
    )
    body_timeout_s: float = setting(
        30.0, "DISPATCH_BODY_TIMEOUT", "seconds for a request's body to arrive (408 past it)", ge=0.1
    )
    max_connections: int = setting(
        10_000,
        "DISPATCH_MAX_CONNECTIONS",
        "open connections (websockets included) per process; one more gets a 503 and is closed",
        ge=1,
    )
    run_timers: bool = setting(
        True, "DISPATCH_RUN_TIMERS", "this node takes its share of timers and dispatch rounds", internal=True
    )
    strict_views: bool = setting(
        False,
        "DISPATCH_STRICT_VIEWS",
        "check every response and event against its declared model (tests; costs CPU)",
        internal=True,
    )
    # --- zones and travel ---
    h3_resolution: int = setting(9, "DISPATCH_H3_RESOLUTION", "H3 resolution of zone covers", ge=0, le=15)
    zone_max_area_km2: float = setting(
        50.0, "DISPATCH_ZONE_MAX_AREA_KM2", "largest accepted delivery zone (km²)", gt=0
    )
    zone_max_vertices: int = setting(
        2000, "DISPATCH_ZONE_MAX_VERTICES", "most vertices in a delivery zone", ge=4
    )
    zone_max_cells: int = setting(
        10_000,
        "DISPATCH_ZONE_MAX_CELLS",
        "most H3 cells in a zone's cover (bounds the CPU of a zone change; raise it with the resolution)",
        ge=1,
    )
    zone_workers: int = setting(1, "DISPATCH_ZONE_WORKERS", "processes that validate and cover zones", ge=1)
    zone_queue: int = setting(
        8, "DISPATCH_ZONE_QUEUE", "zone changes that may wait for a worker (more: 503)", ge=0
    )
    speed_m_per_min: float = setting(
        250.0, "DISPATCH_SPEED_M_PER_MIN", "travel model: metres a minute (haversine × detour ÷ speed)", ge=1
    )
    detour_factor: float = setting(
        1.3, "DISPATCH_DETOUR_FACTOR", "travel model: streets over straight-line distance", ge=1
    )
    travel_round_up: bool = setting(
        False,
        "DISPATCH_TRAVEL_ROUND_UP",
        "round travel minutes up to whole minutes (replays of instance files)",
    )
    # --- orders and offers ---
    offer_timeout_s: float = setting(
        45.0, "DISPATCH_OFFER_TIMEOUT", "seconds a shop has to answer an offered job", ge=1
    )
    timer_poll_s: float = setting(
        0.5, "DISPATCH_TIMER_POLL", "seconds between a node's looks for due timers (offer deadlines)", ge=0.01
    )
    pickup_walk_m: float = setting(
        1500.0, "DISPATCH_PICKUP_WALK_M", "for pick-up orders, how far a shop may be from the resident", ge=0
    )
    max_order_lines: int = setting(50, "DISPATCH_MAX_ORDER_LINES", "most lines in one order", ge=1)
    max_line_qty: int = setting(99, "DISPATCH_MAX_LINE_QTY", "largest quantity of one line", ge=1)
    max_candidate_shops: int = setting(
        30,
        "DISPATCH_MAX_CANDIDATE_SHOPS",
        "an order looks at the nearest this many shops that deliver there (plus shops it pins items to)",
        ge=1,
    )
    late_after_min: float = setting(
        45.0,
        "DISPATCH_LATE_AFTER_MIN",
        "the console counts an order late when it is not delivered this many minutes after it was placed (a "
        "slotted order: after its slot ends)",
        ge=1,
    )
    # --- couriers and dispatch ---
    courier_stale_s: float = setting(
        30.0,
        "DISPATCH_COURIER_STALE_S",
        "a courier without a location ping for this long is stale: not assignable, its unpicked work is "
        "reassigned",
        ge=1,
    )
    dispatch_round_s: float = setting(
        5.0,
        "DISPATCH_ROUND_S",
        "seconds between dispatch rounds (each round runs on exactly one node)",
        ge=0.05,
    )
    courier_auto_accept: bool = setting(
        True, "DISPATCH_COURIER_AUTO_ACCEPT", "couriers accept routes at once (else they are offered)"
    )
    route_offer_s: float = setting(
        30.0, "DISPATCH_ROUTE_OFFER_S", "seconds a courier has to answer an offered route", ge=1
    )
    pickup_service_minutes: float = setting(
        4.0, "DISPATCH_PICKUP_SERVICE_MIN", "service minutes at a shop, in ETAs and scoring", ge=0
    )
    dropoff_service_minutes: float = setting(
        4.0, "DISPATCH_DROPOFF_SERVICE_MIN", "service minutes at the door, in ETAs and scoring", ge=0
    )
    split_slack_minutes: float = setting(
        10.0,
        "DISPATCH_SPLIT_SLACK_MIN",
        "a split order goes on two routes only if that delivers more than this much sooner",
        ge=0,
    )
    empty_leg_weight: float = setting(
        0.0,
        "DISPATCH_EMPTY_LEG_WEIGHT",
        "the round minimises delivery minute + this × minutes a courier drives empty to the first shop",
        ge=0,
    )
    join_shop_minutes: float = setting(
        4.0,
        "DISPATCH_JOIN_SHOP_MIN",
        "work the matching leaves over (or, when couriers are short, gives a courier alone) joins another "
        "courier's new route whose shops are within this many minutes of its own, when that delivers sooner",
        ge=0,
    )
    join_limit: int = setting(
        4, "DISPATCH_JOIN_LIMIT", "orders on a route made by joining work at most (1: no joining)", ge=1
    )
    join_courier_weight: float = setting(
        1.0,
        "DISPATCH_JOIN_COURIER_WEIGHT",
        "when couriers are short, a join counts this × the courier minutes it saves as delivery minutes "
        "gained (their time is what waiting orders pay for)",
        ge=0,
    )
    defer_wait_minutes: float = setting(
        0.0,
        "DISPATCH_DEFER_WAIT_MIN",
        "work whose best courier would wait longer than this plus one round (DISPATCH_ROUND_S) at the shops "
        "is held for a later round (`inf`: place work as soon as it is accepted)",
        ge=0,
        allow_inf_nan=True,
    )
    proximity_m: float = setting(
        30.0,
        "DISPATCH_PROXIMITY_M",
        "how near the door a courier must be to complete a drop-off without the code (when the order allows "
        "it)",
        ge=1,
    )
    arrival_radius_m: float = setting(
        100.0,
        "DISPATCH_ARRIVAL_RADIUS_M",
        "how near a stop a courier's last trusted position must be to arrive there or collect a pickup (an "
        "admin can override)",
        ge=1,
    )
    location_skew_s: float = setting(
        5.0, "DISPATCH_LOCATION_SKEW_S", "pings from the future beyond this many seconds are refused", ge=0
    )
    courier_max_speed_m_s: float = setting(
        40.0,
        "DISPATCH_COURIER_MAX_SPEED_M_S",
        "location jumps faster than this (m/s) are flagged and not trusted",
        ge=1,
    )
    policy: Literal["ours", "nearest-idle"] = setting(
        "ours",
        "DISPATCH_POLICY",
        "courier assignment policy: `ours` (batching, bundling, optimal matching) or `nearest-idle` "
        "(baseline)",
    )
    assign_busy: bool = setting(
        True,
        "DISPATCH_ASSIGN_BUSY",
        "ours: a busy courier may be given work queued behind what it is doing, re-planned every round; "
        "`false`: the benchmark's rule, no new instructions to a courier executing an assignment",
    )
    undeliverable: Literal["flag", "refuse"] = setting(
        "flag",
        "DISPATCH_UNDELIVERABLE",
        "a delivery order no courier on shift can collect before its shift ends: `flag` it (placed, with a "
        "`warning` offering pick-up or a later slot) or `refuse` it (409 `no_courier_available`, the same "
        "offers)",
    )
    admission_refresh_s: float = setting(
        1.0,
        "DISPATCH_ADMISSION_REFRESH_S",
        "that check weighs each order against this node's snapshot of the fleet and the waiting work, read "
        "again when older than this many (wall) seconds, or ten times what reading it took if longer; orders "
        "admitted meanwhile take their couriers in it. 0: read for every order (costly at peak: the whole "
        "on-shift fleet and up to 1,000 jobs)",
        ge=0,
    )
    # --- the clock (replays) ---
    clock_speed: float = setting(
        1.0, "DISPATCH_CLOCK_SPEED", "run the server's clock this many times faster than wall time", gt=0
    )
    clock_start: AwareDatetime | None = setting(
        None,
        "DISPATCH_CLOCK_START",
        "what the scaled clock reads at `DISPATCH_CLOCK_EPOCH` (ISO 8601)",
        shown="now",
    )
    clock_epoch: float | None = setting(
        None, "DISPATCH_CLOCK_EPOCH", "the Unix time at which the scaled clock reads its start", shown="now"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment only through from_env, explicitly

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "max_body_bytes",
        "shutdown_grace_s",
        "offer_timeout_s",
        "timer_poll_s",
        "courier_stale_s",
        mode="after",
    )
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("clock_epoch")
    @classmethod
    def _epoch(cls, value: float | None) -> float | None:
        return value or None  # 0 means "not set"

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) < 32:
            raise ValueError(
                "must be at least 32 bytes (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "must be a postgresql:// URL, e.g. postgresql://user:password@host:5432/dispatch"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL, e.g. redis://localhost:6379/0")
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The environment (and the CLI's `overrides`, by field name) over the defaults."""
        values: dict[str, Any] = {**environment_values(env), **overrides}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise StartupError(_one_line(exc), code="bad_setting") from None

    def with_(self, **changes: Any) -> Settings:
        return self.model_copy(update=changes)


def environment_values(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings' variables set (non-empty) in `env`, by variable name, read as pydantic-settings reads."""
    source = EnvSettingsSource(Settings, case_sensitive=True)
    source.env_vars = {k: v for k, v in (os.environ if env is None else env).items() if v != ""}
    return {k: v for k, v in source().items() if isinstance(v, str)}


def _one_line(exc: ValidationError) -> str:
    """Every problem, naming its variable; the value is shown unless it may hold a secret."""
    secret_names = {env_name(f) for n, f in fields().items() if n in SECRETS} | {"DATABASE_URL", "REDIS_URL"}
    problems = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"])
        got = error.get("input")
        shown = "" if isinstance(got, dict) or name in secret_names else f" (got {got!r})"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}{shown}")
    return "; ".join(problems)


def fields() -> dict[str, FieldInfo]:
    return dict(Settings.model_fields)


def env_name(info: FieldInfo) -> str:
    assert isinstance(info.validation_alias, str)
    return info.validation_alias


def extra(info: FieldInfo) -> dict[str, Any]:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
