"""Cron arithmetic: ticks equal an independent brute-force oracle, and DST is handled as
Vixie cron handles it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cron import SHORTHANDS, CronSchedule, problem


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high).map(str)
    step = st.integers(1, max(1, (high - low) // 2)).map(lambda n: f"*/{n}")
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda ab: f"{min(ab)}-{max(ab)}"
    )
    listed = st.lists(st.integers(low, high), min_size=1, max_size=3, unique=True).map(
        lambda xs: ",".join(map(str, sorted(xs)))
    )
    return st.one_of(st.just("*"), value, step, span, listed)


crons = st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), st.just("*"), _field(0, 6)).map(
    " ".join
)
starts = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


def oracle(expression: str, start: datetime, end: datetime) -> list[datetime]:
    """Every whole minute in [start, end] that croniter says matches, in UTC."""
    minute = start.replace(second=0, microsecond=0)
    if minute < start:
        minute += timedelta(minutes=1)
    found = []
    while minute <= end:
        if croniter.match(expression, minute):
            found.append(minute)
        minute += timedelta(minutes=1)
    return found


@settings(max_examples=150, deadline=None)
@given(
    crons,
    starts,
    st.integers(0, 3 * 24 * 60 * 60),
    st.integers(0, 59_999_999).map(lambda us: timedelta(microseconds=us)),
)
def test_ticks_between_equal_croniter_matches_in_utc(expression, start, span, jitter):
    start = start + jitter
    end = start + timedelta(seconds=span)
    ticks = list(CronSchedule(expression).between(start, end))
    assert ticks == oracle(expression, start, end)
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in ticks)


@settings(max_examples=100, deadline=None)
@given(crons, starts)
def test_after_and_before_agree_with_between(expression, moment):
    schedule = CronSchedule(expression)
    following = schedule.after(moment)
    assert following > moment
    assert list(schedule.between(moment + timedelta(microseconds=1), following)) == [following]
    previous = schedule.before(moment)
    assert previous is not None and previous <= moment
    assert schedule.after(previous) > moment


def _local(ticks, zone: str) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).isoformat() for t in ticks]


def test_a_time_in_the_spring_forward_gap_fires_right_after_the_gap():
    schedule = CronSchedule("30 2 * * *", "Europe/Berlin")
    ticks = schedule.between(
        datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC)
    )
    assert _local(ticks, "Europe/Berlin") == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_a_repeated_wall_time_fires_once_when_the_hours_are_named():
    schedule = CronSchedule("30 2 * * *", "Europe/Berlin")
    ticks = schedule.between(
        datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 26, 12, tzinfo=UTC)
    )
    assert _local(ticks, "Europe/Berlin") == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_an_every_hour_expression_fires_in_both_repeated_hours():
    schedule = CronSchedule("*/30 * * * *", "Europe/Berlin")
    ticks = list(
        schedule.between(
            datetime(2026, 10, 25, 0, 0, tzinfo=UTC), datetime(2026, 10, 25, 1, 59, tzinfo=UTC)
        )
    )
    assert _local(ticks, "Europe/Berlin") == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
    ]
    assert len(set(ticks)) == 4, "distinct instants: each is claimed once"


def test_before_skips_the_second_occurrence_too():
    schedule = CronSchedule("30 2 * * *", "Europe/Berlin")
    after_repeat = datetime(2026, 10, 25, 3, 0, tzinfo=UTC)  # 04:00 local, past both 02:30s
    assert _local([schedule.before(after_repeat)], "Europe/Berlin") == ["2026-10-25T02:30:00+02:00"]


def test_seconds_field_gives_second_ticks():
    schedule = CronSchedule("* * * * * */10")
    start = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    ticks = list(schedule.between(start, start + timedelta(seconds=30)))
    assert [t.second for t in ticks] == [10, 20, 30]


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(sorted(SHORTHANDS)), starts, st.booleans())
def test_a_shorthand_fires_as_croniter_reads_it(shorthand, start, upper):
    expression = shorthand.upper() if upper else shorthand
    ticks = list(itertools.islice(CronSchedule(expression).following(start), 5))
    it = croniter(shorthand, start)
    assert ticks == [it.get_next(datetime) for _ in ticks] and len(ticks) == 5
    assert problem(expression) is None


def test_daily_names_its_hour_and_hourly_does_not_across_a_repeated_midnight():
    # Havana falls back from 01:00 to 00:00 on 2026-11-01: midnight comes twice.
    zone = "America/Havana"
    daily = CronSchedule("@daily", zone)
    ticks = daily.between(datetime(2026, 10, 31, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
    assert _local(ticks, zone) == [
        "2026-10-31T00:00:00-04:00",
        "2026-11-01T00:00:00-04:00",
        "2026-11-02T00:00:00-05:00",
    ]
    hourly = CronSchedule("@hourly", zone)
    ticks = hourly.between(
        datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 1, 5, tzinfo=UTC)
    )
    assert _local(ticks, zone) == ["2026-11-01T00:00:00-04:00", "2026-11-01T00:00:00-05:00"]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 31), st.integers(1, 12), st.sampled_from(["", " 0", " 0 2030"]))
def test_an_expression_is_refused_exactly_when_no_calendar_date_matches_it(day, month, tail):
    try:
        datetime(2000, month, day)  # a leap year: 29 February exists
        exists = True
    except ValueError:
        exists = False
    expression = f"0 0 {day} {month} *{tail}"
    why = problem(expression)
    assert (why is None) == exists
    if not exists:
        assert why == f"cron expression {expression!r} never fires: no calendar date matches it"


def test_29_february_fires_in_leap_years_only():
    schedule = CronSchedule("0 0 29 2 *")
    ticks = schedule.between(datetime(2026, 1, 1, tzinfo=UTC), datetime(2033, 1, 1, tzinfo=UTC))
    assert [t.year for t in ticks] == [2028, 2032]


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("0 0 31 4,6 *", "never fires"),
        ("0 0 1 * 1#5", "never fires"),  # croniter reads `day#n` with a day of month as both
        ("0 25 * * *", "invalid cron expression"),
        ("@reboot", "invalid cron expression"),
        ("", "invalid cron expression"),
    ],
)
def test_problems(expression, why):
    assert why in (problem(expression) or "")


def test_a_schedule_whose_years_are_past_has_no_tick_and_loads_any_day():
    schedule = CronSchedule("0 0 1 1 * 0 2020")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert problem(schedule.expression) is None
    assert schedule.after(now) is None
    assert list(schedule.between(now, now + timedelta(days=800))) == []
    assert schedule.before(now) == datetime(2020, 1, 1, tzinfo=UTC)
