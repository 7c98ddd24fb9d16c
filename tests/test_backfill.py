"""Backfill: every tick of a past range once, in order; ticks that ran are reported, not rerun."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cron import crons, oracle

from engine.backfill import backfill, ticks_in_range
from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.errors import ScheduleError
from engine.service import BatchService
from engine.status import Trigger
from engine.store.types import utcnow

START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)


def text(cron: str = "0 * * * *", overlap: str = "skip") -> str:
    return f"""
name: hourly
cron: "{cron}"
overlap: {overlap}
steps:
  - {{id: a, runner: echo, inputs: {{at: "{{{{ run.scheduled_for }}}}"}}}}
"""


@pytest.fixture
def service(store, registry):
    @registry.handler("echo")
    def echo(inputs, ctx):
        return inputs

    dispatcher = DirectDispatcher(registry)
    yield BatchService(store, dispatcher)
    dispatcher.close()


def run(service, registry, start, end, source=None):
    loaded = load_text(source or text(), "hourly.yaml", registry)
    return backfill(service, loaded, start, end, report=lambda _: None)


def test_every_tick_of_the_range_runs_once_in_order(service, registry):
    outcomes = run(service, registry, START, START + timedelta(hours=4))
    assert [o.tick for o in outcomes] == [START + timedelta(hours=n) for n in range(5)]
    assert [o.status for o in outcomes] == ["succeeded"] * 5
    ids = [o.instance_id for o in outcomes]
    assert ids == sorted(ids)
    view = service.store.get_instance(ids[2])
    assert view.trigger == "backfill" and view.scheduled_for == START + timedelta(hours=2)
    assert view.steps[0].result == {"at": "2026-11-01T02:00:00+00:00"}


def test_ticks_that_already_ran_are_reported_not_run_again(service, registry):
    first = run(service, registry, START, START + timedelta(hours=2))
    again = run(service, registry, START, START + timedelta(hours=3))
    assert [o.status for o in again] == ["claimed"] * 3 + ["succeeded"]
    assert again[0].instance_id == first[0].instance_id
    assert again[0].detail == f"already ran: instance {first[0].instance_id} is succeeded"
    assert len(service.store.list_instances(limit=100)) == 4


def test_racing_backfills_run_each_tick_once(service, registry):
    end = START + timedelta(hours=11)
    results: list = []
    threads = [
        threading.Thread(
            target=lambda: results.append(run(service, registry, START, end, text(overlap="queue")))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ran = [o.tick for outcomes in results for o in outcomes if o.status == "succeeded"]
    assert sorted(ran) == [START + timedelta(hours=n) for n in range(12)], "each tick once"
    instances = service.store.list_instances(limit=100)
    assert len(instances) == 12 and {v.status for v in instances} == {"succeeded"}


def test_overlap_skip_records_a_tick_while_a_scheduled_run_is_running(service, registry):
    loaded = load_text(text(), "hourly.yaml", registry)
    prepared = service.prepare(loaded, {}, Trigger.cron, START - timedelta(hours=1))
    running = service.start(prepared, tick_claimed_by="scheduler-elsewhere")
    service.store.leases.start(running, "elsewhere", utcnow() + timedelta(hours=1))
    [outcome] = backfill(service, loaded, START, START, report=lambda _: None)
    assert outcome.status == "skipped"
    assert outcome.detail == f"overlap: instance {running} is still running"
    assert service.store.ticks.find("hourly", START).skipped_reason == outcome.detail


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
    loaded = load_text(text(cron).replace("name: hourly", f"name: {name}"), "h.yaml", registry)
    outcomes = backfill(service, loaded, start, end, report=lambda _: None)
    assert [o.tick for o in outcomes] == expected
    assert all(o.status == "succeeded" for o in outcomes)
    assert [c.scheduled_for for c in reversed(sqlite_store.ticks.recent(name, 1000))] == expected
