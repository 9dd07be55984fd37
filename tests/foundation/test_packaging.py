"""What can be checked of the container files and the package layout without a Docker engine (the wheel
itself is built, installed and run in test_wheel.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from dispatch.extras import EXTRAS
from tests.timing import SECOND

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    lines = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions(dockerfile):
        if word == "FROM":
            stages.append([])
        stages[-1].append((word, rest))
    return stages


def test_compose_runs_two_replicas_on_one_database_and_redis() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    replicas = [s for name, s in services.items() if name.startswith("dispatch")]
    assert len(replicas) == 2
    envs = [r["environment"] for r in replicas]
    assert all("@postgres:" in e["DATABASE_URL"] for e in envs)
    assert all(e["REDIS_URL"].startswith("redis://redis:") for e in envs)
    assert len({e["DATABASE_URL"] for e in envs}) == 1
    assert len({e["REDIS_URL"] for e in envs}) == 1
    assert len({e["DISPATCH_SECRET"] for e in envs}) == 1
    ports = [r["ports"][0].split(":")[0] for r in replicas]
    assert len(set(ports)) == 2
    # Each replica publishes the port its server listens on (and its HEALTHCHECK asks).
    assert all(r["ports"][0].split(":")[1] == r["environment"]["DISPATCH_PORT"] for r in replicas)


def test_dockerfile_is_multistage_non_root_with_readiness_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM python:3\.11-slim", text, re.M)
    assert len(stages) == 2
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "HEALTHCHECK" in text and "/readyz" in text
    # Everything the image copies exists in the repository.
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.M):
        for name in src.split():
            assert (ROOT / name).exists(), name


def test_ci_script_runs_make_test() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert "make test" in text and "set -e" in text


def test_the_wheel_lists_every_package_and_ships_the_migrations() -> None:
    """`packages` is an explicit list (so that migrations/ can become `dispatch.migrations`): a package
    added to the tree but not to the list would be missing from the wheel and the image."""
    tool = PYPROJECT["tool"]["setuptools"]
    listed = set(tool["packages"])
    in_tree = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("dispatch", "geo", "websocket")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert listed == in_tree | {"dispatch.migrations"}
    assert tool["package-dir"] == {"dispatch.migrations": "migrations"}
    assert tool["package-data"]["dispatch.migrations"] == ["*.sql"]
    assert list((ROOT / "migrations").glob("*.sql"))
    # A regular package: an editable install's finder resolves no namespace package mapped this way.
    assert (ROOT / "migrations" / "__init__.py").is_file()


def test_what_a_container_never_uses_is_an_extra() -> None:
    project = PYPROJECT["project"]
    base = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        assert extra in extras
        for module in modules:
            assert module not in base
            assert any(req.startswith(module) for req in extras[extra])
    # `make serve` and `make test` install them.
    assert re.search(r"pip install .*-e '\.\[embedded,replay,test\]'", (ROOT / "Makefile").read_text())


def test_dockerfile_builds_the_wheel_from_its_sources_and_installs_it_without_extras() -> None:
    build, runtime = _stages((ROOT / "Dockerfile").read_text())
    copied = {name for word, rest in build if word == "COPY" for name in rest.split()[:-1]}
    tool = PYPROJECT["tool"]["setuptools"]
    sources = {p.split(".")[0] for p in tool["packages"] if p not in tool["package-dir"]}
    sources |= set(tool["package-dir"].values()) | {"pyproject.toml", "README.md"}
    assert sources <= copied
    assert ("RUN", "pip wheel --no-cache-dir --wheel-dir /wheels .") in build
    installs = [rest for word, rest in runtime if word == "RUN" and "pip install" in rest]
    assert installs and not any("[" in rest for rest in installs)
    # The runtime stage takes nothing from the repository: the wheel carries it all.
    assert all(rest.startswith("--from=") for word, rest in runtime if word == "COPY")


class _Ready(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = json.dumps({"status": "ready" if self.status == 200 else "starting"}).encode()
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def readyz() -> Iterator[ThreadingHTTPServer]:
    # A class of its own per server, so that a test can change what it answers.
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Ready", (_Ready,), {}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck(port: int) -> int:
    """Run the image's HEALTHCHECK command as Docker does, in a container whose DISPATCH_PORT is `port`."""
    (args,) = [
        rest for word, rest in _instructions((ROOT / "Dockerfile").read_text()) if word == "HEALTHCHECK"
    ]
    command = args[args.index("CMD ") + 4 :].strip()
    argv = json.loads(command) if command.startswith("[") else ["/bin/sh", "-c", command]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DISPATCH_PORT": str(port),
    }
    return subprocess.run(argv, env=env, capture_output=True, timeout=30 * SECOND).returncode


def test_healthcheck_asks_the_port_dispatch_port_names(readyz: ThreadingHTTPServer) -> None:
    port = int(readyz.server_address[1])
    assert _healthcheck(port) == 0
    readyz.RequestHandlerClass.status = 503  # type: ignore[attr-defined]
    assert _healthcheck(port) == 1
