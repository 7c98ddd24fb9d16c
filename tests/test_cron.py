"""Cron arithmetic: ticks equal an independent brute-force oracle, and DST is handled as
Vixie cron handles it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cron import CronSchedule


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
