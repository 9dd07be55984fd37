"""`python -m dispatch` (also installed as `dispatch`): serve, migrate, token, demo, config, bench, replay,
simulate.

Commands are built lazily: `dispatch token` imports neither the benchmarks nor the replay (numpy, scipy,
matplotlib), so the everyday commands start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dispatch.config import Settings, env_name, fields
from dispatch.errors import DispatchError, StartupError

log = logging.getLogger("dispatch")

# The `serve` options that override settings, by field name.
_OVERRIDES = ("host", "port", "data_dir", "demo", "workers")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {n: getattr(args, n) for n in _OVERRIDES if getattr(args, n, None) is not None}
    return Settings.from_env(**overrides)


def _setting_help(name: str) -> str:
    """A setting's help for its command-line option: what it is, its variable and its default."""
    info = fields()[name]
    from dispatch.settings_report import default_text

    return f"{info.description} (env {env_name(info)}; default {default_text(info)})"


@contextlib.contextmanager
def _database(settings: Settings, *, lock: bool, redis: bool = True) -> Iterator[tuple[str, str | None]]:
    """The database and Redis URLs: given ones, or the embedded servers under the data dir.

    The server (`lock=True`) holds the data dir's lock while it runs. A one-off command (`lock=False`) takes
    it too when it is free, so no server starts underneath; when a server holds it, the command opens only
    the embedded PostgreSQL (pgserver shares it between processes) and gets no Redis URL: the embedded Redis
    belongs to the server, and a second handle on it would shut it down when the command ends.
    """
    from dispatch.embedded import data_dir_lock, start_embedded

    needs_embedded = settings.database_url is None or (redis and settings.redis_url is None)
    with contextlib.ExitStack() as stack:
        with_redis = redis
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
    from dispatch.auth import load_or_create_secret
    from dispatch.clock import clock_from_settings
    from dispatch.demo import load_demo_if_empty
    from dispatch.logs import setup_logging
    from dispatch.serve import serve
    from dispatch.supervisor import workers_for

    settings = _settings(args)
    as_json = setup_logging(settings.log_level, settings.log_format)
    secret = load_or_create_secret(settings.secret, settings.data_dir)
    if not settings.reuse_port and workers_for(settings) > 1:
        return _serve_workers(settings)
    fatal: list[str] = []

    def say(text: str) -> None:
        """For the person at the terminal; one JSON log line (the rest as `lines`) when logging JSON."""
        if as_json:
            first, *rest = text.splitlines()
            log.info(first, extra={"lines": rest} if rest else None)
        else:
            print(text, flush=True)

    async def on_database(database_url: str) -> None:
        if settings.demo:
            summary = await load_demo_if_empty(database_url, settings)
            if summary is not None:
                say(summary.instructions(token_command(settings)))
                if settings.secret:
                    say("(run it with the same DISPATCH_SECRET in its environment)")

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
        say(f"dispatch server on http://{settings.host}:{settings.port}")
        with _profiled(settings.profile_dir):
            serve(app, settings)
    log.info("stopped")
    if fatal:
        raise StartupError(fatal[0])
    return 0


@contextlib.contextmanager
def _profiled(directory: Path | None) -> Iterator[None]:
    """cProfile this process into `directory/serve-PID.prof` (DISPATCH_PROFILE_DIR), or nothing."""
    if directory is None:
        yield
        return
    import cProfile
    import time

    directory.mkdir(parents=True, exist_ok=True)
    # CPU time, not wall time: a machine shared with the load generator would otherwise blame whatever
    # was running when the process was descheduled.
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(directory / f"serve-{os.getpid()}.prof")


def _serve_workers(settings: Settings) -> int:
    """The parent of `--workers N`: the data dir, the embedded services and the port are its own."""
    from dispatch.serve import bind
    from dispatch.supervisor import Supervisor, worker_argv, worker_env, workers_for

    count = workers_for(settings)
    with _database(settings, lock=True) as (database_url, redis_url):
        assert redis_url is not None
        if settings.port:
            for sock in bind(settings.host, settings.port):  # free? (one clear line if not)
                sock.close()
        held = bind(settings.host, settings.port, reuse_port=True)  # ours from now on (not listening here)
        # Port 0: the one the system chose, for every worker.
        settings = settings.model_copy(update={"port": held[0].getsockname()[1]})
        try:
            _warn_if_too_few_connections(database_url, count, settings.db_pool_max)
            log.info("dispatch server on http://%s:%d with %d workers", settings.host, settings.port, count)
            env = worker_env(settings, database_url, redis_url)
            status = Supervisor(worker_argv(), env, count, settings.shutdown_grace_s).run()
        finally:
            for sock in held:
                sock.close()
    log.info("stopped")
    return status  # a worker that could not start has said why on stderr


def _warn_if_too_few_connections(database_url: str, workers: int, pool_max: int) -> None:
    """Each worker opens up to DISPATCH_DB_POOL_MAX connections (and one for its listener); say so at once
    when PostgreSQL would refuse some under load, rather than as errors at the evening peak."""
    import asyncio

    import asyncpg

    async def limit() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SHOW max_connections")) - int(
                await conn.fetchval("SHOW superuser_reserved_connections")
            )
        finally:
            await conn.close()

    try:
        available = asyncio.run(limit())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return  # not reachable yet: the workers wait for it and say so
    wanted = workers * (pool_max + 1)
    if wanted > available:
        log.warning(
            "%d workers may open %d PostgreSQL connections but the server allows %d; lower "
            "DISPATCH_DB_POOL_MAX or the workers, or raise PostgreSQL's max_connections",
            workers,
            wanted,
            available,
        )


def cmd_migrate(args: argparse.Namespace) -> int:
    from dispatch.logs import setup_logging
    from dispatch.migrate import migrate_url
    from dispatch.translate import is_unreachable

    settings = _settings(args)
    setup_logging(settings.log_level, "text")
    with _database(settings, lock=False, redis=False) as (database_url, _):
        try:
            applied = asyncio.run(migrate_url(database_url))
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            raise StartupError(f"cannot reach PostgreSQL ({_where(database_url)}): {exc}") from None
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def _where(url: str) -> str:
    """A database URL without its credentials, to name it in a message."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname or 'local socket'}:{parts.port or 5432}{parts.path}"


def cmd_token(args: argparse.Namespace) -> int:
    from dispatch.auth import Role, issue_token, load_or_create_secret
    from dispatch.clock import SystemClock

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
    token = issue_token(secret, Role(args.role), args.subject, ttl, SystemClock().now())
    print(sign_in_link(args.url or base_url(settings), args.role, token) if args.link else token)
    return 0


# The app page of each role: a `--link` opens it signed in.
APP_PAGES = {"admin": "/console", "shop": "/shop", "courier": "/courier", "resident": "/order"}


def base_url(settings: Settings) -> str:
    """The server's URL as a browser on this machine reaches it."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def sign_in_link(base: str, role: str, token: str) -> str:
    """The role's page with the token in the fragment: browsers never send a fragment to a server, and the
    page moves it to session storage and out of the address bar at once."""
    return f"{base.rstrip('/')}{APP_PAGES[role]}#token={token}"


def token_command(settings: Settings) -> str:
    """How to get a token from this server's secret, as a command that works from here."""
    import shlex

    words = [sys.executable, "-m", "dispatch", "token"]
    if settings.data_dir != Settings().data_dir:
        words += ["--data-dir", str(settings.data_dir)]
    return shlex.join(words)


def cmd_demo(args: argparse.Namespace) -> int:
    from dispatch.demo import load_demo
    from dispatch.logs import setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level, "text")
    with _database(settings, lock=False) as (database_url, redis_url):
        summary = asyncio.run(load_demo(database_url, settings, redis_url=redis_url))
    print(summary.instructions(token_command(settings)))
    if redis_url is None:
        print("(a server is running on this data dir: it picks the new zones up within 30 seconds)")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from dispatch.settings_report import markdown_table, report

    if args.markdown:
        print(markdown_table())
        return 0
    import os

    settings = _settings(args)
    overrides = {n for n in _OVERRIDES if getattr(args, n, None) is not None}
    rows = report(settings, os.environ, overrides)
    if args.json:
        import orjson

        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    width = max(len(r["variable"]) for r in rows)
    for r in rows:
        print(f"{r['variable']:<{width}}  {r['value']}  [{r['source']}]")
    return 0


# --- the command line ------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=110)


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help=_setting_help("data_dir"))


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help=_setting_help("host"))
    p.add_argument("--port", type=int, help=_setting_help("port"))
    _data_dir(p)
    p.add_argument("--demo", action=argparse.BooleanOptionalAction, default=None, help=_setting_help("demo"))
    p.add_argument("--workers", type=int, metavar="N", help=_setting_help("workers"))
    p.set_defaults(func=cmd_serve)


def _migrate_arguments(p: argparse.ArgumentParser) -> None:
    _data_dir(p)
    p.set_defaults(func=cmd_migrate)


def _token_arguments(p: argparse.ArgumentParser) -> None:
    roles = ("resident", "shop", "courier", "admin")
    p.add_argument("--role", required=True, choices=roles, help="who the token speaks for")
    p.add_argument("--subject", required=True, help="the shop, courier or resident id (admin: any name)")
    p.add_argument("--ttl", type=int, help=f"lifetime in seconds (default: {_setting_help('token_ttl_s')})")
    p.add_argument(
        "--link",
        action="store_true",
        help="print a URL that opens the role's app signed in (/console, /shop, /courier, /order)",
    )
    p.add_argument(
        "--url", metavar="BASE", help="with --link: the server's URL (default: from DISPATCH_HOST and _PORT)"
    )
    _data_dir(p)
    p.set_defaults(func=cmd_token)


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    _data_dir(p)
    p.set_defaults(func=cmd_demo)


def _config_arguments(p: argparse.ArgumentParser) -> None:
    _data_dir(p)
    p.add_argument("--json", action="store_true", help="print the settings as JSON")
    p.add_argument("--markdown", action="store_true", help="print the README's table of every setting")
    p.set_defaults(func=cmd_config)


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    from dispatch.bench.cli import add_bench_arguments

    add_bench_arguments(p)


def _simulate_arguments(p: argparse.ArgumentParser) -> None:
    from dispatch.replay.demo_day import add_simulate_arguments

    add_simulate_arguments(p)


def _replay(argv: list[str]) -> int:
    from dispatch.replay.cli import replay_main

    return replay_main(argv)


@dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    # A command with a command line of its own (it parses its arguments itself).
    own: Callable[[list[str]], int] | None = None


COMMANDS: dict[str, Command] = {
    "serve": Command(
        "run the server (embedded PostgreSQL and Redis unless their URLs are set)", _serve_arguments
    ),
    "migrate": Command("apply pending migrations to the database", _migrate_arguments),
    "token": Command("print a signed token for a role and a subject", _token_arguments),
    "demo": Command("load the demo neighbourhood into the database", _demo_arguments),
    "config": Command("print every setting's effective value and where it came from", _config_arguments),
    "bench": Command("run a benchmark and print its figures", _bench_arguments),
    "replay": Command(
        "replay a delivery day through the real server; compare; offline; generate", own=_replay
    ),
    "simulate": Command(
        "a demo day: simulated shops, couriers and residents on a running server", _simulate_arguments
    ),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The command line; only `chosen`'s own options are built (and its modules imported)."""
    parser = argparse.ArgumentParser(prog="dispatch", description=__doc__, formatter_class=_Formatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help, formatter_class=_Formatter)
        if name == chosen and command.arguments is not None:
            command.arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        if chosen is not None and COMMANDS[chosen].own is not None:
            own = COMMANDS[chosen].own
            assert own is not None
            return own(argv[1:])
        args = build_parser(chosen).parse_args(argv)
        code: int = args.func(args)
        return code
    except DispatchError as exc:
        print(f"dispatch: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from dispatch.translate import is_unreachable

        if not is_unreachable(exc):
            raise
        print(f"dispatch: error: cannot reach a dependency: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
