from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.core.errors import CoreValidationError
from dispatch.core.hours import WEEKDAYS, OpeningHours, always_open, parse_opening_hours

PARIS = ZoneInfo("Europe/Paris")


def hours(tz: str = "Europe/Paris", closed: list[str] | None = None, **days: list[list[str]]) -> OpeningHours:
    return parse_opening_hours({"tz": tz, "weekly": days, "closed_dates": closed or []})


def paris(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=PARIS)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# 2026-05-04 is a Monday.
SHOP = hours(mon=[["08:00", "12:00"], ["14:00", "20:00"]], sat=[["22:00", "02:00"]])


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (paris(2026, 5, 4, 7, 59), False),
        (paris(2026, 5, 4, 8, 0), True),
        (paris(2026, 5, 4, 11, 59, 59), True),
        (paris(2026, 5, 4, 12, 0), False),  # intervals are half-open
        (paris(2026, 5, 4, 19, 59), True),
        (paris(2026, 5, 4, 20, 0), False),
        (paris(2026, 5, 5, 10, 0), False),  # Tuesday not listed: closed
        (utc(2026, 5, 4, 6, 30), True),  # 08:30 in Paris (UTC+2)
        (utc(2026, 5, 4, 5, 59), False),  # 07:59 in Paris
    ],
)
def test_is_open_in_local_wall_time(at: datetime, expected: bool) -> None:
    assert SHOP.is_open(at) is expected


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (paris(2026, 5, 9, 21, 59), False),
        (paris(2026, 5, 9, 22, 0), True),  # Saturday evening
        (paris(2026, 5, 10, 0, 0), True),  # past midnight: Sunday, from Saturday's interval
        (paris(2026, 5, 10, 1, 59), True),
        (paris(2026, 5, 10, 2, 0), False),
        (paris(2026, 5, 10, 23, 0), False),  # Sunday has no interval of its own
        (paris(2026, 5, 9, 1, 0), False),  # Friday had nothing crossing into Saturday
    ],
)
def test_interval_crossing_midnight(at: datetime, expected: bool) -> None:
    assert SHOP.is_open(at) is expected


def test_is_open_during_spans_midnight_and_touching_intervals() -> None:
    late = hours(mon=[["20:00", "24:00"]], tue=[["00:00", "06:00"]])
    assert late.is_open_during(paris(2026, 5, 4, 23, 0), paris(2026, 5, 5, 6, 0))
    assert not late.is_open_during(paris(2026, 5, 4, 23, 0), paris(2026, 5, 5, 6, 1))
    assert SHOP.is_open_during(paris(2026, 5, 9, 23, 0), paris(2026, 5, 10, 2, 0))
    assert not SHOP.is_open_during(paris(2026, 5, 4, 11, 0), paris(2026, 5, 4, 15, 0))  # lunch
    assert SHOP.is_open_during(paris(2026, 5, 4, 14, 0), paris(2026, 5, 4, 20, 0))


def test_overlapping_intervals_merge() -> None:
    h = hours(mon=[["08:00", "12:00"], ["11:00", "14:00"]])
    assert h.is_open_during(paris(2026, 5, 4, 8, 0), paris(2026, 5, 4, 14, 0))


def test_closed_date_cancels_that_business_day_only() -> None:
    # 2026-12-25 is a Friday; Thursday's night interval still runs into it.
    h = hours(closed=["2026-12-25"], thu=[["22:00", "02:00"]], fri=[["09:00", "02:00"]])
    assert h.is_open(paris(2026, 12, 25, 1, 0))
    assert not h.is_open(paris(2026, 12, 25, 10, 0))
    assert not h.is_open(paris(2026, 12, 26, 1, 0))  # Friday's own tail is cancelled too
    assert h.is_open(paris(2027, 1, 1, 10, 0))  # the next Friday
    assert not h.is_open_during(paris(2026, 12, 25, 1, 0), paris(2026, 12, 25, 2, 1))


def test_spring_forward_day() -> None:
    # Paris, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
    h = hours(sun=[["01:00", "04:00"]])
    assert h.is_open_during(utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0))  # two real hours
    assert not h.is_open_during(utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 1))
    assert h.is_open(utc(2026, 3, 29, 1, 0))  # 03:00 CEST
    gap = hours(sun=[["02:30", "05:00"]])  # starts at a wall time that does not exist that day
    assert not gap.is_open(utc(2026, 3, 29, 0, 59))  # 01:59 CET
    assert gap.is_open(utc(2026, 3, 29, 1, 0))  # 03:00 CEST, already past 02:30
    assert not gap.is_open_during(utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30))


def test_fall_back_day() -> None:
    # Paris, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:xx happens twice.
    h = hours(sun=[["02:00", "02:30"]])
    assert h.is_open(utc(2026, 10, 25, 0, 15))  # 02:15 CEST
    assert not h.is_open(utc(2026, 10, 25, 0, 45))  # 02:45 CEST
    assert h.is_open(utc(2026, 10, 25, 1, 15))  # 02:15 CET, second pass
    assert h.is_open_during(utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30))
    assert not h.is_open_during(utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 1, 30))
    long_night = hours(sat=[["23:00", "04:00"]])  # six real hours that night
    assert long_night.is_open_during(utc(2026, 10, 24, 21, 0), utc(2026, 10, 25, 3, 0))
    assert not long_night.is_open_during(utc(2026, 10, 24, 21, 0), utc(2026, 10, 25, 3, 1))


def test_always_open() -> None:
    h = always_open()
    assert h.is_open(utc(2026, 1, 1, 0, 0))
    assert h.is_open_during(utc(2026, 3, 27, 0, 0), utc(2026, 4, 3, 0, 0))  # a week, over DST
    assert always_open("Europe/Paris").is_open(paris(2026, 10, 25, 2, 30))


def test_round_trip_through_json() -> None:
    h = hours(closed=["2026-12-25", "2026-01-01"], mon=[["08:00", "24:00"]], sat=[["22:00", "02:00"]])
    stored = h.as_json()
    assert stored["closed_dates"] == ["2026-01-01", "2026-12-25"]
    assert stored["weekly"] == {
        "mon": [["08:00", "24:00"]],
        "tue": [],
        "wed": [],
        "thu": [],
        "fri": [],
        "sat": [["22:00", "02:00"]],
        "sun": [],
    }
    assert parse_opening_hours(stored) == h


def test_contract_violations() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SHOP.is_open(datetime(2026, 5, 4, 9, 0))
    with pytest.raises(ValueError, match="end after"):
        SHOP.is_open_during(paris(2026, 5, 4, 9, 0), paris(2026, 5, 4, 9, 0))


def valid(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"tz": "Europe/Paris", "weekly": {"mon": [["08:00", "20:00"]]}}
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("obj", "path", "message"),
    [
        ([], (), "must be an object"),
        (valid(colour="red"), ("colour",), "unknown field"),
        ({"weekly": {}}, ("tz",), "IANA"),
        (valid(tz="Mars/Olympus"), ("tz",), "unknown time zone"),
        (valid(tz="../../etc/passwd"), ("tz",), "unknown time zone"),
        (valid(tz=3), ("tz",), "IANA"),
        (valid(weekly=[]), ("weekly",), "weekday"),
        (valid(weekly={"monday": []}), ("weekly", "monday"), "unknown weekday"),
        (valid(weekly={"mon": "08:00-20:00"}), ("weekly", "mon"), "list of"),
        (valid(weekly={"mon": [["08:00"]]}), ("weekly", "mon", 0), "pair"),
        (valid(weekly={"mon": [["08:00", "20:00", "x"]]}), ("weekly", "mon", 0), "pair"),
        (valid(weekly={"mon": ["08:00"]}), ("weekly", "mon", 0), "pair"),
        (valid(weekly={"mon": [["8:00", "20:00"]]}), ("weekly", "mon", 0, 0), "HH:MM"),
        (valid(weekly={"tue": [["08:00", "20:60"]]}), ("weekly", "tue", 0, 1), "HH:MM"),
        (valid(weekly={"mon": [["08:00", "25:00"]]}), ("weekly", "mon", 0, 1), "HH:MM"),
        (valid(weekly={"mon": [["08:00", 2000]]}), ("weekly", "mon", 0, 1), "HH:MM"),
        (valid(weekly={"mon": [["24:00", "02:00"]]}), ("weekly", "mon", 0, 0), "only allowed as an end"),
        (
            valid(weekly={"sun": [["08:00", "12:00"], ["13:00", "13:00"]]}),
            ("weekly", "sun", 1),
            "empty interval",
        ),
        (valid(weekly={"mon": [["08:00", "09:00"]] * 17}), ("weekly", "mon"), "at most 16"),
        (valid(closed_dates="2026-12-25"), ("closed_dates",), "list of"),
        (valid(closed_dates=["2026-12-25", "2026-02-30"]), ("closed_dates", 1), "valid date"),
        (valid(closed_dates=["20261225"]), ("closed_dates", 0), "valid date"),
        (valid(closed_dates=[20261225]), ("closed_dates", 0), "valid date"),
    ],
)
def test_bad_input_reports_path_and_message(obj: object, path: tuple[object, ...], message: str) -> None:
    with pytest.raises(CoreValidationError) as caught:
        parse_opening_hours(obj)
    assert caught.value.path == path
    assert message in caught.value.message


def test_missing_weekdays_and_closed_dates_default_to_closed_and_none() -> None:
    h = parse_opening_hours({"tz": "UTC", "weekly": {}})
    assert not h.is_open(utc(2026, 5, 4, 12, 0))
    assert h.closed_dates == frozenset()


# --- property: is_open_during agrees with is_open sampled every minute -----------------------------

QUARTERS = [f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 15, 30, 45)]
NIGHT = QUARTERS[: 5 * 4 : 2]  # every half hour before 05:00, where the clocks change
times = st.one_of(st.sampled_from(NIGHT), st.sampled_from(QUARTERS))
interval = st.tuples(times, st.one_of(times, st.just("24:00")))
intervals = st.lists(interval.filter(lambda p: p[0] != p[1]), max_size=3)
# The instants the clocks change in Paris and on Lord Howe Island (which shifts by 30 minutes).
DST_CHANGES = [
    ("Europe/Paris", utc(2026, 3, 29, 1, 0)),
    ("Europe/Paris", utc(2026, 10, 25, 1, 0)),
    ("Australia/Lord_Howe", utc(2026, 4, 4, 15, 0)),
    ("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30)),
]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(DST_CHANGES),
    intervals,
    st.integers(-16, 4).map(lambda q: 15 * q),
    st.integers(1, 24).map(lambda q: 15 * q),
    st.booleans(),
)
def test_is_open_during_matches_minute_by_minute_is_open(
    zone_and_change: tuple[str, datetime],
    daily: list[tuple[str, str]],
    offset_minutes: int,
    length_minutes: int,
    close_a_day: bool,
) -> None:
    tz, change = zone_and_change
    closed = [change.astimezone(ZoneInfo(tz)).date().isoformat()] if close_a_day else []
    h = parse_opening_hours(
        {"tz": tz, "weekly": {d: [list(p) for p in daily] for d in WEEKDAYS}, "closed_dates": closed}
    )
    start = change + timedelta(minutes=offset_minutes)
    end = start + timedelta(minutes=length_minutes)
    # Boundaries and DST changes fall on whole minutes, so sampling every minute is exact.
    sampled = all(h.is_open(start + timedelta(minutes=m)) for m in range(length_minutes))
    assert h.is_open_during(start, end) is sampled
