"""`python -m dispatch` (also installed as `dispatch`): serve, migrate, token, demo, bench, replay."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from dispatch.auth import Role, issue_token, load_or_create_secret
from dispatch.clock import SystemClock, clock_from_settings
from dispatch.config import Settings
from dispatch.errors import DispatchError, StartupError
from dispatch.logs import setup_logging

log = logging.getLogger("dispatch")


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    changes: dict[str, object] = {}
    for name in ("host", "port"):
        if getattr(args, name, None) is not None:
            changes[name] = getattr(args, name)
    if getattr(args, "data_dir", None) is not None:
        changes["data_dir"] = Path(args.data_dir)
    if getattr(args, "demo", None) is not None:
        changes["demo"] = args.demo
    return settings.with_(**changes) if changes else settings


@contextlib.contextmanager
def _database(settings: Settings, *, lock: bool) -> Iterator[tuple[str, str | None]]:
    """The database and Redis URLs: given ones, or the embedded servers under the data dir.

    The server (`lock=True`) holds the data dir's lock while it runs. A one-off command (`lock=False`) takes
    it too when it is free, so no server starts underneath; when a server holds it, the command opens only
    the embedded PostgreSQL (pgserver shares it between processes) and gets no Redis URL: the embedded Redis
    belongs to the server, and a second handle on it would shut it down when the command ends.
    """
    from dispatch.embedded import data_dir_lock, start_embedded

    needs_embedded = settings.database_url is None or settings.redis_url is None
    with contextlib.ExitStack() as stack:
        with_redis = True
        if needs_embedded:
            try:
                stack.enter_context(data_dir_lock(settings.data_dir))
            except StartupError as exc:
                if lock or exc.code != "data_dir_locked":
                    raise
                with_redis = settings.redis_url is not None
        services = start_embedded(
            settings.data_dir, settings.database_url, settings.redis_url, with_redis=with_redis
        )
        stack.callback(services.stop)
        assert services.database_url is not None
        yield services.database_url, services.redis_url


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from dispatch.app import create_app
    from dispatch.demo import load_demo_if_empty
    from dispatch.serve import serve

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format)
    secret = load_or_create_secret(settings.secret, settings.data_dir)
    fatal: list[str] = []

    async def on_database(database_url: str) -> None:
        if settings.demo:
            summary = await load_demo_if_empty(database_url, settings)
            if summary is not None:
                print(summary.instructions(), flush=True)

    def on_fatal(message: str) -> None:
        # Start-up gave up (a dependency never came): stop the way SIGTERM does, then say why and exit 2.
        fatal.append(message)
        signal.raise_signal(signal.SIGTERM)

    with _database(settings, lock=True) as (database_url, redis_url):
        assert redis_url is not None  # the server holds the lock: it always has its Redis
        clock = clock_from_settings(settings.clock_speed, settings.clock_start, settings.clock_epoch)
        app = create_app(
            settings,
            secret=secret,
            database_url=database_url,
            redis_url=redis_url,
            clock=clock,
            start_in_background=True,
            on_database=on_database,
            on_fatal=on_fatal,
        )
        print(f"dispatch server on http://{settings.host}:{settings.port}", flush=True)
        serve(app, settings)
    if fatal:
        raise StartupError(fatal[0])
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from dispatch.migrate import migrate_url

    settings = _settings(args)
    setup_logging(settings.log_level, "text")
    with _database(settings, lock=False) as (database_url, _):
        applied = asyncio.run(migrate_url(database_url))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    secret = load_or_create_secret(settings.secret, settings.data_dir)
    ttl = args.ttl if args.ttl is not None else settings.token_ttl_s
    if ttl <= 0:
        raise StartupError("--ttl must be a positive number of seconds")
    if ttl > settings.token_max_ttl_s:
        raise StartupError(
            f"a token lifetime of {ttl} s (--ttl or DISPATCH_TOKEN_TTL) is longer than the server accepts, "
            f"{settings.token_max_ttl_s} s (DISPATCH_TOKEN_MAX_TTL)"
        )
    print(issue_token(secret, Role(args.role), args.subject, ttl, SystemClock().now()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dispatch.demo import load_demo

    settings = _settings(args)
    setup_logging(settings.log_level, "text")
    with _database(settings, lock=False) as (database_url, redis_url):
        summary = asyncio.run(load_demo(database_url, settings, redis_url=redis_url))
    print(summary.instructions())
    if redis_url is None:
        print("(a server is running on this data dir: it picks the new zones up within 30 seconds)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (embedded PostgreSQL/Redis by default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir", help="where embedded data, the secret and the lock live")
    serve.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load the demo neighbourhood into an empty database (default: on)",
    )
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="apply pending migrations")
    mig.add_argument("--data-dir")
    mig.set_defaults(func=cmd_migrate)

    tok = sub.add_parser("token", help="print a signed token")
    tok.add_argument("--role", required=True, choices=[r.value for r in Role])
    tok.add_argument("--subject", required=True, help="the shop, courier or resident id")
    tok.add_argument("--ttl", type=int, help="lifetime in seconds (default DISPATCH_TOKEN_TTL)")
    tok.add_argument("--data-dir")
    tok.set_defaults(func=cmd_token)

    demo = sub.add_parser("demo", help="load the demo neighbourhood into the database")
    demo.add_argument("--data-dir")
    demo.set_defaults(func=cmd_demo)

    from dispatch.bench.cli import add_bench_parser

    add_bench_parser(sub)

    from dispatch.replay.cli import add_replay_parser

    add_replay_parser(sub)

    from dispatch.replay.demo_day import add_simulate_parser

    add_simulate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except DispatchError as exc:
        print(f"dispatch: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
