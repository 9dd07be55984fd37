"""Couriers' live state in Redis: the latest position (never a PostgreSQL write per ping), who may see it,
and a cache of each courier's remaining stops for cheap ETA checks.

Keys (all expire; PostgreSQL stays the truth for everything that matters):
  courier:loc:{id}    hash: lat lng acc at cell flagged; tlat tlng tacc tat (the last trusted fix); pub
                      (times in integer milliseconds, so "once a second" compares exactly)
  courier:aud:{id}    hash: stop id -> "recipient|json fields": who sees this courier now, and for which stop
  share:ended:{stop}  tombstone: sharing for that stop is over, so a late grant cannot reopen it
  courier:plan:{id}   JSON: remaining stops with their ETAs (a pre-filter; PostgreSQL decides)
  dispatch:live:since the server-clock millisecond from which this Redis's live state can be trusted

Losing Redis (a restart, a failover, an outage) loses positions or stops couriers from pinging: that says
nothing about the couriers. So `since` is set when a node first finds it missing (Redis came back empty) and
moved to "now" whenever a node sees Redis return after failing; a courier is stale only when silent for
`DISPATCH_COURIER_STALE_S` after both its last ping and `since`.

A ping is one Lua script: compare with the previous fix, flag an implausible jump, store, and publish the
position on the live channel of everyone in the audience (at most once a second). Scripts of concurrent
pings are sent in one pipeline by a single writer task, so a busy node pays one round trip per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from h3.api import basic_int as h3
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from dispatch.clock import Clock
from dispatch.errors import ServiceUnavailable
from dispatch.redis_link import answered_within
from websocket.protocol import LIVE_CHANNEL

log = logging.getLogger(__name__)

CELL_RESOLUTION = 8  # ~0.7 km² cells: the dispatch round looks for couriers in rings of these
LOCATION_TTL_S = 3600  # wall-clock garbage collection only; staleness is judged on the server's clock
AUDIENCE_TTL_S = 24 * 3600
SHARE_GAP_MS = 1000  # positions reach the audience at most once a second
MAX_BATCH = 100
# A ping waits this long at most for Redis, then is answered 503: a Redis that stops answering (rather than
# refusing) would otherwise hold it through the client's timeouts and reconnects (over a minute). Pings
# given up on are not sent; beyond MAX_QUEUED waiting, new ones are refused at once.
PING_WAIT_S = 2.0
MAX_QUEUED = 50_000
# Every other call waits this long at most: reads of positions answer 503, and a change that reads or revokes
# inside its PostgreSQL transaction gives up (rolled back) instead of holding its row locks for a minute.
CALL_WAIT_S = 3.0

_HAVERSINE = """
local function metres(lat1, lng1, lat2, lng2)
  local r = math.pi / 180
  local a = math.sin((lat2 - lat1) * r / 2)
  local b = math.sin((lng2 - lng1) * r / 2)
  local h = a * a + math.cos(lat1 * r) * math.cos(lat2 * r) * b * b
  if h > 1 then h = 1 end
  return 2 * 6371008.8 * math.asin(math.sqrt(h))
end
"""

# Every ping of a batch in one call (a busy node pays one command, not one per ping). ARGV: max speed (m/s),
# location ttl (s), share gap (ms), the live channel, then the pings, one a line, tab-separated:
# courier id, lat, lng, accuracy, at (ms), cell, want plan (1/0), the position's JSON fields; then now (ms).
# Returns a first line, 1 if `since` was missing (Redis lost its state: this call set it) else 0, then one
# line per ping: status, how many it was shared with, the cached plan (or nothing). Key names are built
# here from the courier id: the project runs one Redis, not a cluster.
PINGS_SCRIPT = (
    _HAVERSINE
    + r"""
local function split(text, sep)
  local parts, i = {}, 1
  while true do
    local j = string.find(text, sep, i, true)
    if not j then parts[#parts + 1] = string.sub(text, i); return parts end
    parts[#parts + 1] = string.sub(text, i, j - 1)
    i = j + 1
  end
end

local max_speed, ttl, gap, channel = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local live = {}  -- "recipient<TAB>message" lines, published together at the end

local function ping(id, slat, slng, sacc, sat, cell, want_plan, fields)
  local loc = 'courier:loc:' .. id
  local prev = redis.call('HMGET', loc, 'at', 'tlat', 'tlng', 'tat', 'tacc', 'pub')
  local lat, lng, acc, at = tonumber(slat), tonumber(slng), tonumber(sacc), tonumber(sat)
  if prev[1] and at <= tonumber(prev[1]) then return 'ignored\t0\t' end
  local flagged = 0
  if prev[2] then
    -- Faster than a courier can go, even granting both fixes their accuracy: do not trust it.
    local moved = metres(tonumber(prev[2]), tonumber(prev[3]), lat, lng) - acc - tonumber(prev[5])
    if moved > max_speed * (at - tonumber(prev[4])) / 1000 then flagged = 1 end
  end
  redis.call('HSET', loc, 'lat', slat, 'lng', slng, 'acc', sacc, 'at', sat, 'cell', cell, 'flagged', flagged)
  local shared = 0
  if flagged == 0 then
    redis.call('HSET', loc, 'tlat', slat, 'tlng', slng, 'tacc', sacc, 'tat', sat)
    if at - tonumber(prev[6] or '-1e300') >= gap then
      for _, entry in ipairs(redis.call('HVALS', 'courier:aud:' .. id)) do
        local bar = string.find(entry, '|', 1, true)
        live[#live + 1] = string.sub(entry, 1, bar - 1) .. '\t'
          .. '{"type":"courier.position","data":{' .. string.sub(entry, bar + 1) .. fields .. '}}'

        shared = shared + 1
      end
      redis.call('HSET', loc, 'pub', sat)
    end
  end
  redis.call('EXPIRE', loc, ttl)
  local plan = ''
  if want_plan == '1' then plan = redis.call('GET', 'courier:plan:' .. id) or '' end
  return (flagged == 1 and 'flagged' or 'stored') .. '\t' .. shared .. '\t' .. plan
end

local out = {'0'}
if redis.call('EXISTS', 'dispatch:live:since') == 0 then
  redis.call('SET', 'dispatch:live:since', ARGV[6])
  out[1] = '1'
end
for n, line in ipairs(split(ARGV[5], '\n')) do
  out[n + 1] = ping(unpack(split(line, '\t')))
end
if #live > 0 then redis.call('PUBLISH', channel, table.concat(live, '\n')) end
return table.concat(out, '\n')
"""
)

# KEYS: (audience, tombstone) pairs. ARGV: ttl, then (stop id, entry) pairs. A grant after its stop's
# tombstone is refused, so a late grant cannot reopen a share that ended.
GRANT_SCRIPT = """
local granted = 0
for k = 1, #KEYS / 2 do
  if redis.call('EXISTS', KEYS[2 * k]) == 0 then
    redis.call('HSET', KEYS[2 * k - 1], ARGV[2 * k], ARGV[2 * k + 1])
    redis.call('EXPIRE', KEYS[2 * k - 1], ARGV[1])
    granted = granted + 1
  end
end
return granted
"""

# KEYS: location keys. ARGV: now (ms). One packed string back: `since` (after a '!' if it was missing: Redis
# lost its state and this call set it), then ';' between couriers and ',' between fields: thousands of
# positions cost one reply to parse instead of ten per courier.
POSITIONS_SCRIPT = """
local since = redis.call('GET', 'dispatch:live:since')
local mark = ''
if not since then
  since = ARGV[1]
  redis.call('SET', 'dispatch:live:since', since)
  mark = '!'
end
local out = {mark .. since}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'lat', 'lng', 'acc', 'at', 'cell', 'flagged',
                       'tlat', 'tlng', 'tacc', 'tat')
  for j = 1, 10 do if not v[j] then v[j] = '' end end
  out[i + 1] = table.concat(v, ',')
end
return table.concat(out, ';')
"""

# KEYS: location keys. ARGV: now (ms), stale (ms). How many of the couriers have been silent longer than
# `stale`, counting from their last ping or from `since` (when this Redis's live state became trustworthy),
# the later: `Positions.silent` for a whole fleet, without shipping every position to the server.
SILENT_SCRIPT = """
local now = tonumber(ARGV[1])
local since = tonumber(redis.call('GET', 'dispatch:live:since') or ARGV[1])
local cutoff = now - tonumber(ARGV[2])
local silent = 0
for _, key in ipairs(KEYS) do
  local at = tonumber(redis.call('HGET', key, 'at') or '-1e300')
  if math.max(at, since) < cutoff then silent = silent + 1 end
end
return silent
"""

# ARGV: now (ms). Live state is trusted from now on, unless it already was from later.
SINCE_SCRIPT = """
local since = tonumber(redis.call('GET', 'dispatch:live:since') or '-1')
if since < tonumber(ARGV[1]) then redis.call('SET', 'dispatch:live:since', ARGV[1]) end
return 1
"""

# KEYS: plan keys. ARGV: ttl, 'NX' (only where none is cached) or '' (always), then one value per key.
SET_PLANS_SCRIPT = """
for i, key in ipairs(KEYS) do
  if ARGV[2] == 'NX' then
    redis.call('SET', key, ARGV[i + 2], 'EX', ARGV[1], 'NX')
  else
    redis.call('SET', key, ARGV[i + 2], 'EX', ARGV[1])
  end
end
return #KEYS
"""
SCRIPT_CHUNK = 1000  # keys per script call
_Call = tuple[list[str], list[str | bytes]]  # a script's keys and arguments


def loc_key(courier_id: str) -> str:
    return f"courier:loc:{courier_id}"


def audience_key(courier_id: str) -> str:
    return f"courier:aud:{courier_id}"


def plan_key(courier_id: str) -> str:
    return f"courier:plan:{courier_id}"


def tombstone_key(stop_id: str) -> str:
    return f"share:ended:{stop_id}"


@dataclass(frozen=True, slots=True)
class Ping:
    courier_id: str
    lat: float
    lng: float
    accuracy: float
    at: datetime


@dataclass(frozen=True, slots=True)
class PingOutcome:
    status: Literal["stored", "flagged", "ignored"]
    shared_with: int
    plan: bytes | None


@dataclass(frozen=True, slots=True)
class Fix:
    lat: float
    lng: float
    accuracy: float
    at: float  # epoch seconds

    @property
    def point(self) -> tuple[float, float]:
        return (self.lat, self.lng)


@dataclass(frozen=True, slots=True)
class Position:
    """The latest fix, whether it was flagged, and the last trusted (unflagged) one."""

    latest: Fix
    cell: int
    flagged: bool
    trusted: Fix | None

    def stale(self, now: datetime, stale_s: float) -> bool:
        return now.timestamp() - self.latest.at > stale_s

    def json(self, now: datetime, stale_s: float) -> dict[str, Any]:
        return {
            "lat": self.latest.lat,
            "lng": self.latest.lng,
            "accuracy": self.latest.accuracy,
            "at": datetime.fromtimestamp(self.latest.at, UTC).isoformat(),
            "flagged": self.flagged,
            "stale": self.stale(now, stale_s),
        }


class Positions(dict[str, Position]):
    """Couriers' positions by id, and `since` (epoch seconds on the server clock): the moment from which
    Redis's live state is whole. A courier with no ping since then may simply not have been able to."""

    def __init__(self, since: float) -> None:
        super().__init__()
        self.since = since

    def silent(self, courier_id: str, now: datetime, stale_s: float) -> bool:
        """No word from the courier for `stale_s`, counting from its last ping or `since`, the later."""
        position = self.get(courier_id)
        last = max(self.since, position.latest.at if position is not None else -math.inf)
        return now.timestamp() - last > stale_s


@dataclass(frozen=True, slots=True)
class Grant:
    """`recipient` sees the courier's position because of `stop_id`; `fields` say which stop or order."""

    courier_id: str
    stop_id: str
    recipient: str
    fields: Mapping[str, str]


def _position(packed: str) -> Position | None:
    """From POSITIONS_SCRIPT's fields: lat,lng,acc,at,cell,flagged,tlat,tlng,tacc,tat ('' when absent)."""
    lat, lng, acc, at, cell, flagged, tlat, tlng, tacc, tat = packed.split(",")
    if not lat:
        return None
    latest = Fix(float(lat), float(lng), float(acc), int(at) / 1000)
    trusted = Fix(float(tlat), float(tlng), float(tacc), int(tat) / 1000) if tlat else None
    return Position(latest, int(cell), flagged == "1", trusted)


class LiveLocations:
    """The node's access to couriers' live state. `start` before use (the app's cleanup context does)."""

    def __init__(self, redis: Redis, max_speed_m_s: float, clock: Clock) -> None:
        self.redis = redis
        self.max_speed_m_s = max_speed_m_s
        self.clock = clock
        self._failed = False  # a Redis call failed; the next success moves `since` on
        self.eta_checked: dict[str, float] = {}  # courier -> clock seconds of its last ETA check here
        self._queue: list[tuple[str, asyncio.Future[PingOutcome]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sha: dict[str, str] = {}
        # Called when Redis is back after failing (or the subscriber reconnected), and when a script finds it
        # empty: it may have lost the shares and plans written meanwhile, or everything.
        self.on_return: list[Callable[[], None]] = []

    async def start(self) -> None:
        await self._load_scripts()
        self._task = asyncio.create_task(self._write_forever(), name="courier-locations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._queue:
            if not future.done():
                future.set_exception(ServiceUnavailable("the server is stopping"))
        self._queue.clear()

    async def _load_scripts(self) -> None:
        for script in (
            PINGS_SCRIPT,
            GRANT_SCRIPT,
            POSITIONS_SCRIPT,
            SILENT_SCRIPT,
            SET_PLANS_SCRIPT,
            SINCE_SCRIPT,
        ):
            self._sha[script] = await self.redis.script_load(script)

    def _now_ms(self) -> str:
        return str(round(self.clock.now().timestamp() * 1000))

    async def redis_returned(self) -> None:
        """Redis is reachable again after failing: whatever it holds, pings may have been lost meanwhile."""
        try:
            _raised(await self._run(SINCE_SCRIPT, [([], [self._now_ms()])], mark=False))
        except (RedisError, OSError) as exc:
            log.warning("could not mark live state as restarted: %s", exc)
            self._failed = True
            return
        log.info("Redis is back: courier staleness is judged afresh from now")
        self._call_on_return()

    def _lost_state(self) -> None:
        """A script found `since` missing: Redis is new, or restarted empty (perhaps unnoticed: the client
        reconnects by itself). `since` is set by that script; the rest is for `on_return`."""
        log.info("Redis holds no live state (new, or restarted empty): restoring it from PostgreSQL")
        self._call_on_return()

    def _call_on_return(self) -> None:
        for callback in self.on_return:
            callback()

    async def _run(self, script: str, calls: list[_Call], *, mark: bool = True) -> list[Any]:
        """One pipeline of script calls (keys, args); reloads the scripts once if Redis lost them."""
        try:
            async with answered_within(CALL_WAIT_S):
                for attempt in (1, 2):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for keys, args in calls:
                            pipe.evalsha(self._sha[script], len(keys), *keys, *args)
                        results: list[Any] = await pipe.execute(raise_on_error=False)
                    if attempt == 2 or not any(isinstance(r, NoScriptError) for r in results):
                        break
                    await self._load_scripts()  # Redis restarted: its scripts are gone
        except (RedisError, OSError):
            self._failed = True
            raise
        if mark and self._failed:
            self._failed = False
            await self.redis_returned()
        return results

    # --- pings ---------------------------------------------------------------------------------------

    async def ping(self, ping: Ping, want_plan: bool) -> PingOutcome:
        """Queue the ping for the node's writer, which sends everything queued in one script call."""
        cell = h3.latlng_to_cell(ping.lat, ping.lng, CELL_RESOLUTION)
        at_iso = ping.at.astimezone(UTC).isoformat()
        fields = {"courier_id": ping.courier_id, "lat": ping.lat, "lng": ping.lng, "accuracy": ping.accuracy}
        line = "\t".join(
            (
                ping.courier_id,
                repr(ping.lat),
                repr(ping.lng),
                repr(ping.accuracy),
                str(round(ping.at.timestamp() * 1000)),
                str(cell),
                "1" if want_plan else "0",
                orjson.dumps({**fields, "at": at_iso}).decode()[1:-1],
            )
        )
        if len(self._queue) >= MAX_QUEUED:
            self._queue = [queued for queued in self._queue if not queued[1].done()]
            if len(self._queue) >= MAX_QUEUED:
                raise ServiceUnavailable("live locations are not answering; try again")
        future: asyncio.Future[PingOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append((line, future))
        self._wake.set()
        try:
            return await asyncio.wait_for(future, PING_WAIT_S)  # cancels the future: it is not sent
        except TimeoutError:
            raise ServiceUnavailable("live locations are not answering; try again") from None

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[str, asyncio.Future[PingOutcome]]]) -> None:
        batch = [queued for queued in batch if not queued[1].done()]  # not those given up on
        if not batch:
            return
        constants: list[str | bytes] = [
            repr(self.max_speed_m_s),
            str(LOCATION_TTL_S),
            str(SHARE_GAP_MS),
            LIVE_CHANNEL,
        ]
        try:
            (reply,) = _raised(
                await self._run(
                    PINGS_SCRIPT, [([], [*constants, "\n".join(line for line, _ in batch), self._now_ms()])]
                )
            )
            lost, *lines = reply.decode().split("\n")
            results: list[Any] = lines
            if lost == "1":
                self._lost_state()
        except (RedisError, OSError) as exc:
            log.warning("could not store %d courier location(s): %s", len(batch), exc)
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(ServiceUnavailable("live locations are unavailable; try again"))
            else:
                status, shared, plan = result.split("\t", 2)
                future.set_result(PingOutcome(status, int(shared), plan.encode() if plan else None))

    # --- reads ---------------------------------------------------------------------------------------

    async def position(self, courier_id: str) -> Position | None:
        return (await self.positions([courier_id])).get(courier_id)

    async def positions(self, courier_ids: Iterable[str]) -> Positions:
        ids = list(courier_ids)
        now = self._now_ms()
        chunks = _chunks(ids, SCRIPT_CHUNK) or [[]]  # one call even for none: it reads `since`
        calls: list[_Call] = [([loc_key(c) for c in chunk], [now]) for chunk in chunks]
        try:
            replies = [
                reply.decode().split(";") for reply in _raised(await self._run(POSITIONS_SCRIPT, calls))
            ]
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"live locations are unavailable: {exc}") from exc
        if any(reply[0].startswith("!") for reply in replies):
            self._lost_state()
        found = Positions(since=max(int(reply[0].lstrip("!")) for reply in replies) / 1000)
        packed = [p for reply in replies for p in reply[1:]]
        for courier_id, values in zip(ids, packed, strict=True):
            position = _position(values)
            if position is not None:
                found[courier_id] = position
        return found

    async def count_silent(self, courier_ids: Sequence[str], now: datetime, stale_s: float) -> int:
        """How many of the couriers `Positions.silent` would call silent, counted in Redis (a city's fleet
        gauge on every scrape must not read and parse every position)."""
        if not courier_ids:
            return 0
        now_ms = str(round(now.timestamp() * 1000))
        stale_ms = str(round(stale_s * 1000))
        calls: list[_Call] = [
            ([loc_key(c) for c in chunk], [now_ms, stale_ms])
            for chunk in _chunks(list(courier_ids), SCRIPT_CHUNK)
        ]
        try:
            return sum(int(n) for n in _raised(await self._run(SILENT_SCRIPT, calls)))
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"live locations are unavailable: {exc}") from exc

    # --- who sees a courier ----------------------------------------------------------------------------

    async def grant(self, grants: Iterable[Grant]) -> None:
        """After commit. Best effort: a lost grant only withholds positions, it never leaks them."""
        calls: list[_Call] = []
        for chunk in _chunks(list(grants), SCRIPT_CHUNK // 2):
            keys: list[str] = []
            args: list[str | bytes] = [str(AUDIENCE_TTL_S)]
            for g in chunk:
                fields = orjson.dumps(dict(g.fields)).decode()[1:-1]
                keys += [audience_key(g.courier_id), tombstone_key(g.stop_id)]
                args += [g.stop_id, g.recipient + "|" + (fields + "," if fields else "")]
            calls.append((keys, args))
        try:
            _raised(await self._run(GRANT_SCRIPT, calls))
        except (RedisError, OSError) as exc:
            log.warning("could not grant position shares: %s", exc)

    async def revoke(self, revocations: Iterable[tuple[str, str]]) -> None:
        """End sharing for (courier, stop) pairs, for good. Called BEFORE the commit that ends the share,
        so no position can follow it; raises (and the caller's transaction rolls back) if Redis fails."""
        pairs = list(revocations)
        if not pairs:
            return
        try:
            async with answered_within(CALL_WAIT_S), self.redis.pipeline(transaction=True) as pipe:
                for courier_id, stop_id in pairs:
                    pipe.set(tombstone_key(stop_id), b"1", ex=AUDIENCE_TTL_S)
                    pipe.hdel(audience_key(courier_id), stop_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"could not end location sharing: {exc}") from exc

    # --- plan cache ----------------------------------------------------------------------------------

    async def set_plans(self, plans: Mapping[str, bytes], *, only_missing: bool = False) -> None:
        """`only_missing`: keep a plan already cached (written by a change newer than the caller's read)."""
        mode = "NX" if only_missing else ""
        calls: list[_Call] = [
            ([plan_key(c) for c in chunk], [str(AUDIENCE_TTL_S), mode, *(plans[c] for c in chunk)])
            for chunk in _chunks(list(plans), SCRIPT_CHUNK)
        ]
        try:
            _raised(await self._run(SET_PLANS_SCRIPT, calls))
        except (RedisError, OSError) as exc:
            log.warning("could not cache %d courier plan(s): %s", len(plans), exc)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _raised(results: list[Any]) -> list[Any]:
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results
