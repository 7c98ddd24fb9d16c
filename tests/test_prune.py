"""`engine runs prune`: old ended instances go with their attempts and log lines, in batches,
on SQLite and PostgreSQL, beside running instances and schedulers; their ticks never run again."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import force
from executing import WAIT, run
from test_cli import engine, no_traceback
from test_schedule_cli import wait_until
from test_scheduler import FIVE, T0, Clock, definition, scheduler

from engine.backfill import Backfill
from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.errors import InstanceNotFound
from engine.service import BatchService
from engine.store import Store, retention
from engine.store.retention import PruneCounts
from engine.store.tables import definitions, instances, step_logs, step_results
from engine.store.types import utcnow

OLD = utcnow() - timedelta(days=40)
CUTOFF = utcnow() - timedelta(days=30)

TWO_STEPS = """
name: {name}
steps:
  - {{id: a, runner: talk, nextSteps: [b]}}
  - {{id: b, runner: {second}}}
"""


@pytest.fixture
def runners(registry):
    @registry.handler("echo")
    def echo(inputs, ctx):
        return inputs

    @registry.handler("boom")
    def boom(inputs, ctx):
        raise RuntimeError("boom")

    @registry.handler("talk")
    def talk(inputs, ctx):
        for k in range(3):
            print("line", k)
        return {}

    return registry


@pytest.fixture
def service(store, runners):
    dispatcher = DirectDispatcher(runners)
    yield BatchService(store, dispatcher)
    dispatcher.close()


def ran(store, registry, name="etl", second="echo", finished=OLD) -> int:
    """An ended instance of `name` that finished at `finished`: two attempts, and the three log
    lines its first step printed."""
    view = run(store, registry, TWO_STEPS.format(name=name, second=second))
    force(store, view.id, finished_at=finished)
    return view.id


def add_log_lines(store: Store, instance_id: int, n: int) -> None:
    rows = [
        {
            "batch_instance_id": instance_id,
            "step_key": "a",
            "attempt": 1,
            "at": utcnow(),
            "level": "info",
            "stream": "stdout",
            "message": f"line {k}",
        }
        for k in range(n)
    ]
    with store.engine.begin() as conn:
        conn.execute(sa.insert(step_logs), rows)


def old_instances(store: Store, n: int) -> set[int]:
    """`n` instances that succeeded long ago, each with two attempts and three log lines,
    written directly: the history a prune beside live work has to get through."""
    version = store.save_definition("old", "v1", None, [], "name: old")
    row = {"definition_id": version, "definition_name": "old", "status": "succeeded"}
    row |= {"trigger": "cli", "params": {}, "finished_at": OLD, "created_at": OLD}
    with store.engine.begin() as conn:
        insert = sa.insert(instances).values(row)
        made = [conn.execute(insert).inserted_primary_key[0] for _ in range(n)]
        attempt = {"attempt": 1, "status": "succeeded", "created_at": OLD}
        conn.execute(
            sa.insert(step_results),
            [{"batch_instance_id": i, "step_key": k, **attempt} for i in made for k in "ab"],
        )
    for instance_id in made:
        add_log_lines(store, instance_id, 3)
    return set(made)


def count(store: Store, table, where=None) -> int:
    query = sa.select(sa.func.count()).select_from(table)
    with store.engine.connect() as conn:
        return conn.execute(query if where is None else query.where(where)).scalar_one()


def remaining(store: Store) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.execute(sa.select(instances.c.id)).scalars())


def children(store: Store, instance_id: int) -> tuple[int, int]:
    """(attempts, log lines) of an instance."""
    return (
        count(store, step_results, step_results.c.batch_instance_id == instance_id),
        count(store, step_logs, step_logs.c.batch_instance_id == instance_id),
    )


# -- what goes and what stays -----------------------------------------------------------------


def test_old_ended_instances_go_with_their_attempts_and_log_lines(store, runners):
    succeeded, failed = ran(store, runners), ran(store, runners, second="boom")
    cancelled = ran(store, runners)
    force(store, cancelled, status="cancelled")
    recent = ran(store, runners, finished=utcnow() - timedelta(days=1))
    versions = count(store, definitions)

    counts = store.retention.prune(CUTOFF)

    assert counts == PruneCounts(instances=3, attempts=6, log_lines=9)
    assert remaining(store) == {recent}
    for gone in (succeeded, failed, cancelled):
        assert children(store, gone) == (0, 0)
        with pytest.raises(InstanceNotFound):
            store.get_instance(gone)
    assert children(store, recent) == (2, 3)
    assert count(store, definitions) == versions, "definition versions are shared: they stay"


def test_pending_and_running_instances_stay_however_old(store, runners):
    pending, running = ran(store, runners), ran(store, runners)
    force(store, pending, status="pending", created_at=OLD)
    force(store, running, status="running", started_at=OLD)  # resumed, its old end still set

    assert store.retention.prune(utcnow() + timedelta(days=1)) == PruneCounts()
    assert remaining(store) == {pending, running}
    assert children(store, running) == (2, 3)


def test_definition_limits_the_prune_to_one_definition(store, runners):
    etl = ran(store, runners, "etl")
    ran(store, runners, "other")
    assert store.retention.prune(CUTOFF, "other") == PruneCounts(1, 2, 3)
    assert remaining(store) == {etl}


def test_a_count_says_what_a_prune_deletes_and_deletes_nothing(store, runners):
    etl = {ran(store, runners) for _ in range(3)}
    other = ran(store, runners, "other")
    expected = PruneCounts(instances=3, attempts=6, log_lines=9)
    assert store.retention.count(CUTOFF, "etl") == expected
    assert remaining(store) == {*etl, other}
    assert store.retention.prune(CUTOFF, "etl") == expected
    assert remaining(store) == {other}


def test_a_prune_deletes_in_batches_each_its_own_transaction(store, runners):
    for _ in range(5):
        ran(store, runners)
    commits: list[int] = []
    sa.event.listen(store.engine, "commit", lambda conn: commits.append(1))
    assert store.retention.prune(CUTOFF, batch_size=2).instances == 5
    assert len(commits) == 4, "batches of 2, 2 and 1, then one that finds none left"
    assert remaining(store) == set()


# -- beside running instances and schedulers --------------------------------------------------


def test_a_prune_and_a_running_instance_both_succeed(store, runners):
    old = old_instances(store, 200)
    pruning, pruned = threading.Event(), threading.Event()
    during: list[int] = []

    @runners.handler("until_pruned")
    def until_pruned(inputs, ctx):
        """Fails, and is retried (each attempt a write), until the prune has ended."""
        if pruning.is_set() and not pruned.is_set():
            during.append(ctx.attempt)
        if not pruned.is_set():
            raise RuntimeError("still pruning")
        return {"attempts": ctx.attempt}

    live_run = """
name: live
steps:
  - id: wait
    runner: until_pruned
    retry: {maxAttempts: 1000, delaySeconds: 0.01}
    nextSteps: [after]
  - {id: after, runner: echo}
"""
    views: list = []
    live = threading.Thread(target=lambda: views.append(run(store, runners, live_run)))
    live.start()
    wait_until(lambda: count(store, step_results) > 2 * len(old), "the live instance runs", WAIT)
    pruning.set()
    wait_until(lambda: during, "the live instance writes with the prune under way", WAIT)
    counts = store.retention.prune(utcnow(), batch_size=2)
    pruned.set()
    live.join(WAIT * 3)

    assert counts == PruneCounts(instances=200, attempts=400, log_lines=600)
    assert not live.is_alive() and views[0].status == "succeeded", views
    assert remaining(store) == {views[0].id}


def test_two_prunes_at_once_share_the_work(store):
    old_instances(store, 200)
    results: list[PruneCounts] = []
    both = [
        threading.Thread(target=lambda: results.append(store.retention.prune(CUTOFF, None, 2)))
        for _ in range(2)
    ]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join(WAIT * 3)
    assert len(results) == 2, "both prunes ended without an error"
    assert sum(results, PruneCounts()) == PruneCounts(200, 400, 600)
    assert remaining(store) == set()


def test_a_pruned_tick_is_never_run_again_by_a_scheduler(store, runners, service):
    clock = Clock(T0 + timedelta(seconds=1))
    first = scheduler(service, runners, definition("all"), clock)
    for n in range(4):
        clock.now = T0 + n * FIVE + timedelta(seconds=1)
        first.poll()
    assert count(store, instances) == 4

    assert store.retention.prune(utcnow()).instances == 4

    restarted = scheduler(service, runners, definition("all"), clock)
    restarted.poll()
    assert count(store, instances) == 0, "the takeover point is still the last tick"
    clock.now = T0 + 6 * FIVE + timedelta(seconds=1)
    restarted.poll()  # catchup: all runs the ticks after the last claimed one, none before
    claimed = store.ticks.recent("every5", limit=100)
    assert [(c.scheduled_for, c.status) for c in reversed(claimed)] == [
        *((T0 + n * FIVE, "pruned") for n in range(4)),
        (T0 + 4 * FIVE, "succeeded"),
        (T0 + 5 * FIVE, "succeeded"),
        (T0 + 6 * FIVE, "succeeded"),
    ]
    assert all(c.instance_id is None for c in claimed[3:])


def test_a_backfill_reports_a_pruned_tick_and_does_not_run_it(store, runners, service):
    clock = Clock(T0 + timedelta(seconds=1))
    scheduler(service, runners, definition(), clock).poll()
    assert store.retention.prune(utcnow()).instances == 1

    loaded = load_text(definition(), "every5.yaml", runners)
    outcomes = Backfill(service, loaded, runners).run(T0, T0, lambda _: None)
    assert [(o.status, o.how, o.instance_id) for o in outcomes] == [("pruned", "earlier", None)]
    assert count(store, instances) == 0


def test_a_prune_beside_a_scheduler_firing_ticks(store, runners, service, monkeypatch):
    """The prune's batches and the scheduler's ticks interleave (each batch waits for a tick
    fired since the last one, so that they do whatever the machine's speed): every old instance
    goes, every tick runs, nothing fails."""
    old = old_instances(store, 40)
    clock = Clock(T0 + timedelta(seconds=1))
    firing = scheduler(service, runners, definition("all", "allow"), clock)
    errors: list[BaseException] = []
    pruned: list[PruneCounts] = []
    fired = threading.Semaphore(0)
    batch = retention._prune_batch

    def after_a_tick(conn, prunable, limit):
        fired.acquire(timeout=WAIT)
        return batch(conn, prunable, limit)

    monkeypatch.setattr(retention, "_prune_batch", after_a_tick)

    def prune() -> None:
        try:
            pruned.append(store.retention.prune(CUTOFF, batch_size=2))
        except BaseException as exc:  # the test asserts there is none
            errors.append(exc)

    pruning = threading.Thread(target=prune)
    pruning.start()
    ticks_during = 0
    while pruning.is_alive():  # a round raises when its one definition fails
        clock.now = T0 + ticks_during * FIVE + timedelta(seconds=1)
        firing.poll()
        ticks_during += 1
        fired.release()
    pruning.join()

    assert errors == [] and pruned[0].instances == 40
    assert ticks_during >= 20, "a tick was fired between any two batches of the prune"
    assert remaining(store).isdisjoint(old)
    claimed = store.ticks.recent("every5", limit=1000)
    assert len(claimed) == ticks_during and {c.status for c in claimed} == {"succeeded"}


# -- the command ------------------------------------------------------------------------------


def test_the_command_dry_runs_then_prunes_one_definition_then_all(tmp_path, store, runners):
    etl, other = ran(store, runners, "etl"), ran(store, runners, "other", second="boom")
    recent = ran(store, runners, "etl", finished=utcnow())
    db = ("--db", store.url)

    dry = engine(tmp_path, "runs", "prune", "--older-than", "30d", "--dry-run", "--json", *db)
    assert dry.code == 0, dry
    assert dry.json() == {"instances": 2, "attempts": 4, "log_lines": 6, "dry_run": True}
    assert "would prune 2 instances" in dry.err and "nothing deleted" in dry.err, dry
    assert remaining(store) == {etl, other, recent}

    one = engine(tmp_path, "runs", "prune", "--older-than", "30d", "--definition", "other", *db)
    assert one.code == 0 and one.out == "", one
    assert one.err.strip().count("\n") == 0, "a one-line summary"
    assert "pruned 1 instances of other (2 attempts, 3 log lines)" in one.err, one
    assert remaining(store) == {etl, recent}

    rest = engine(tmp_path, "runs", "prune", "--older-than", "720h", "--json", *db)
    assert rest.code == 0, rest
    assert rest.json() == {"instances": 1, "attempts": 2, "log_lines": 3, "dry_run": False}
    assert remaining(store) == {recent}


@pytest.mark.parametrize("value", ["30x", "30", "d", "1.5d", "-5d", "0d", "40000d", ""])
def test_a_bad_older_than_is_a_usage_error_and_deletes_nothing(
    tmp_path, sqlite_store, runners, value
):
    kept = ran(sqlite_store, runners)
    r = engine(tmp_path, "runs", "prune", "--older-than", value, "--db", sqlite_store.url)
    assert r.code == 2, r
    no_traceback(r)
    assert "Invalid value for '--older-than'" in r.err and repr(value) in r.err, r
    assert r.out == ""
    assert remaining(sqlite_store) == {kept}


def test_older_than_is_required(tmp_path):
    r = engine(tmp_path, "runs", "prune", "--db", f"sqlite:///{tmp_path / 'engine.db'}")
    assert r.code == 2 and "Missing option '--older-than'" in r.err, r
