"""The wheel as the image builds and installs it, run from outside the repository.

Built from exactly what the Dockerfile's build stage copies, installed into a fresh virtualenv in a temporary
directory (pip fetches the dependencies, from its cache when warm), and run from another directory with no
PYTHONPATH: nothing can come from the source tree. Costs about a minute here with a warm pip cache, most of it
pip installing the dependencies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from dispatch.bench.stack import free_port as _free_port
from dispatch.bench.stack import wait_ready
from tests.timing import SECOND

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))


def _env() -> dict[str, str]:
    """The environment of a container without the image's settings: no source tree on the path, no external
    PostgreSQL/Redis (so the embedded default applies), no DISPATCH_* from the caller."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DATABASE_URL", "REDIS_URL"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("DISPATCH_")}
    env["DISPATCH_DEMO"] = "false"  # as in the image
    return env


def _run(
    argv: list[str | Path], cwd: Path, timeout: float = 300 * SECOND
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (?!--from)(.+?) \S+$", dockerfile, re.M):
        for name in sources.split():
            copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
            copy(ROOT / name, src / name)
    for junk in src.rglob("__pycache__"):
        shutil.rmtree(junk)
    out = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", tmp / "wheels", src], tmp
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (tmp / "wheels").glob("dispatch-*.whl")
    return wheel


def _pip_install(venv: Path, requirement: str, cwd: Path) -> None:
    # Byte-compiling every dependency is no part of what this checks, and a third of the install time.
    out = _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile", requirement], cwd)
    assert out.returncode == 0, out.stdout + out.stderr


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("dispatch: error: ")
    return lines[0]


def _get(port: int, path: str, token: str | None = None) -> tuple[int, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5 * SECOND) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_ready(proc: subprocess.Popen[str], port: int, timeout: float = 90 * SECOND) -> None:
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout)
    except RuntimeError as exc:
        raise AssertionError(str(exc)) from None


def test_wheel_installed_elsewhere_says_which_extra_is_missing_then_migrates_and_serves(
    tmp_path: Path,
) -> None:
    wheel = _build_wheel(tmp_path)
    # The apps are served from inside the package: every file of dispatch/web is in the wheel.
    web = ROOT / "dispatch" / "web"
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("dispatch/web/")}
    assert shipped == {p.relative_to(ROOT).as_posix() for p in web.rglob("*") if p.is_file()}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120 * SECOND)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = tmp_path / "data"
    dispatch = venv / "bin" / "dispatch"

    # The wheel alone, as the image installs it: the package and its migrations come from the venv.
    _pip_install(venv, str(wheel), elsewhere)
    where = _run(
        [
            venv / "bin" / "python",
            "-c",
            "import dispatch.migrate as m; print(m.__file__); print(*(x.name for x in m.discover()))",
        ],
        elsewhere,
    )
    assert where.returncode == 0, where.stderr
    module, names = where.stdout.splitlines()
    assert Path(module).is_relative_to(venv)
    assert names.split() == MIGRATIONS

    # Without the extras, the commands that need them say which to install, in one line.
    line = _one_error_line(
        _run([dispatch, "serve", "--data-dir", data, "--port", str(_free_port())], elsewhere)
    )
    assert "DATABASE_URL" in line and "install 'dispatch[embedded]'" in line
    instance = tmp_path / "instance"
    generated = _run([dispatch, "replay", "generate", instance, "--orders", "5"], elsewhere)
    assert generated.returncode == 0, generated.stderr
    line = _one_error_line(_run([dispatch, "replay", instance], elsewhere))
    assert "matplotlib" in line and "install 'dispatch[replay]'" in line

    # With the embedded extra: migrate, then serve, against the embedded default.
    _pip_install(venv, f"{wheel}[embedded]", elsewhere)
    migrated = _run([dispatch, "migrate", "--data-dir", data], elsewhere)
    assert migrated.returncode == 0, migrated.stderr
    assert f"applied {len(MIGRATIONS)} migration(s)" in migrated.stdout

    port = _free_port()
    server = subprocess.Popen(
        [dispatch, "serve", "--data-dir", data, "--port", str(port)],
        cwd=elsewhere,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_ready(server, port)
        token = _run(
            [dispatch, "token", "--role", "admin", "--subject", "ops", "--data-dir", data], elsewhere
        )
        assert token.returncode == 0, token.stderr
        # The schema is there: listing shops reads the table the 0-migration image never had.
        status, body = _get(port, "/v1/shops?limit=1", token.stdout.strip())
        assert (status, body) == (200, {"items": []})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/console", timeout=5 * SECOND) as r:
            assert r.status == 200 and b'src="/static/console.js"' in r.read()
        again = _run([dispatch, "migrate", "--data-dir", data], elsewhere)
        assert again.returncode == 0 and "applied 0 migration(s)" in again.stdout, again.stderr
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60 * SECOND)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=30 * SECOND)
    assert server.returncode == 0, out
