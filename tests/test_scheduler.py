"""The scheduler's rounds under a fake clock, on SQLite and PostgreSQL: which ticks fire,
catch-up, overlap, and several schedulers on one database. No test sleeps through real time."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from engine.cron import CronSchedule
from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.errors import ScheduleError
from engine.scheduler import Scheduler
from engine.service import BatchService, PreparedRun
from engine.store.types import utcnow

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def definition(catchup: str = "latest", overlap: str = "skip", extra: str = "") -> str:
    return f"""
name: every5
cron: "*/5 * * * *"
catchup: {catchup}
overlap: {overlap}
{extra}
steps:
  - id: a
    runner: echo
    inputs: {{at: "{{{{ run.scheduled_for }}}}", day: "{{{{ run.logical_date[:10] }}}}"}}
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def service(store, registry):
    @registry.handler("echo")
    def echo(inputs, ctx):
        return inputs

    @registry.handler("boom")
    def boom(inputs, ctx):
        raise RuntimeError("boom")

    dispatcher = DirectDispatcher(registry)
    yield BatchService(store, dispatcher)
    dispatcher.close()


class Launches:
    """A launcher that runs instances at once (`run=True`) or leaves them running forever."""

    def __init__(self, service: BatchService, run: bool = True) -> None:
        self.service = service
        self.run = run
        self.ids: list[int] = []

    def __call__(self, prepared: PreparedRun, instance_id: int) -> None:
        self.ids.append(instance_id)
        if self.run:
            self.service.execute(prepared, instance_id)
        else:
            self.service.store.leases.start(instance_id, "elsewhere", utcnow() + timedelta(hours=1))


def scheduler(service, registry, text, clock, launch=None, grace=60.0):
    loaded = load_text(text, "every5.yaml", registry)
    launch = launch or Launches(service)
    return Scheduler(service, [loaded], registry, launch=launch, clock=clock, misfire_grace=grace)


def claims(service):
    """(tick, instance status or skipped reason) of every claimed tick, oldest first."""
    rows = service.store.ticks.recent("every5", limit=1000)
    return [(c.scheduled_for, c.status or f"skipped: {c.skipped_reason}") for c in reversed(rows)]


def test_a_first_scheduler_fires_the_latest_tick_within_the_grace_then_each_tick_once(
    service, registry
):
    clock = Clock(T0 + timedelta(seconds=20))
    s = scheduler(service, registry, definition(), clock)
    assert s.poll() == T0 + FIVE, "poll returns when the next tick is due"
    s.poll()
    for minutes in (5, 5.5, 10, 14, 15):
        clock.now = T0 + timedelta(minutes=minutes, seconds=1)
        s.poll()
    assert claims(service) == [
        (T0, "succeeded"),
        (T0 + FIVE, "succeeded"),
        (T0 + 2 * FIVE, "succeeded"),
        (T0 + 3 * FIVE, "succeeded"),
    ]


def test_a_first_scheduler_does_not_run_a_tick_older_than_the_grace(service, registry):
    clock = Clock(T0 + timedelta(minutes=2))
    scheduler(service, registry, definition(), clock).poll()
    assert claims(service) == []


def test_templates_see_the_tick_in_the_definitions_time_zone(service, registry):
    text = definition().replace('cron: "*/5 * * * *"', 'cron: "0 2 * * *"\ntimezone: Asia/Seoul')
    tick = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)  # 02:00 on the 26th in Seoul
    scheduler(service, registry, text, Clock(tick + timedelta(seconds=3))).poll()
    view = service.store.get_instance(service.store.ticks.recent("every5")[0].instance_id)
    assert view.trigger == "cron" and view.scheduled_for == tick
    assert view.steps[0].result == {"at": "2026-11-26T02:00:00+09:00", "day": "2026-11-26"}


def test_schedulers_racing_on_one_database_fire_each_tick_once(service, registry):
    clock = Clock(T0 + timedelta(seconds=1))
    launches = Launches(service)
    many = [scheduler(service, registry, definition(), clock, launches) for _ in range(3)]
    for step in range(12):
        clock.now = T0 + step * FIVE + timedelta(seconds=step % 7)
        for s in many[step % 3 :] + many[: step % 3]:
            s.poll()
    assert [tick for tick, _ in claims(service)] == [T0 + n * FIVE for n in range(12)]
    assert len(launches.ids) == 12 == len(set(launches.ids))


def _downtime(service, registry, catchup: str, overlap: str = "skip"):
    clock = Clock(T0 + timedelta(seconds=1))
    scheduler(service, registry, definition(catchup, overlap), clock).poll()
    clock.now = T0 + 6 * FIVE + timedelta(seconds=10)  # ticks 1..5 missed, tick 6 on time
    s = scheduler(service, registry, definition(catchup, overlap), clock)
    s.poll()
    return claims(service)


def test_catchup_none_records_the_latest_missed_tick_as_skipped(service, registry):
    assert _downtime(service, registry, "none") == [
        (T0, "succeeded"),
        (T0 + 5 * FIVE, "skipped: missed while no scheduler ran (catchup: none)"),
        (T0 + 6 * FIVE, "succeeded"),
    ]


def test_catchup_latest_runs_the_latest_missed_tick(service, registry):
    assert _downtime(service, registry, "latest") == [
        (T0, "succeeded"),
        (T0 + 5 * FIVE, "succeeded"),
        (T0 + 6 * FIVE, "succeeded"),
    ]


def test_catchup_all_runs_every_missed_tick_in_order(service, registry):
    got = _downtime(service, registry, "all")
    assert got == [(T0 + n * FIVE, "succeeded") for n in range(7)]
    ids = [c.instance_id for c in reversed(service.store.ticks.recent("every5"))]
    assert ids == sorted(ids), "instances are created in tick order"


def test_overlap_skip_records_the_tick_with_its_reason(service, registry):
    clock = Clock(T0 + timedelta(seconds=1))
    launches = Launches(service, run=False)
    s = scheduler(service, registry, definition(overlap="skip"), clock, launches)
    s.poll()
    clock.now += FIVE
    s.poll()
    first = launches.ids[0]
    assert claims(service) == [
        (T0, "running"),
        (T0 + FIVE, f"skipped: overlap: instance {first} is still running"),
    ]
    assert launches.ids == [first]


def test_overlap_queue_starts_the_queued_tick_when_the_previous_run_ends(service, registry):
    clock = Clock(T0 + timedelta(seconds=1))
    held = Launches(service, run=False)
    s = scheduler(service, registry, definition(overlap="queue"), clock, held)
    s.poll()
    clock.now += FIVE
    s.poll()
    clock.now += FIVE
    s.poll()
    assert claims(service) == [(T0, "running"), (T0 + FIVE, "pending"), (T0 + 2 * FIVE, "pending")]
    assert len(held.ids) == 1, "queued ticks wait"

    service.store.set_instance(held.ids[0], status="succeeded", finished_at=utcnow())
    other = scheduler(service, registry, definition(overlap="queue"), clock, Launches(service))
    other.poll()  # any scheduler starts the queue, one at a time, oldest first
    assert claims(service) == [
        (T0, "succeeded"),
        (T0 + FIVE, "succeeded"),
        (T0 + 2 * FIVE, "pending"),
    ]
    other.poll()
    assert [status for _, status in claims(service)] == ["succeeded"] * 3


def test_overlap_allow_runs_beside_the_previous_run(service, registry):
    clock = Clock(T0 + timedelta(seconds=1))
    held = Launches(service, run=False)
    s = scheduler(service, registry, definition(overlap="allow"), clock, held)
    s.poll()
    clock.now += FIVE
    s.poll()
    assert claims(service) == [(T0, "running"), (T0 + FIVE, "running")]


def test_an_abandoned_run_does_not_block_the_next_tick(service, registry):
    clock = Clock(T0 + timedelta(seconds=1))
    held = Launches(service, run=False)
    s = scheduler(service, registry, definition(overlap="skip"), clock, held)
    s.poll()
    service.store.set_instance(held.ids[0], lease_expires_at=utcnow() - timedelta(seconds=1))
    clock.now += FIVE
    s.poll()
    assert claims(service) == [(T0, "running"), (T0 + FIVE, "running")]


def test_a_failing_run_does_not_stop_the_schedule(service, registry):
    text = definition().replace("runner: echo", "runner: boom")
    clock = Clock(T0 + timedelta(seconds=1))
    s = scheduler(service, registry, text, clock)
    s.poll()
    clock.now += FIVE
    s.poll()
    assert claims(service) == [(T0, "failed"), (T0 + FIVE, "failed")]


def test_a_tick_whose_params_cannot_be_resolved_is_recorded_skipped(service, registry):
    text = definition(extra="params:\n  n: {type: integer, default: '{{ run.trigger }}'}")
    clock = Clock(T0 + timedelta(seconds=1))
    scheduler(service, registry, text, clock).poll()
    [(tick, outcome)] = claims(service)
    assert tick == T0 and outcome.startswith("skipped: cannot start:") and "integer" in outcome


@pytest.mark.parametrize(
    ("cron", "fired"),
    [
        ("30 2 * * *", ["2026-10-25T02:30:00+02:00"]),
        (
            "30 * * * *",
            [
                "2026-10-25T01:30:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:30:00+01:00",
                "2026-10-25T03:30:00+01:00",
            ],
        ),
    ],
)
def test_a_scheduler_across_the_fall_back_night(service, registry, cron, fired):
    text = definition().replace('cron: "*/5 * * * *"', f'cron: "{cron}"\ntimezone: Europe/Berlin')
    clock = Clock(datetime(2026, 10, 24, 23, 0, 30, tzinfo=UTC))  # 01:00:30 in Berlin
    s = scheduler(service, registry, text, clock)
    while clock.now < datetime(2026, 10, 25, 2, 59, tzinfo=UTC):
        s.poll()
        clock.now += timedelta(minutes=10)
    rows = reversed(service.store.ticks.recent("every5", limit=100))
    zone = ZoneInfo("Europe/Berlin")
    assert [(c.scheduled_for.astimezone(zone).isoformat(), c.status) for c in rows] == [
        (at, "succeeded") for at in fired
    ]


class Broken(CronSchedule):
    """A schedule whose tick computation raises, as croniter did for `0 0 30 2 *`."""

    def before(self, moment):
        raise RuntimeError("no tick for you")


def test_a_definition_that_raises_is_skipped_and_logged_once_while_the_others_fire(
    service, registry, caplog
):
    clock = Clock(T0 + timedelta(seconds=1))
    s = scheduler(service, registry, definition(), clock)
    broken = load_text(definition().replace("every5", "broken"), "broken.yaml", registry)
    s.schedules.insert(0, (broken, Broken("*/5 * * * *")))
    caplog.set_level(logging.INFO, "engine.scheduler")
    for _ in range(3):
        assert s.poll() == clock.now.replace(second=0) + FIVE
        assert s.health.failing == ("broken",) and s.health.last_round is not None
        clock.now += FIVE
    assert [tick for tick, _ in claims(service)] == [T0, T0 + FIVE, T0 + 2 * FIVE]
    [failure] = [r for r in caplog.records if r.name == "engine.scheduler" and r.exc_info]
    assert failure.getMessage() == "broken: round failed, retried each round: no tick for you"

    s.schedules[0] = (broken, CronSchedule("*/5 * * * *"))
    s.poll()
    assert s.health.failing == ()
    assert "broken: round succeeded again" in caplog.messages


def test_the_loop_outlives_an_unexpected_error_and_backs_off(service, registry, caplog):
    clock = Clock(T0 + timedelta(seconds=1))
    s = scheduler(service, registry, definition(), clock)
    stop = threading.Event()
    rounds = []

    def poll(stop_: threading.Event | None = None) -> datetime:
        rounds.append(clock.now)
        s.wake.set()  # no real wait between rounds
        if len(rounds) == 3:
            stop.set()
        if len(rounds) <= 2:
            raise RuntimeError(f"bug {len(rounds)}")
        return clock.now

    s.poll = poll  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, "engine.scheduler")
    s.run(stop)
    assert len(rounds) == 3
    failures = [r.getMessage() for r in caplog.records if r.exc_info]
    assert failures == [
        "round failed, retrying in 1 s: bug 1",
        "round failed, retrying in 2 s: bug 2",
    ]


def test_a_round_in_which_every_definition_fails_is_raised_for_the_loop_to_back_off(
    service, registry
):
    s = scheduler(service, registry, definition(), Clock(T0))
    loaded, _ = s.schedules[0]
    s.schedules[0] = (loaded, Broken("*/5 * * * *"))
    with pytest.raises(ScheduleError, match="every definition failed, the last with: no tick"):
        s.poll()
    assert s.health.failing == ("every5",)
