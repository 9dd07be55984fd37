"""`python -m dispatch bench ...`: benchmarks printing figures and ratios against an in-run baseline."""

from __future__ import annotations

import argparse
from typing import Any


def add_bench_arguments(bench: argparse.ArgumentParser) -> None:
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for register in _registrations():
        register(kinds)


def _registrations() -> list[Any]:
    from dispatch.bench import couriers, faults, geo, orders

    return [geo.register, orders.register, couriers.register, faults.register]
