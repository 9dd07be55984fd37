"""`python -m dispatch bench faults`: real faults under load, and what they cost.

Three `dispatch serve` processes share one PostgreSQL and one Redis (real servers this command starts, stops,
crashes and restarts); a city's apps run against them (`fault_load.py`). Each scenario runs the load, injects
one fault, lets it recover, and then checks the record against PostgreSQL: orders answered 2xx but missing,
orders duplicated, jobs accepted twice or on two routes, stock not conserved, gaps in the outbox, gaps,
duplicates or missing events in any app's stream, 5xx answers by code (503 without Retry-After counted
apart), work given back by a staleness that was only Redis's, deadlocks, and how soon service came back.
`tests/faults` runs the same scenarios, shorter, and asserts the zeros.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from dispatch.auth import Role
from dispatch.bench.fault_load import STOCK, City, Load, seed_city
from dispatch.bench.harness import SECRET, offset, token
from dispatch.bench.stack import ManagedPostgres, ManagedRedis, Node, nodes, percentile
from dispatch.db import connect
from dispatch.migrate import migrate_url, recreate_database

DATABASE = "dispatch"
NODE_ENV = {
    "DISPATCH_SECRET": SECRET,
    "DISPATCH_LOG_LEVEL": "WARNING",
    "DISPATCH_LOG_FORMAT": "json",
    "DISPATCH_ROUND_S": "1",
    "DISPATCH_DEFER_WAIT_MIN": "inf",  # place work as soon as it is accepted: more routes to disturb
    "DISPATCH_DB_POOL_MIN": "2",
    "DISPATCH_DB_POOL_MAX": "8",
    "DISPATCH_OFFER_TIMEOUT": "20",
    "DISPATCH_STARTUP_TIMEOUT": "60",
    "DISPATCH_WORKERS": "1",
}


@dataclass
class FaultStack:
    root: Path
    pg: ManagedPostgres
    redis: ManagedRedis
    nodes: list[Node]
    database_url: str
    city: City

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]


@contextlib.contextmanager
def fault_stack(
    node_count: int = 3, shops: int = 36, residents: int = 20, couriers: int = 12, root: Path | None = None
) -> Iterator[FaultStack]:
    """PostgreSQL, Redis, a seeded city and `node_count` servers; everything removed afterwards."""
    base = root or Path(tempfile.mkdtemp(prefix="dispatch-faults-"))
    pg, redis = ManagedPostgres(base / "postgres"), ManagedRedis(base / "redis")
    servers: list[Node] = []
    try:
        pg.init()
        pg.start()
        redis.start()
        database_url = asyncio.run(recreate_database(pg.url, DATABASE))
        asyncio.run(migrate_url(database_url))
        city = asyncio.run(seed_city(database_url, shops, residents, couriers))
        env = {**NODE_ENV, "DATABASE_URL": database_url, "REDIS_URL": redis.url}
        servers = nodes(base / "nodes", node_count, env)
        for node in servers:
            node.start(wait=False)
        for node in servers:
            node.wait_ready()
        yield FaultStack(base, pg, redis, servers, database_url, city)
    finally:
        for node in servers:
            node.stop()
        redis.destroy()
        pg.destroy()
        if root is None:
            shutil.rmtree(base, ignore_errors=True)


# --- faults: blocking, run in a thread while the load goes on ------------------------------------------


@dataclass
class Fault:
    name: str
    inject: Callable[[FaultStack], None]  # returns when the fault is over (the dependency is back)
    seconds: float


def postgres_down(seconds: float, mode: str) -> Fault:
    def inject(stack: FaultStack) -> None:
        stack.pg.stop(mode)
        time.sleep(seconds)
        stack.pg.start()

    name = "postgres_crash" if mode == "immediate" else "postgres_stop"
    return Fault(name, inject, seconds)


def redis_down(seconds: float) -> Fault:
    def inject(stack: FaultStack) -> None:
        stack.redis.stop()
        time.sleep(seconds)
        stack.redis.start()  # empty: positions, presence and scripts are gone

    return Fault("redis_restart", inject, seconds)


def _hung(
    name: str, dependency: Callable[[FaultStack], ManagedPostgres | ManagedRedis], seconds: float
) -> Fault:
    """The dependency stops answering without refusing (SIGSTOP: a partition, a paused machine), then carries
    on with everything it held: the clients' commands wait rather than fail."""

    def inject(stack: FaultStack) -> None:
        paused = dependency(stack)
        paused.pause()
        try:
            time.sleep(seconds)
        finally:
            paused.resume()

    return Fault(name, inject, seconds)


def postgres_hung(seconds: float) -> Fault:
    """SIGSTOP on the server and its backends."""
    return _hung("postgres_hang", lambda stack: stack.pg, seconds)


def redis_hung(seconds: float) -> Fault:
    return _hung("redis_hang", lambda stack: stack.redis, seconds)


def node_killed(seconds: float, index: int = 1) -> Fault:
    def inject(stack: FaultStack) -> None:
        node = stack.nodes[index]
        node.kill()
        time.sleep(seconds)
        node.start(wait=False)

    return Fault("node_sigkill", inject, seconds)


# --- a run ---------------------------------------------------------------------------------------------


@dataclass
class Marks:
    start_wall: float = 0.0  # epoch seconds the load began (for PostgreSQL-side filters)
    fault_start: float = 0.0  # monotonic
    fault_end: float = 0.0
    deadlocks_before: int = 0
    node_ready_s: float | None = None
    probe: dict[str, Any] = field(default_factory=dict)


async def run_fault(
    stack: FaultStack, fault: Fault | None, *, rate: float = 20.0, warmup: float = 2.0, recovery: float = 4.0
) -> dict[str, Any]:
    """The load for warmup + fault + recovery seconds, the fault in the middle, then the checks."""
    marks = Marks(start_wall=time.time(), deadlocks_before=stack.pg.deadlocks_logged())
    load = Load(stack.urls, stack.city, seed=random.randrange(1 << 30))
    await load.start()
    try:
        assert load.residents is not None
        fault_s = fault.seconds if fault else 0.0
        driving = asyncio.create_task(load.residents.drive(rate, warmup + fault_s + recovery))
        await asyncio.sleep(warmup)
        marks.fault_start = time.monotonic()
        if fault is not None:
            await asyncio.to_thread(fault.inject, stack)
        marks.fault_end = time.monotonic()
        if fault is not None and fault.name == "node_sigkill":
            marks.node_ready_s = await asyncio.to_thread(stack.nodes[1].wait_ready)
        await driving
        await load.drain()
        marks.probe = await _probe(stack, load, marks.fault_start)
        return await check(stack, load, marks, fault.name if fault else "none")
    finally:
        await load.stop()


async def _probe(stack: FaultStack, load: Load, before: float) -> dict[str, Any]:
    """A resident connected since before the fault orders now: how soon does its stream show it?"""
    app = next(
        (a for a in load.resident_apps if a.continuous_since is not None and a.continuous_since < before),
        None,
    )
    if app is None:
        return {"resident": None}
    assert load.residents is not None and load.session is not None
    seen = app.stream.last_seq
    body = load.residents.body("probe")
    headers = {"Authorization": f"Bearer {token(Role.RESIDENT, app.subject)}"}
    sent = time.monotonic()
    async with load.session.post(stack.urls[0] + "/v1/orders", json=body, headers=headers) as resp:
        status = resp.status
    arrived = await app.reached(seen + 1, 10.0)
    return {
        "resident": app.subject,
        "status": status,
        "stayed_connected": app.stream.disconnects == 0,
        "event_after_s": round(time.monotonic() - sent, 3) if arrived else None,
    }


async def check(stack: FaultStack, load: Load, marks: Marks, name: str) -> dict[str, Any]:
    out = load.outcomes()
    conn = await connect(stack.database_url)
    try:
        # Every app should catch up with what PostgreSQL holds for it now.
        goal = {
            r["recipient"]: r["last_seq"]
            for r in await conn.fetch(
                "SELECT recipient, last_seq FROM recipient_seqs WHERE recipient = ANY ($1::text[])",
                [a.subject for a in load.apps],
            )
        }
        await asyncio.gather(*(a.reached(goal.get(a.subject, 0), 15.0) for a in load.apps))
        missing = sum(max(0, goal.get(a.subject, 0) - a.stream.last_seq) for a in load.apps)
        ok_ids = list(out.orders_ok.values())
        found = await conn.fetchval("SELECT count(*) FROM orders WHERE id = ANY ($1::text[])", ok_ids)
        duplicated = await conn.fetchval(
            """SELECT coalesce(sum(n - 1), 0)::int FROM (SELECT count(*) AS n FROM orders
               WHERE note = ANY ($1::text[]) GROUP BY note) t""",
            out.keys,
        )
        double_accepts = await conn.fetchval(
            """SELECT count(*) FROM (SELECT payload->>'id' FROM events WHERE type = 'job.accepted'
               GROUP BY 1 HAVING count(*) > 1) t"""
        )
        on_two_routes = await conn.fetchval(
            """SELECT count(*) FROM (
                 SELECT j FROM stops s JOIN routes r ON r.id = s.route_id, unnest(s.job_ids) AS j
                 WHERE r.state IN ('offered', 'active') AND s.state IN ('pending', 'arrived')
                 GROUP BY j HAVING count(DISTINCT r.id) > 1) t"""
        )
        stock_off = await stock_lines_off(conn)
        outbox_gaps = await conn.fetchval(
            """SELECT count(*) FROM (SELECT recipient, count(*) AS n, max(seq) AS m FROM events
                                     GROUP BY recipient) e
               JOIN recipient_seqs s USING (recipient) WHERE e.n <> e.m OR e.m <> s.last_seq"""
        )
        given_back = await conn.fetchval(
            "SELECT coalesce(sum(released), 0)::int FROM dispatch_rounds WHERE at >= to_timestamp($1)",
            marks.start_wall,
        )
        routes = await conn.fetchval(
            "SELECT count(*) FROM routes WHERE offered_at >= to_timestamp($1)", marks.start_wall
        )
    finally:
        await conn.close()
    five_xx = {k: v for k, v in out.statuses.items() if k[:1] == "5"}
    pings: Counter[str] = sum((c.unanswered_errors for c in load.couriers), Counter())
    return {
        "fault": name,
        "orders_sent": out.orders_sent,
        "orders_2xx": len(out.orders_ok),
        "orders_refused": dict(out.orders_failed),
        "lost": len(ok_ids) - found,
        "duplicated": duplicated,
        "double_accepts": double_accepts,
        "jobs_on_two_routes": on_two_routes,
        "stock_lines_off": stock_off,
        "outbox_gaps": outbox_gaps,
        "stream_gaps": sum(a.stream.gaps for a in load.apps),
        "stream_duplicates": sum(a.stream.duplicates for a in load.apps),
        "stream_missing": missing,
        "disconnects": sum(a.stream.disconnects for a in load.apps),
        "http_5xx": five_xx,
        "http_500": sum(v for k, v in five_xx.items() if not k.startswith("503")),
        "unavailable_without_retry_after": out.unavailable_without_retry_after,
        "ws_errors": dict(out.ws_errors),
        "ws_internal": out.ws_errors.get("internal", 0) + pings.get("internal", 0),
        "ping_errors": dict(pings),
        "accepts": out.accepts,
        "rejects": out.rejects,
        "routes_made": routes,
        "jobs_given_back": given_back,
        "deadlocks": stack.pg.deadlocks_logged() - marks.deadlocks_before,
        "node_ready_s": None if marks.node_ready_s is None else round(marks.node_ready_s, 2),
        "probe": marks.probe,
        "order_p99_during_fault_ms": _p99_ms(
            [lat for sent, lat in out.ok_times if marks.fault_start <= sent < marks.fault_end]
        ),
        # The longest an order request sent during the fault waited for any answer (its 2xx, or a 503).
        "order_wait_max_during_fault_ms": _max_ms(
            [lat for sent, lat in out.answer_times if marks.fault_start <= sent < marks.fault_end]
        ),
        **_recovery(out.ok_times, marks.fault_end),
    }


def _max_ms(latencies_s: list[float]) -> float | None:
    return round(max(latencies_s) * 1000, 1) if latencies_s else None


def _p99_ms(latencies_s: list[float]) -> float | None:
    """How long the requests that got their 2xx took, of those sent while the fault lasted."""
    p99 = percentile(latencies_s, 0.99)
    return None if p99 is None else round(p99 * 1000, 1)


async def stock_lines_off(conn: asyncpg.Connection) -> int:
    """Catalogue lines whose stock plus what live jobs hold is not what they started with (conservation)."""
    off: int = await conn.fetchval(
        """WITH held AS (
             SELECT j.shop_id, l->>'sku' AS sku, sum((l->>'qty')::int) AS qty
             FROM jobs j, jsonb_array_elements(j.lines) AS l
             WHERE j.state IN ('offered', 'accepted', 'ready', 'picked_up', 'delivered')
             GROUP BY 1, 2)
           SELECT count(*) FROM catalogue_items c LEFT JOIN held h USING (shop_id, sku)
           WHERE c.stock + coalesce(h.qty, 0) <> $1""",
        STOCK,
    )
    return off


def _recovery(ok_times: list[tuple[float, float]], fault_end: float) -> dict[str, float | None]:
    """Seconds from the fault's end to the first 2xx, and until p99 latency stays under 1 s (by the second
    in which requests were sent)."""
    done_after = [sent + lat - fault_end for sent, lat in ok_times if sent + lat >= fault_end]
    buckets: dict[int, list[float]] = {}
    for sent, lat in ok_times:
        if sent >= fault_end:
            buckets.setdefault(int(sent - fault_end), []).append(lat)
    settled = None
    for second in sorted(buckets, reverse=True):
        p99 = percentile(buckets[second], 0.99)
        if p99 is None or p99 >= 1.0:
            break
        settled = float(second)
    return {
        "first_2xx_after_s": round(min(done_after), 3) if done_after else None,
        "p99_under_1s_after_s": settled,
    }


# --- the lock-order workload ---------------------------------------------------------------------------


async def run_lock_order(
    stack: FaultStack, orders: int = 300, in_flight: int = 32, lines: int = 4, seed: int = 1
) -> dict[str, Any]:
    """Orders pinning `lines` (shop, sku) lines each, in random order, `in_flight` at a time, half of them
    then cancelled concurrently: reservations and releases contend on the same rows."""
    rng = random.Random(seed)
    shops = [s[0] for s in stack.city.shops[:6]]
    skus = ["milk", "bread", "eggs", "apples"]
    load = Load(stack.urls, stack.city, seed=seed)
    deadlocks_before = stack.pg.deadlocks_logged()
    await load.start()
    try:
        assert load.residents is not None and load.session is not None
        session = load.session
        gate = asyncio.Semaphore(in_flight)
        lat, lng = offset(0, 0)

        def body(rng: random.Random) -> dict[str, Any]:
            pairs = rng.sample([(s, k) for s in shops for k in skus], lines)
            return {
                "dropoff": {"lat": lat, "lng": lng},
                "items": [{"sku": k, "qty": 1, "shop_id": s} for s, k in pairs],
            }

        async def one(n: int) -> None:
            async with gate:
                resident = rng.choice(stack.city.residents)
                await load.residents.place(resident, f"lock-{seed}-{n}", body(rng))  # type: ignore[union-attr]

        await asyncio.gather(*(one(n) for n in range(orders)))
        placed = list(load.residents.outcomes.orders_ok.values())
        cancels: Counter[str] = Counter()

        async def cancel(order_id: str) -> None:
            async with gate:
                conn = await connect(stack.database_url)
                try:
                    resident = await conn.fetchval("SELECT resident_id FROM orders WHERE id = $1", order_id)
                finally:
                    await conn.close()
                headers = {"Authorization": f"Bearer {token(Role.RESIDENT, resident)}"}
                url = rng.choice(stack.urls) + f"/v1/orders/{order_id}/cancel"
                async with session.post(url, headers=headers) as resp:
                    payload = await resp.json()
                    code = payload["error"]["code"] if resp.status >= 400 else ""
                    cancels[f"{resp.status} {code}".strip()] += 1

        await asyncio.gather(*(cancel(o) for o in rng.sample(placed, len(placed) // 2)))
        out = load.outcomes()
        conn = await connect(stack.database_url)
        try:
            stock_off = await stock_lines_off(conn)
        finally:
            await conn.close()
        return {
            "fault": "lock_order",
            "orders_sent": out.orders_sent,
            "orders_2xx": len(out.orders_ok),
            "statuses": dict(out.statuses),
            "cancels": dict(cancels),
            "stock_lines_off": stock_off,
            "deadlocks": stack.pg.deadlocks_logged() - deadlocks_before,
        }
    finally:
        await load.stop()


# --- the command ---------------------------------------------------------------------------------------


def register(kinds: Any) -> None:
    p = kinds.add_parser("faults", help="PostgreSQL, Redis and node faults under load: losses and recovery")
    p.add_argument("--rate", type=float, default=40.0, help="orders per second during each scenario")
    p.add_argument("--outage", type=float, default=5.0, help="seconds each dependency stays down")
    p.add_argument("--recovery", type=float, default=10.0, help="seconds of load after each fault")
    p.add_argument("--lock-orders", type=int, default=1000, help="orders in the lock-order workload")
    p.add_argument(
        "--only",
        nargs="*",
        help="scenarios to run (postgres_stop postgres_crash postgres_hang redis_restart redis_hang "
        "node_sigkill lock_order); default all",
    )
    p.add_argument("--dir", help="keep the servers' data and logs here (default: a temporary dir, removed)")
    p.set_defaults(func=cmd_bench_faults)


def cmd_bench_faults(args: argparse.Namespace) -> int:
    faults = [
        postgres_down(args.outage, "fast"),
        postgres_down(args.outage, "immediate"),
        postgres_hung(args.outage),
        redis_down(args.outage),
        redis_hung(args.outage),
        node_killed(args.outage),
    ]
    chosen = set(args.only or [f.name for f in faults] + ["lock_order"])
    rows = []
    with fault_stack(root=Path(args.dir) if args.dir else None) as stack:
        for fault in faults:
            if fault.name in chosen:
                print(f"{fault.name} ...", flush=True)
                rows.append(asyncio.run(run_fault(stack, fault, rate=args.rate, recovery=args.recovery)))
        if "lock_order" in chosen:
            print("lock_order ...", flush=True)
            rows.append(asyncio.run(run_lock_order(stack, orders=args.lock_orders)))
    print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    return 0
