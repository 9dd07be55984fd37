"""Opening hours of a shop: parsing the stored JSON and answering "open at / during?".

Stored form (JSON in PostgreSQL)::

    {"tz": "Europe/Paris",
     "weekly": {"mon": [["08:00", "20:00"]], ..., "sat": [["22:00", "02:00"]], "sun": []},
     "closed_dates": ["2026-12-25"]}

Rules:

- Times are local wall-clock times in ``tz``; an interval ``[start, end)`` is half-open.
- ``end`` may be ``"24:00"``; an ``end`` earlier than ``start`` crosses midnight into the next
  day. ``start == end`` is rejected (write ``["00:00", "24:00"]`` for a whole day).
- A missing weekday is closed all day. Overlapping intervals are allowed and simply merge.
- An interval belongs to the day it starts on (the business day): a closed date cancels the
  intervals starting on that date, while the tail of the previous evening's interval that crosses
  into it still runs.
- DST: wall-clock times that do not exist on the spring-forward day are simply never reached, and
  the hour repeated in autumn is open or closed on both passes, as its wall-clock time says.

The functions take timezone-aware datetimes only; a naive one is a caller bug (`ValueError`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatch.core.errors import CoreValidationError, PathPart

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_INTERVALS_PER_DAY = 16
MAX_CLOSED_DATES = 1000
_DAY_MINUTES = 24 * 60
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Interval = tuple[int, int]  # minutes after local midnight; end <= start means "crosses midnight"


@dataclass(frozen=True, slots=True)
class OpeningHours:
    tz: ZoneInfo
    weekly: tuple[tuple[Interval, ...], ...]  # index 0 = Monday, as date.weekday()
    closed_dates: frozenset[date]

    def is_open(self, at: datetime) -> bool:
        """True when the shop is open at the instant `at`."""
        wall = _local_wall(at, self.tz)
        return any(s <= wall < e for s, e in self._wall_intervals(wall.date(), wall.date()))

    def is_open_during(self, start: datetime, end: datetime) -> bool:
        """True when the shop is open at every instant of the slot ``[start, end)``."""
        _require_aware(start)
        _require_aware(end)
        if end <= start:
            raise ValueError("slot must end after it starts")
        for piece_start, piece_end in _constant_offset_pieces(start, end, self.tz):
            # Within a piece the UTC offset is fixed, so wall time advances with real time.
            wall_start = _local_wall(piece_start, self.tz)
            wall_end = wall_start + (piece_end - piece_start)
            if not self._covers(wall_start, wall_end):
                return False
        return True

    def as_json(self) -> dict[str, object]:
        """The canonical stored form; `parse_opening_hours(h.as_json()) == h`."""
        return {
            "tz": self.tz.key,
            "weekly": {
                name: [[_fmt_minutes(s, start=True), _fmt_minutes(e, start=False)] for s, e in day]
                for name, day in zip(WEEKDAYS, self.weekly, strict=True)
            },
            "closed_dates": sorted(d.isoformat() for d in self.closed_dates),
        }

    def _covers(self, wall_start: datetime, wall_end: datetime) -> bool:
        cursor = wall_start
        for s, e in _merge(self._wall_intervals(wall_start.date(), wall_end.date())):
            if s <= cursor < e:
                cursor = e
                if cursor >= wall_end:
                    return True
        return False

    def _wall_intervals(self, first: date, last: date) -> list[tuple[datetime, datetime]]:
        """Open wall-clock intervals of the business days that can reach [first, last]."""
        out = []
        day = first - timedelta(days=1)  # yesterday's interval may cross into `first`
        while day <= last:
            if day not in self.closed_dates:
                midnight = datetime(day.year, day.month, day.day)
                for s, e in self.weekly[day.weekday()]:
                    end = e if e > s else e + _DAY_MINUTES
                    out.append((midnight + timedelta(minutes=s), midnight + timedelta(minutes=end)))
            day += timedelta(days=1)
        return out


def always_open(tz: str = "UTC") -> OpeningHours:
    whole_day = ((0, _DAY_MINUTES),)
    return OpeningHours(ZoneInfo(tz), (whole_day,) * 7, frozenset())


def parse_opening_hours(obj: object) -> OpeningHours:
    """Validate the stored/posted JSON form; raises `CoreValidationError` with the field path."""
    if not isinstance(obj, Mapping):
        raise CoreValidationError((), "opening hours must be an object")
    for key in obj:
        if key not in ("tz", "weekly", "closed_dates"):
            raise CoreValidationError((str(key),), "unknown field")
    tz = _parse_tz(obj.get("tz"))
    weekly_raw = obj.get("weekly")
    if not isinstance(weekly_raw, Mapping):
        raise CoreValidationError(("weekly",), "must be an object keyed by weekday (mon..sun)")
    for key in weekly_raw:
        if key not in WEEKDAYS:
            raise CoreValidationError(("weekly", str(key)), "unknown weekday; use mon..sun")
    weekly = tuple(_parse_day(weekly_raw.get(name, []), ("weekly", name)) for name in WEEKDAYS)
    closed = _parse_closed_dates(obj.get("closed_dates", []))
    return OpeningHours(tz, weekly, closed)


def _parse_tz(raw: object) -> ZoneInfo:
    if not isinstance(raw, str) or not raw:
        raise CoreValidationError(("tz",), "must be an IANA time zone name such as Europe/Paris")
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise CoreValidationError(("tz",), f"unknown time zone {raw!r}") from None


def _parse_day(raw: object, path: tuple[PathPart, ...]) -> tuple[Interval, ...]:
    if not isinstance(raw, list):
        raise CoreValidationError(path, "must be a list of [start, end] intervals")
    if len(raw) > MAX_INTERVALS_PER_DAY:
        raise CoreValidationError(path, f"at most {MAX_INTERVALS_PER_DAY} intervals per day")
    intervals = []
    for i, pair in enumerate(raw):
        if not isinstance(pair, list) or len(pair) != 2:
            raise CoreValidationError((*path, i), 'must be a pair ["HH:MM", "HH:MM"]')
        start = _parse_time(pair[0], (*path, i, 0), allow_24=False)
        end = _parse_time(pair[1], (*path, i, 1), allow_24=True)
        if start == end:
            raise CoreValidationError((*path, i), 'empty interval; use ["00:00", "24:00"] for a whole day')
        intervals.append((start, end))
    return tuple(intervals)


def _parse_time(raw: object, path: tuple[PathPart, ...], *, allow_24: bool) -> int:
    if raw == "24:00":
        if allow_24:
            return _DAY_MINUTES
        raise CoreValidationError(path, '"24:00" is only allowed as an end time')
    match = _TIME_RE.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise CoreValidationError(path, 'must be a time "HH:MM" (00:00 to 23:59)')
    return int(match.group(1)) * 60 + int(match.group(2))


def _parse_closed_dates(raw: object) -> frozenset[date]:
    if not isinstance(raw, list):
        raise CoreValidationError(("closed_dates",), 'must be a list of "YYYY-MM-DD" dates')
    if len(raw) > MAX_CLOSED_DATES:
        raise CoreValidationError(("closed_dates",), f"at most {MAX_CLOSED_DATES} dates")
    out = set()
    for i, item in enumerate(raw):
        try:
            if not isinstance(item, str) or not _DATE_RE.match(item):
                raise ValueError
            out.add(date.fromisoformat(item))
        except ValueError:
            raise CoreValidationError(("closed_dates", i), 'must be a valid date "YYYY-MM-DD"') from None
    return frozenset(out)


def _fmt_minutes(minutes: int, *, start: bool) -> str:
    if minutes == _DAY_MINUTES and not start:
        return "24:00"
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("opening-hours checks need a timezone-aware datetime")


def _local_wall(at: datetime, tz: ZoneInfo) -> datetime:
    """Naive local wall-clock time of the instant `at`."""
    _require_aware(at)
    return at.astimezone(tz).replace(tzinfo=None)


def _merge(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def _constant_offset_pieces(start: datetime, end: datetime, tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """Split [start, end) where the zone's UTC offset changes.

    Scans day by day and binary-searches the change to the second (tz transitions fall on whole
    seconds). Assumes at most one transition per day, which holds for every zone in tzdata.
    """
    start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)
    pieces = []
    cursor = start_utc
    while cursor < end_utc:
        day_end = min(end_utc, cursor + timedelta(days=1))
        offset = cursor.astimezone(tz).utcoffset()
        last = day_end - timedelta(microseconds=1)
        if last.astimezone(tz).utcoffset() == offset:
            pieces.append((cursor, day_end))
            cursor = day_end
            continue
        lo, hi = int(cursor.timestamp()), int(last.timestamp()) + 1  # offset(lo) same, hi differs
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, tz).utcoffset() == offset:
                lo = mid
            else:
                hi = mid
        change = datetime.fromtimestamp(hi, UTC)
        pieces.append((cursor, change))
        cursor = change
    return pieces
