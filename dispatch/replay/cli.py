"""`python -m dispatch replay ...`: run a day through the real server, compare the policies, generate
instances, or run the dispatch core offline on an instance (seconds, for tuning)."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import Any

import orjson

from dispatch.replay.apps import LatLng
from dispatch.replay.driver import (
    DEFAULT_ORIGIN,
    ReplayOptions,
    run_replay,
    server_env,
    summary,
    write_outputs,
)
from dispatch.replay.generate import FAMILIES
from dispatch.replay.instance import load_instance
from dispatch.replay.metrics import compute_metrics, format_comparison
from dispatch.replay.plots import require_plots

# --- command line --------------------------------------------------------------------------------------


USAGE = """usage: dispatch replay INSTANCE_DIR [options]             a day through the real server
       dispatch replay compare INSTANCE_DIR [options]     both policies, side by side
       dispatch replay offline INSTANCE_DIR... [options]  the dispatch core alone, seconds a day
       dispatch replay generate OUT_DIR [options]         write a generated day
       dispatch replay phases INSTANCE_DIR A_OUT B_OUT    two runs of a day, phase by phase
       dispatch replay [compare|offline|generate|phases] --help  the options of each"""


def replay_main(argv: list[str]) -> int:
    """`dispatch replay ...`: its own command line (the first word chooses the form)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if argv[0] == "generate":
        return _cmd_generate(_generate_parser().parse_args(argv[1:]))
    if argv[0] == "compare":
        return _cmd_compare(_compare_parser().parse_args(argv[1:]))
    if argv[0] == "offline":
        return _cmd_offline(_offline_parser().parse_args(argv[1:]))
    if argv[0] == "phases":
        return _cmd_phases(_phases_parser().parse_args(argv[1:]))
    return _cmd_run(_run_parser().parse_args(argv))


def _origin(text: str) -> LatLng:
    try:
        lat, lng = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected LAT,LNG") from None
    return lat, lng


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance", type=Path, help="directory of the instance's four files")
    p.add_argument("--speed", type=float, default=60.0, help="clock speed: 60 = an instance minute a second")
    p.add_argument("--origin", type=_origin, default=DEFAULT_ORIGIN, help="LAT,LNG of the plane's centre")
    p.add_argument("--round-s", type=float, default=30.0, help="dispatch round, instance seconds (30)")
    p.add_argument("--tolerance", type=float, help="feasibility tolerance, minutes (0.25 wall s of clock)")
    p.add_argument("--json", action="store_true", help="print one JSON object, no progress bar")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dispatch replay", description="Replay a day through the real server.")
    _common(p)
    p.add_argument("--server", help="a running server's URL (see --print-env); default: start one")
    p.add_argument("--out", type=Path, help="output directory (default replay-out/<instance>-<policy>)")
    p.add_argument(
        "--policy", choices=("ours", "nearest-idle"), default="ours", help="dispatch policy (ours)"
    )
    p.add_argument("--print-env", action="store_true", help="print a server's environment for this instance")
    return p


def _compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dispatch replay compare", description="Both policies, side by side.")
    _common(p)
    p.add_argument("--out", type=Path, help="output directory (a subdirectory per policy)")
    return p


def _offline_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispatch replay offline",
        description="Both policies on each instance with the dispatch core alone (no server, seconds a "
        "day): to try DISPATCH_EMPTY_LEG_WEIGHT, DISPATCH_DEFER_WAIT_MIN and others before a real replay.",
    )
    p.add_argument("instances", type=Path, nargs="+", help="instance directories")
    p.add_argument("--round-s", type=float, default=30.0, help="dispatch round, instance seconds (30)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--out",
        type=Path,
        help="write metrics.json and the evaluator's three files (per order) to DIR/<instance>-<policy>/, "
        "as a replay through the server does, to compare the two order by order",
    )
    return p


def _phases_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispatch replay phases",
        description="Where two runs of one day (e.g. `replay offline --out` and `replay --out`) differ: per "
        "phase of an order, the mean in each and the distribution of the per-order difference (B - A).",
    )
    p.add_argument("instance", type=Path, help="the instance directory")
    p.add_argument("a", type=Path, help="output directory of the first run")
    p.add_argument("b", type=Path, help="output directory of the second run")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _cmd_phases(args: argparse.Namespace) -> int:
    from dispatch.replay.phases import compare, format_phases, order_phases

    instance = load_instance(args.instance)
    a, b = order_phases(instance, args.a), order_phases(instance, args.b)
    table = compare(a, b)
    orders = len(set(a) & set(b))
    if args.json:
        print(orjson.dumps({"orders": orders, "phases": table}).decode())
    else:
        print(format_phases(table, str(args.a.name) or "a", str(args.b.name) or "b", orders))
    return 0


def _generate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dispatch replay generate", description="Write a generated instance.")
    p.add_argument("out", type=Path, help="directory to write the instance's four files to")
    p.add_argument("--orders", type=int, default=500, help="orders in the day (500)")
    p.add_argument("--seed", type=int, default=1, help="random seed (1)")
    p.add_argument(
        "--orders-per-courier-hour", type=float, default=2.0, help="sizes the fleet (2 orders a courier-hour)"
    )
    p.add_argument(
        "--family",
        choices=FAMILIES,
        default="base",
        help="base; flat (shifts that ignore demand), slow (80%% speed), prep (20-45 min), hard (all three)",
    )
    return p


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers: the server and databases stop


def _options(args: argparse.Namespace, policy: str, server: str | None = None) -> ReplayOptions:
    if not args.speed > 0:
        raise SystemExit("--speed must be positive")
    return ReplayOptions(
        speed=args.speed,
        policy=policy,
        origin=args.origin,
        round_s=args.round_s,
        tolerance=args.tolerance,
        progress=not args.json,
        server_url=server,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    instance = load_instance(args.instance)
    opts = _options(args, args.policy, args.server)
    if args.print_env:
        for key, value in server_env(instance, opts, time.time()).items():
            print(f"export {key}={value}")
        return 0
    require_plots()
    result = run_replay(instance, opts)
    out = args.out or Path("replay-out") / f"{instance.name}-{opts.policy}"
    write_outputs(out, instance, result)
    if args.json:
        print(orjson.dumps(result.metrics).decode())
    else:
        print(summary(result.metrics))
        print(f"written to {out}/")
    return 1 if result.metrics["feasibility"]["violations"] else 0


def _cmd_compare(args: argparse.Namespace) -> int:
    instance = load_instance(args.instance)
    results: dict[str, dict[str, Any]] = {}
    if args.out is not None:
        require_plots()
    for policy in ("ours", "nearest-idle"):
        result = run_replay(instance, _options(args, policy))
        if args.out is not None:
            write_outputs(args.out / policy, instance, result)
        results[policy] = result.metrics
    if args.json:
        print(orjson.dumps(results).decode())
    else:
        walls = ", ".join(f"{p} {m['replay']['wall_seconds']:.0f} s" for p, m in results.items())
        print(f"{instance.name} at speed {args.speed:g} ({walls})")
        print(format_comparison(results))
    return 1 if any(m["feasibility"]["violations"] for m in results.values()) else 0


def _cmd_offline(args: argparse.Namespace) -> int:
    from dispatch.config import Settings
    from dispatch.core.routes import ServiceTimes
    from dispatch.replay.offline import admission, simulate_policy
    from dispatch.replay.trace import write_solution
    from dispatch.services.dispatching import params_from

    if not args.round_s > 0:
        raise SystemExit("--round-s must be positive")
    # The server's dispatch settings, as DISPATCH_* would set them, with rounds as often as offline's.
    settings = Settings.from_env().with_(dispatch_round_s=args.round_s)
    everything: dict[str, dict[str, Any]] = {}
    for directory in args.instances:
        instance = load_instance(directory)
        p = instance.parameters
        params = params_from(settings, ServiceTimes(p.pickup_service_minutes, p.dropoff_service_minutes))
        admit = admission(instance) if settings.undeliverable == "refuse" else None
        results = {}
        for policy in ("ours", "nearest-idle"):
            trace = simulate_policy(instance, policy, params, round_minutes=args.round_s / 60, admit=admit)
            results[policy] = compute_metrics(instance, trace)
            if args.out is not None:
                out = args.out / f"{instance.name}-{policy}"
                write_solution(trace, out, max_click_to_door=p.max_click_to_door)
                metrics = orjson.dumps(results[policy], option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                (out / "metrics.json").write_bytes(metrics)
        everything[instance.name] = results
        if not args.json:
            print(f"{instance.name}, offline (the dispatch core alone, rounds every {args.round_s:g} s)")
            print(format_comparison(results))
            print()
    if args.json:
        print(orjson.dumps(everything).decode())
    return 1 if any(m["feasibility"]["violations"] for r in everything.values() for m in r.values()) else 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from dispatch.replay.generate import generate_instance
    from dispatch.replay.instance import write_instance

    instance = generate_instance(
        args.orders, args.seed, orders_per_courier_hour=args.orders_per_courier_hour, family=args.family
    )
    write_instance(instance, args.out)
    print(
        f"{instance.name}: {len(instance.orders)} orders, {len(instance.restaurants)} restaurants, "
        f"{len(instance.couriers)} couriers -> {args.out}"
    )
    return 0
