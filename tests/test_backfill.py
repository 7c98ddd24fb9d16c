"""Backfill fills its range: every tick's instance once, in order; it waits instead of skipping,
takes over skipped ticks, recovers dead ones and resumes failed ones when asked."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from conftest import force
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cron import crons, oracle

import engine.backfill
from engine.backfill import Backfill, ticks_in_range
from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.errors import ScheduleError
from engine.execution import Cancellation
from engine.service import BatchService
from engine.status import InstanceStatus, Trigger
from engine.store.types import utcnow

START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def text(cron: str = "0 * * * *", overlap: str = "skip", name: str = "hourly") -> str:
    return f"""
name: {name}
cron: "{cron}"
overlap: {overlap}
steps:
  - {{id: a, runner: echo, inputs: {{at: "{{{{ run.scheduled_for }}}}"}}}}
"""


class Echo:
    """The `echo` runner, counting calls per tick; fails ticks listed in `failing`."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failing: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, inputs, ctx):
        with self.lock:
            self.calls.append(inputs["at"])
        if inputs["at"] in self.failing:
            raise RuntimeError(f"no data for {inputs['at']}")
        return inputs


@pytest.fixture
def echo(registry):
    runner = Echo()
    registry.handler("echo")(runner)
    return runner


@pytest.fixture
def service(store, registry, echo):
    dispatcher = DirectDispatcher(registry)
    yield BatchService(store, dispatcher)
    dispatcher.close()


@pytest.fixture
def waits(monkeypatch):
    """Each time a backfill waits, set; its waits are short."""
    waited = threading.Event()

    def sleep(seconds):
        waited.set()
        time.sleep(0.01)

    monkeypatch.setattr(engine.backfill, "time", SimpleNamespace(sleep=sleep))
    return waited


def fill(service, registry, start, end, source=None, **options):
    loaded = load_text(source or text(), "hourly.yaml", registry)
    return Backfill(service, loaded, registry, **options).run(start, end, lambda _: None)


def hours(n):
    return [START + k * HOUR for k in range(n)]


def scheduled_run(service, registry, tick, owner="scheduler-elsewhere"):
    """A cron instance of `tick` that another, live process runs."""
    prepared = service.prepare(load_text(text(), "hourly.yaml", registry), {}, Trigger.cron, tick)
    instance_id = service.start(prepared, tick_claimed_by=owner)
    service.store.leases.start(instance_id, owner, utcnow() + timedelta(hours=1))
    return instance_id


def in_thread(target):
    results: list = []
    thread = threading.Thread(target=lambda: results.append(target()))
    thread.start()
    return thread, results


def test_every_tick_of_the_range_runs_once_in_order(service, registry):
    outcomes = fill(service, registry, START, START + 4 * HOUR)
    assert [o.tick for o in outcomes] == hours(5)
    assert [(o.status, o.how) for o in outcomes] == [("succeeded", "ran")] * 5
    ids = [o.instance_id for o in outcomes]
    assert ids == sorted(ids)
    view = service.store.get_instance(ids[2])
    assert view.trigger == "backfill" and view.scheduled_for == START + 2 * HOUR
    assert view.steps[0].result == {"at": "2026-11-01T02:00:00+00:00"}


def test_ticks_that_already_succeeded_are_reported_not_run_again(service, registry, echo):
    first = fill(service, registry, START, START + 2 * HOUR)
    again = fill(service, registry, START, START + 3 * HOUR)
    assert [(o.status, o.how) for o in again] == [("succeeded", "earlier")] * 3 + [
        ("succeeded", "ran")
    ]
    assert [o.instance_id for o in again[:3]] == [o.instance_id for o in first]
    assert len(echo.calls) == 4 and len(service.store.list_instances(limit=100)) == 4


def test_racing_backfills_fill_each_tick_once_even_with_overlap_skip(service, registry, echo):
    service.store.ticks.skip("hourly", START + 3 * HOUR, "cron", "scheduler-x", "overlap: test")
    end = START + 11 * HOUR
    racers = [in_thread(lambda: fill(service, registry, START, end)) for _ in range(3)]
    for thread, _ in racers:
        thread.join(120)
    outcomes = [o for _, results in racers for o in results[0]]
    assert {o.status for o in outcomes} == {"succeeded"}, outcomes
    assert sorted(echo.calls) == [t.isoformat() for t in hours(12)], "each tick once"
    instances = service.store.list_instances(limit=100)
    assert len(instances) == 12 and {v.status for v in instances} == {"succeeded"}


def test_a_tick_waits_for_an_overlapping_scheduled_run_instead_of_skipping(
    service, registry, waits
):
    blocker = scheduled_run(service, registry, START - HOUR)
    thread, results = in_thread(lambda: fill(service, registry, START, START))
    assert waits.wait(30), "the backfill waits"
    assert service.store.ticks.find("hourly", START) is None, "nothing claimed while it waits"
    service.store.leases.finish(blocker, "scheduler-elsewhere", InstanceStatus.succeeded, None)
    thread.join(30)
    [outcome] = results[0]
    assert (outcome.status, outcome.how) == ("succeeded", "ran")
    ran = service.store.get_instance(outcome.instance_id)
    assert ran.started_at >= service.store.get_instance(blocker).finished_at


def test_a_tick_skipped_by_a_scheduler_is_taken_over(service, registry):
    service.store.ticks.skip("hourly", START, "cron", "scheduler-x", "overlap: instance 7")
    [outcome] = fill(service, registry, START, START)
    assert (outcome.status, outcome.how) == ("succeeded", "took over")
    assert outcome.detail == "skipped earlier: overlap: instance 7"
    claim = service.store.ticks.find("hourly", START)
    assert claim.instance_id == outcome.instance_id and claim.skipped_reason is None
    assert (claim.trigger, claim.claimed_by) == ("cron", "scheduler-x"), "who claimed it first"


def test_a_failed_tick_fails_the_backfill_until_rerun_failed_resumes_it(service, registry, echo):
    echo.failing.add(START.isoformat())
    [ran] = fill(service, registry, START, START)
    assert (ran.status, ran.how, ran.detail) == ("failed", "ran", "failed steps: a")
    [again] = fill(service, registry, START, START)
    assert (again.status, again.how) == ("failed", "earlier")
    assert again.detail.endswith("--rerun-failed resumes it")
    echo.failing.clear()
    [rerun] = fill(service, registry, START, START, rerun_failed=True)
    assert (rerun.status, rerun.how, rerun.instance_id) == ("succeeded", "rerun", ran.instance_id)
    attempts = service.store.get_instance(ran.instance_id).steps
    assert [(a.attempt, a.status) for a in attempts] == [(1, "failed"), (2, "succeeded")]


def test_an_instance_whose_process_died_is_recovered(service, registry, echo):
    dead = scheduled_run(service, registry, START, owner="backfill:dead")
    force(service.store, dead, lease_expires_at=utcnow() - timedelta(seconds=1))
    [outcome] = fill(service, registry, START, START)
    assert (outcome.status, outcome.how, outcome.instance_id) == ("succeeded", "recovered", dead)
    assert echo.calls == [START.isoformat()]


def test_a_tick_another_process_runs_is_waited_for(service, registry, echo, waits):
    elsewhere = scheduled_run(service, registry, START)
    thread, results = in_thread(lambda: fill(service, registry, START, START, rerun_failed=True))
    assert waits.wait(30)
    service.store.leases.finish(elsewhere, "scheduler-elsewhere", InstanceStatus.failed, "boom")
    thread.join(30)
    [outcome] = results[0]
    assert (outcome.status, outcome.how, outcome.detail) == ("failed", "waited", "boom")
    assert echo.calls == [], "a failure it watched happen is reported, not rerun"


def test_stopping_a_waiting_backfill_runs_nothing_more(service, registry, waits):
    scheduled_run(service, registry, START - HOUR)
    stop = Cancellation()
    loaded = load_text(text(), "hourly.yaml", registry)
    filling = Backfill(service, loaded, registry, stop=stop)
    thread, results = in_thread(lambda: filling.run(START, START + 5 * HOUR, lambda _: None))
    assert waits.wait(30)
    stop.cancel("stopped by SIGTERM")
    thread.join(30)
    [outcome] = results[0]
    assert (outcome.status, outcome.how, outcome.detail) == (
        "not run",
        "stopped",
        "stopped by SIGTERM",
    )
    assert service.store.ticks.find("hourly", START) is None


def test_unusable_ranges_are_refused(service, registry):
    loaded = load_text(text(), "hourly.yaml", registry)
    with pytest.raises(ScheduleError, match="is after --end"):
        ticks_in_range(loaded, START, START - timedelta(seconds=1))
    with pytest.raises(ScheduleError, match="in the future"):
        ticks_in_range(loaded, START, utcnow() + timedelta(days=1))
    no_cron = load_text(text().replace('cron: "0 * * * *"', ""), "x.yaml", registry)
    with pytest.raises(ScheduleError, match="has no cron"):
        ticks_in_range(no_cron, START, START)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cron=crons,
    offset=st.integers(0, 365 * 24 * 60),
    span=st.integers(0, 90),
    seconds=st.integers(0, 59),
)
def test_backfill_runs_exactly_croniters_ticks(sqlite_store, registry, cron, offset, span, seconds):
    if "echo" not in registry:  # hypothesis reuses the fixture across examples
        registry.handler("echo")(lambda inputs, ctx: inputs)
    service = BatchService(sqlite_store, DirectDispatcher(registry))
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=offset, seconds=seconds)
    end = start + timedelta(minutes=span)
    expected = oracle(cron, start, end)
    name = f"h{abs(hash((cron, offset, span, seconds)))}"
    outcomes = fill(service, registry, start, end, text(cron, name=name))
    assert [o.tick for o in outcomes] == expected
    assert all(o.status == "succeeded" for o in outcomes)
    assert [c.scheduled_for for c in reversed(sqlite_store.ticks.recent(name, 1000))] == expected
