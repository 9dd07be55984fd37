"""Settings from the environment, and the clock a replay runs the server on."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatch.cli import COMMANDS, build_parser
from dispatch.clock import ManualClock, ScaledClock, SystemClock, clock_from_settings
from dispatch.config import Settings, fields
from dispatch.errors import StartupError
from dispatch.settings_report import markdown_table, report
from tests.timing import MS, SECOND


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.demo, s.offer_timeout_s) == ("127.0.0.1", 8080, True, 45.0)
    s = Settings.from_env({"DISPATCH_PORT": "9000", "DISPATCH_DEMO": "no", "DISPATCH_OFFER_TIMEOUT": "5"})
    assert (s.port, s.demo, s.offer_timeout_s) == (9000, False, 5.0)


@pytest.mark.parametrize(
    "env",
    [
        {"DISPATCH_PORT": "eighty"},
        {"DISPATCH_DEMO": "maybe"},
        {"DISPATCH_OFFER_TIMEOUT": "nan"},
        {"DISPATCH_DB_POOL_MAX": "0"},
        {"DISPATCH_CLOCK_START": "yesterday"},
        {"DISPATCH_CLOCK_START": "2026-01-01T00:00:00"},
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(StartupError, match=next(iter(env))):
        Settings.from_env(env)


def test_scaled_clocks_with_one_epoch_agree_across_processes() -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    epoch = time.time() - 10  # ten wall seconds ago
    a, b = ScaledClock(start, 60, epoch), ScaledClock(start, 60, epoch)
    assert abs((a.now() - b.now()).total_seconds()) < 1.0
    assert timedelta(minutes=9, seconds=59) <= a.now() - start <= timedelta(minutes=10, seconds=30)


def test_clock_from_settings() -> None:
    assert isinstance(clock_from_settings(1.0, None, None), SystemClock)
    assert isinstance(clock_from_settings(10.0, None, None), ScaledClock)


async def test_manual_clock_sleep_waits_for_advance() -> None:
    import asyncio

    clock = ManualClock()
    sleeper = asyncio.create_task(clock.sleep(30))
    await asyncio.sleep(10 * MS)
    clock.advance(29)
    await asyncio.sleep(10 * MS)
    assert not sleeper.done()
    clock.advance(1)
    await asyncio.wait_for(sleeper, 1 * SECOND)


def test_the_readme_table_is_the_settings_table() -> None:
    """The README's configuration table is generated from the settings: it cannot drift from them."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("<!-- settings:")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- /settings -->")
    assert readme[start:end].strip() == markdown_table()
    for info in fields().values():
        assert info.description, info  # every setting says what it is for


def test_config_reports_sources_and_masks_secrets() -> None:
    env = {
        "DISPATCH_SECRET": "s" * 40,
        "DATABASE_URL": "postgresql://app:hunter2@db:5432/dispatch",
        "DISPATCH_OFFER_TIMEOUT": "20",
    }
    rows = {r["variable"]: r for r in report(Settings.from_env(env, port=9999), env, {"port"})}
    assert rows["DISPATCH_SECRET"]["value"] == "(set, 40 bytes)"
    assert rows["DATABASE_URL"]["value"] == "postgresql://app:***@db:5432/dispatch"
    assert (rows["DISPATCH_OFFER_TIMEOUT"]["value"], rows["DISPATCH_OFFER_TIMEOUT"]["source"]) == (
        "20",
        "environment",
    )
    assert (rows["DISPATCH_PORT"]["value"], rows["DISPATCH_PORT"]["source"]) == ("9999", "flag --port")
    assert rows["DISPATCH_ROUND_S"]["source"] == "default"
    assert "hunter2" not in str(rows) and "s" * 40 not in str(rows)


def _dispatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    environment.pop("DATABASE_URL", None)
    environment.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "dispatch", *args],
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120 * SECOND,
    )


@pytest.mark.parametrize(
    ("command", "env", "says"),
    [
        (["serve"], {"DISPATCH_LOG_LEVEL": "LOUD"}, "DISPATCH_LOG_LEVEL"),
        (["serve"], {"DISPATCH_SECRET": "short"}, "DISPATCH_SECRET: must be at least 32 bytes"),
        (["serve"], {"DATABASE_URL": "notaurl"}, "DATABASE_URL: must be a postgresql:// URL"),
        (["migrate"], {"DATABASE_URL": "mysql://u:pw@h/db"}, "DATABASE_URL: must be a postgresql:// URL"),
        (["serve"], {"REDIS_URL": "http://cache"}, "REDIS_URL: must be a redis://"),
        (["token", "--role", "admin", "--subject", "x"], {"DISPATCH_PORT": "70000"}, "DISPATCH_PORT"),
        (["migrate"], {"DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/db"}, "cannot reach PostgreSQL"),
    ],
)
def test_bad_settings_end_in_one_line(
    command: list[str], env: dict[str, str], says: str, tmp_path: Path
) -> None:
    done = _dispatch(*command, "--data-dir", str(tmp_path), env=env)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dispatch: error: "), done.stderr
    assert says in lines[0], lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert "short" not in lines[0] and "pw" not in lines[0]  # secrets are never echoed


def test_token_imports_nothing_heavy(tmp_path: Path) -> None:
    """`dispatch token` is a quick command: it loads neither the benchmarks, the replay nor the server."""
    code = (
        "import sys; from dispatch.cli import main; "
        f"main(['token', '--role', 'admin', '--subject', 'ops', '--data-dir', {str(tmp_path)!r}]); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'scipy', 'matplotlib', 'aiohttp', 'asyncpg', 'redis', 'shapely', 'h3'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60 * SECOND, check=True
    )
    token, loaded = done.stdout.strip().splitlines()
    assert token.count(".") == 2  # a JWT
    assert loaded == "[]", loaded


def _actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(f"{parser.prog} {name}: {a}", b) for a, b in _actions(sub)]
        elif not isinstance(action, argparse._HelpAction):
            found.append((parser.prog, action))
    return found


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help(command: str) -> None:
    if COMMANDS[command].own is not None:
        return  # parses its own arguments: see test_replay_help
    missing = [(where, a.dest) for where, a in _actions(build_parser(command)) if not a.help]
    assert not missing, missing


def test_serve_help_shows_variables_and_defaults() -> None:
    done = _dispatch("serve", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "(env DISPATCH_PORT; default 8080)" in text
    assert "(env DISPATCH_DATA_DIR; default ./.dispatch)" in text
    assert "(env DISPATCH_DEMO; default true)" in text


def test_replay_help() -> None:
    for flag in ("--help", "-h"):
        done = _dispatch("replay", flag)
        assert done.returncode == 0, done
        assert "dispatch replay compare" in done.stdout
    bare = _dispatch("replay")
    assert bare.returncode == 2 and bare.stdout.count("usage:") == 1
    for form in ("compare", "offline", "generate", "phases"):
        done = _dispatch("replay", form, "--help")
        assert done.returncode == 0 and f"dispatch replay {form}" in done.stdout, done
