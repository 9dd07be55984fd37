"""The contenders of `bench geo`: each answers "which shops deliver to (lat, lng)?" and is timed.

Every method returns a `MethodResult` with its answers (in point order), so the caller can
compare them with the oracle. Lookup loops run with the garbage collector paused (a collection
landing inside one lookup would show up as a p99 outlier that belongs to no method) and use
`time.perf_counter_ns`. The database load keeps it on, as the server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import resource
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np
import orjson
import shapely
from redis.asyncio import Redis

from dispatch.db import create_pool
from dispatch.services.hours import ALWAYS_OPEN
from dispatch.services.zone_directory import ZoneDirectory
from geo import Cover, SyntheticShop, ZoneIndex, cover_zone, haversine_m, parse_zone

Point = tuple[float, float]  # (lat, lng)
Answers = list[frozenset[str]]

REDIS_KEY = "bench:geo:shops"
REDIS_PIPELINE = 100  # GEOSEARCH commands per round trip in the throughput pass
POSTGIS_CONNECTIONS = 4  # concurrent queries in PostGIS' throughput pass (2 cores: hides round trips)
POSTGIS_TABLE = "bench_geo_zones"


@dataclass
class City:
    """The synthetic city, kept lean: no per-coordinate Python objects for the GC to walk while
    the database load is timed."""

    ids: list[str]
    locations: list[Point]
    geojson: list[str]  # zones normalised by parse_zone (a circle is its polygon), as stored
    covers: list[Cover]
    geometries: Any  # numpy object array of prepared zones, aligned with `ids`
    max_radius_m: float  # farthest zone vertex from its shop's location, over all shops


@dataclass
class MethodResult:
    name: str
    how: str = ""
    answers: Answers = field(default_factory=list)  # one set per evaluated point, in point order
    latencies_ns: list[int] = field(default_factory=list)
    lookups_per_s: float | None = None  # the best of `rates`, when there are several
    rates: dict[str, float] = field(default_factory=dict)  # lookups/s per client mode
    skipped_reason: str | None = None
    mismatches: int = 0
    # Involuntary context switches during the latency pass: on a shared machine each one can
    # land inside a lookup and inflate the tail, whatever the code does.
    preemptions: int | None = None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_city(shops: list[SyntheticShop], resolution: int) -> City:
    """Validate and cover every zone (the slow part of setting a zone, done once here)."""
    geojson, covers = [], []
    for shop in shops:
        zone = parse_zone(shop.zone)
        geojson.append(orjson.dumps(zone.geojson).decode())
        covers.append(cover_zone(zone.geometry, resolution))
    geometries = fresh_geometries(geojson)
    shapely.prepare(geometries)
    radius = 0.0
    for shop, geometry in zip(shops, geometries, strict=True):
        for lng, lat in shapely.get_coordinates(geometry).tolist():
            radius = max(radius, haversine_m(shop.lat, shop.lng, lat, lng))
    ids = [s.shop_id for s in shops]
    return City(ids, [(s.lat, s.lng) for s in shops], geojson, covers, geometries, radius)


def fresh_geometries(geojson: Sequence[str]) -> Any:
    """New, unprepared shapely geometries (numpy object array) from GeoJSON texts."""
    return shapely.from_geojson(np.array(geojson, dtype=object))


def count_mismatches(answers: Sequence[Collection[str]], expected: Sequence[frozenset[str]]) -> int:
    """Points whose answer differs from the oracle's (answers are for the first points); a shop
    listed twice is a mismatch too."""
    pairs = zip(answers, expected[: len(answers)], strict=True)
    return sum(1 for got, want in pairs if len(got) != len(want) or frozenset(got) != want)


# --- the oracle and brute force -----------------------------------------------------------


def oracle(city: City, points: Sequence[Point]) -> Answers:
    """Exact shapely containment of every point in every zone, in one batch: the STRtree only
    skips zones whose bounding box misses the point, `intersects` (boundary inside) decides."""
    lats, lngs = np.array(points).T
    pairs = shapely.STRtree(city.geometries).query(shapely.points(lngs, lats), predicate="intersects")
    order = np.lexsort((pairs[1], pairs[0]))
    point_idx, zone_idx = pairs[0][order], pairs[1][order]
    bounds = np.searchsorted(point_idx, np.arange(len(points) + 1))
    ids = np.array(city.ids, dtype=object)
    return [frozenset(ids[zone_idx[a:b]].tolist()) for a, b in itertools.pairwise(bounds)]


def run_bruteforce(city: City, points: Sequence[Point]) -> MethodResult:
    ids = np.array(city.ids, dtype=object)
    geometries = city.geometries

    def lookup(lat: float, lng: float) -> frozenset[str]:
        return frozenset(ids[shapely.intersects_xy(geometries, lng, lat)].tolist())

    answers, latencies, elapsed, switches = _time_each(lookup, points)
    return MethodResult(
        "bruteforce",
        how=f"one intersects_xy over all {len(ids)} prepared zones per point, each timed alone; "
        "lookups/s = points / loop time",
        answers=answers,
        latencies_ns=latencies,
        lookups_per_s=_rate(len(points), elapsed),
        preemptions=switches,
    )


# --- ours -------------------------------------------------------------------------------------


def build_index(city: City, resolution: int, probe: Point) -> tuple[ZoneIndex, float]:
    """A ZoneIndex from precomputed covers, and the seconds of `set_zone` for every shop plus
    one lookup: the index may defer work until its first query, which then belongs here."""
    geometries = fresh_geometries(city.geojson)  # unprepared: preparing is part of the build
    index = ZoneIndex(resolution)
    with gc_paused():
        started = time.perf_counter_ns()
        for shop_id, geometry, cover, location in zip(
            city.ids, geometries, city.covers, city.locations, strict=True
        ):
            index.set_zone(shop_id, geometry, cover=cover, location=location)
        index.shops_delivering_to(*probe)
        elapsed = time.perf_counter_ns() - started
    return index, elapsed / 1e9


def run_ours(index: ZoneIndex, points: Sequence[Point]) -> tuple[MethodResult, MethodResult]:
    """(warm result, cold first pass). The index compiles a cell on its first query, so the
    first pass is timed and reported apart; the figures compared are from later passes."""
    _, cold_latencies, cold_elapsed, _ = _time_each(index.shops_delivering_to, points)
    cold = MethodResult(
        "zoneindex_cold", latencies_ns=cold_latencies, lookups_per_s=_rate(len(points), cold_elapsed)
    )
    lookup = index.shops_delivering_to
    with gc_paused():
        started = time.perf_counter_ns()
        results = [lookup(lat, lng) for lat, lng in points]
        elapsed = time.perf_counter_ns() - started
    _, latencies, _, switches = _time_each(lookup, points)
    warm = MethodResult(
        "zoneindex",
        how="lookups/s: one tight loop over all points, one thread; latency: each call timed "
        "alone on another pass; both after a first pass that compiled every visited cell",
        answers=[frozenset(r) for r in results],
        latencies_ns=latencies,
        lookups_per_s=_rate(len(points), elapsed),
        preemptions=switches,
    )
    # Keep duplicates visible to count_mismatches: a frozenset would hide them.
    warm.mismatches = sum(1 for r in results if len(r) != len(set(r)))
    return warm, cold


def _time_each(fn: Callable[[float, float], Any], points: Sequence[Point]) -> tuple[Any, list[int], int, int]:
    """(answers, latency of each call, total ns, involuntary context switches meanwhile)."""
    clock = time.perf_counter_ns
    answers, latencies = [], []
    with gc_paused():
        switches = _preemptions()
        started = clock()
        for lat, lng in points:
            t0 = clock()
            answers.append(fn(lat, lng))
            latencies.append(clock() - t0)
        elapsed = clock() - started
        switches = _preemptions() - switches
    return answers, latencies, elapsed, switches


def _preemptions() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def _best(result: MethodResult) -> MethodResult:
    """Credit the competitor with its faster client mode: the ratios must not flatter ours."""
    result.lookups_per_s = max(result.rates.values())
    return result


def timer_overhead_ns(n: int = 10_000) -> float:
    """Median cost of an empty timed region: part of every per-lookup latency reported."""
    clock = time.perf_counter_ns
    samples = []
    with gc_paused():
        for _ in range(n):
            t0 = clock()
            samples.append(clock() - t0)
    return float(np.median(samples))


def _rate(n: int, elapsed_ns: int) -> float:
    return n / (elapsed_ns / 1e9) if elapsed_ns > 0 else float("inf")


# --- PostgreSQL: store the city, load it back the way a starting node does ------------------


async def store_city(url: str, city: City) -> None:
    """Bulk COPY into `shops` and `shop_covers`, the same columns `shops.create` writes."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            hours = orjson.dumps(ALWAYS_OPEN).decode()
            await conn.copy_records_to_table(
                "shops",
                columns=["id", "name", "lat", "lng", "zone", "opening_hours"],
                records=[
                    (shop_id, shop_id, lat, lng, zone, hours)
                    for shop_id, (lat, lng), zone in zip(city.ids, city.locations, city.geojson, strict=True)
                ],
            )
            await conn.copy_records_to_table(
                "shop_covers",
                columns=["shop_id", "resolution", "interior", "edge", "zone_wkb"],
                records=[
                    (shop_id, c.resolution, sorted(c.interior), sorted(c.edge), shapely.to_wkb(g))
                    for shop_id, c, g in zip(city.ids, city.covers, city.geometries, strict=True)
                ],
            )
        await conn.execute("ANALYZE shops; ANALYZE shop_covers")
    finally:
        await conn.close()


async def load_from_db(url: str, resolution: int, runs: int, probe: Point) -> tuple[list[float], ZoneIndex]:
    """Seconds of each `ZoneDirectory.load_all` (the server's start-up path) plus its index's
    first lookup (as in `build_index`), and the last index loaded. The garbage collector stays
    on, as in the server: decoding the zones' JSON makes millions of objects, and the
    collections they trigger are part of the real cost."""
    pool = await create_pool(url, 1, 2)
    try:
        directory = ZoneDirectory(pool, resolution)
        seconds = []
        for _ in range(runs):
            directory.index = ZoneIndex(resolution)  # the previous run's index is garbage
            gc.collect()
            started = time.perf_counter_ns()
            await directory.load_all()
            directory.index.shops_delivering_to(*probe)
            seconds.append((time.perf_counter_ns() - started) / 1e9)
        return seconds, directory.index
    finally:
        await pool.close()


# --- Redis GEOSEARCH + exact filter -----------------------------------------------------------


async def run_redis(url: str, city: City, points: Sequence[Point]) -> MethodResult:
    # Redis measures with its own earth radius on 52-bit geohashes (~0.6 m): pad the radius so
    # no shop is dropped; the exact filter removes the extra candidates anyway.
    radius = city.max_radius_m * 1.005 + 10.0
    position = {shop_id: i for i, shop_id in enumerate(city.ids)}
    ids = np.array(city.ids, dtype=object)
    geometries = city.geometries

    def exact(members: list[str], lat: float, lng: float) -> frozenset[str]:
        idx = np.fromiter(map(position.__getitem__, members), dtype=np.intp, count=len(members))
        return frozenset(ids[idx[shapely.intersects_xy(geometries[idx], lng, lat)]].tolist())

    client = Redis.from_url(url, decode_responses=True)
    try:
        await client.delete(REDIS_KEY)
        pipe = client.pipeline(transaction=False)
        for shop_id, (lat, lng) in zip(city.ids, city.locations, strict=True):
            pipe.geoadd(REDIS_KEY, (lng, lat, shop_id))
        await pipe.execute()

        def search(target: Any, lat: float, lng: float) -> Any:
            return target.geosearch(
                REDIS_KEY, longitude=lng, latitude=lat, radius=radius, unit="m", sort="ASC"
            )

        clock = time.perf_counter_ns
        latencies = []
        with gc_paused():
            switches = _preemptions()
            started = clock()
            for lat, lng in points:
                t0 = clock()
                exact(await search(client, lat, lng), lat, lng)
                latencies.append(clock() - t0)
            sequential = clock() - started
            switches = _preemptions() - switches
        answers: Answers = []
        with gc_paused():
            started = clock()
            for start in range(0, len(points), REDIS_PIPELINE):
                batch = points[start : start + REDIS_PIPELINE]
                pipe = client.pipeline(transaction=False)
                for lat, lng in batch:
                    search(pipe, lat, lng)
                replies = await pipe.execute()
                answers.extend(exact(m, lat, lng) for m, (lat, lng) in zip(replies, batch, strict=True))
            elapsed = clock() - started
        await client.delete(REDIS_KEY)
    finally:
        await client.aclose()
    return _best(
        MethodResult(
            "redis_geosearch",
            how=f"GEOSEARCH BYRADIUS {radius:.0f} m ASC, then intersects_xy on the candidates' "
            "prepared zones, redis-py asyncio; latency: one query at a time (round trip + filter), "
            f"timed alone; lookups/s: the better of that loop and pipelines of {REDIS_PIPELINE} "
            "on one connection",
            answers=answers,
            latencies_ns=latencies,
            preemptions=switches,
            rates={
                "one_at_a_time": _rate(len(points), sequential),
                f"pipelined_{REDIS_PIPELINE}": _rate(len(points), elapsed),
            },
        )
    )


# --- PostGIS ST_Covers --------------------------------------------------------------------------

_POSTGIS_QUERY = f"""SELECT shop_id FROM {POSTGIS_TABLE}
                     WHERE ST_Covers(geom, ST_SetSRID(ST_MakePoint($1, $2), 4326))"""


async def run_postgis(url: str, city: City, points: Sequence[Point]) -> MethodResult:
    """ST_Covers (boundary inside, the index's rule; ST_Contains would drop boundary points)
    on a GiST-indexed scratch table, dropped afterwards."""
    try:
        pool = await asyncpg.create_pool(url, min_size=POSTGIS_CONNECTIONS, max_size=POSTGIS_CONNECTIONS)
    except (OSError, asyncpg.PostgresError) as exc:
        return MethodResult("postgis", skipped_reason=f"cannot connect to --postgis-url: {exc}")
    assert pool is not None
    try:
        try:
            await _postgis_load(pool, city)
        except asyncpg.PostgresError as exc:
            return MethodResult("postgis", skipped_reason=f"cannot set up PostGIS: {exc}")
        clock = time.perf_counter_ns
        latencies = []
        async with pool.acquire() as conn:
            stmt = await conn.prepare(_POSTGIS_QUERY)
            with gc_paused():
                switches = _preemptions()
                started = clock()
                for lat, lng in points:
                    t0 = clock()
                    await stmt.fetch(lng, lat)
                    latencies.append(clock() - t0)
                sequential = clock() - started
                switches = _preemptions() - switches
        answers: Answers = [frozenset()] * len(points)

        async def worker(part: range) -> None:
            async with pool.acquire() as conn:
                stmt = await conn.prepare(_POSTGIS_QUERY)
                for i in part:
                    lat, lng = points[i]
                    answers[i] = frozenset(r[0] for r in await stmt.fetch(lng, lat))

        parts = [range(k, len(points), POSTGIS_CONNECTIONS) for k in range(POSTGIS_CONNECTIONS)]
        with gc_paused():
            started = clock()
            await asyncio.gather(*(worker(part) for part in parts))
            elapsed = clock() - started
        await pool.execute(f"DROP TABLE IF EXISTS {POSTGIS_TABLE}")
    finally:
        await pool.close()
    return _best(
        MethodResult(
            "postgis",
            how="ST_Covers on a GiST index, asyncpg prepared statement; latency: one query at a time "
            f"on one connection, timed alone; lookups/s: the better of that loop and "
            f"{POSTGIS_CONNECTIONS} connections querying concurrently",
            answers=answers,
            latencies_ns=latencies,
            preemptions=switches,
            rates={
                "one_at_a_time": _rate(len(points), sequential),
                f"concurrent_{POSTGIS_CONNECTIONS}": _rate(len(points), elapsed),
            },
        )
    )


async def _postgis_load(pool: asyncpg.Pool, city: City) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        await conn.execute(
            f"""DROP TABLE IF EXISTS {POSTGIS_TABLE};
                CREATE TABLE {POSTGIS_TABLE} (shop_id text PRIMARY KEY, geom geometry NOT NULL)"""
        )
        await conn.executemany(
            f"INSERT INTO {POSTGIS_TABLE} VALUES ($1, ST_SetSRID(ST_GeomFromGeoJSON($2), 4326))",
            list(zip(city.ids, city.geojson, strict=True)),
        )
        await conn.execute(f"CREATE INDEX ON {POSTGIS_TABLE} USING gist (geom); ANALYZE {POSTGIS_TABLE}")
