"""`python -m dispatch bench geo`: a small functional run of the real command (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.timing import SECOND

METHOD_FIELDS = {"lookups_per_s", "p50_us", "p99_us", "mismatches", "skipped_reason"}


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatch", "bench", "geo", "--shops", "200", *args],
        capture_output=True,
        text=True,
        timeout=180 * SECOND,
    )


def test_json_run_agrees_with_the_oracle() -> None:
    done = _bench("--queries", "2000", "--sample", "300", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # stdout is the one JSON object, progress goes to stderr
    assert report["shops"] == 200
    assert report["queries"] == 2000
    for field in (
        "index_build_s",
        "load_from_db_s",
        "index_memory_bytes",
        "ratio_vs_redis",
        "ratio_vs_postgis",
        "ratio_vs_bruteforce",
    ):
        assert field in report
    assert report["mismatches"] == 0
    assert report["db_index_mismatches"] == 0
    methods = report["methods"]
    assert set(methods) == {"zoneindex", "redis_geosearch", "postgis", "bruteforce"}
    for name, figures in methods.items():
        assert figures.keys() >= METHOD_FIELDS, name
        assert figures["mismatches"] == 0, name
    assert methods["zoneindex"]["evaluated"] == 2000
    assert methods["redis_geosearch"]["evaluated"] == 300
    assert methods["redis_geosearch"]["lookups_per_s"] > 0
    assert methods["postgis"]["skipped_reason"] == "no --postgis-url given"
    assert report["ratio_vs_postgis"] is None
    assert report["ratio_vs_redis"] > 0 and report["ratio_vs_bruteforce"] > 0
    assert report["index_memory_bytes"] > 0 and report["load_from_db_s"] > 0


def test_text_run_prints_a_table() -> None:
    done = _bench("--queries", "300", "--sample", "50")
    assert done.returncode == 0, done.stderr
    assert "lookups/s" in done.stdout and "p99 µs" in done.stdout
    assert "postgis         skipped: no --postgis-url given" in done.stdout
    assert "total mismatches        0" in done.stdout
