"""`python -m dispatch bench ...`: benchmarks printing figures and ratios against an in-run baseline."""

from __future__ import annotations

from typing import Any


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    kinds = bench.add_subparsers(dest="bench", required=True)
    for register in _registrations():
        register(kinds)


def _registrations() -> list[Any]:
    from dispatch.bench import couriers, faults, geo, orders

    return [geo.register, orders.register, couriers.register, faults.register]
