"""What can be checked of the container files without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


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
