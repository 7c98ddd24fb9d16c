"""Behaviours a user relies on that broke once or could break quietly: each test fails when its
behaviour does."""

from __future__ import annotations

import threading
import time

import pytest
from executing import Recorder, final, rows, run

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.errors import InstanceTaken
from engine.service import BatchService
from engine.store import Store

pytestmark = pytest.mark.timeout(60)


def test_a_condition_that_raises_at_run_time_fails_the_step_without_its_runner(store, registry):
    rec = Recorder(registry)
    view = run(
        store,
        registry,
        """
        name: c
        steps:
          - {id: a, runner: r, nextSteps: [b]}
          - {id: b, runner: r, condition: "steps.a.result.missing.deeper > 1",
             nextSteps: [{step: handler, on: failure}]}
          - {id: handler, runner: r}
        """,
    )
    assert final(view) == {"a": "succeeded", "b": "failed", "handler": "succeeded"}
    assert "b" not in rec.called
    assert "condition" in rows(view, "b")[0].error


def test_a_timeout_left_from_an_earlier_attempt_does_not_fail_the_next(store, registry):
    """Attempt 1 fails at 0.6 s of a 1 s timeout; its deadline (1.0 s) falls inside attempt 2,
    which runs 0.6 to 1.3 s and must not be timed out by it."""

    def slowly(inputs, ctx):
        time.sleep(0.6 if ctx.attempt == 1 else 0.7)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "second attempt succeeds"

    registry.add("slowly", slowly)
    view = run(
        store,
        registry,
        """
        name: t
        steps:
          - {id: a, runner: slowly, timeoutSeconds: 1, retry: {maxAttempts: 2}}
        """,
    )
    assert [(s.attempt, s.status) for s in view.steps] == [(1, "failed"), (2, "succeeded")]
    assert "first attempt fails" in view.steps[0].error


def test_resume_never_runs_a_succeeded_always_step_again(store, registry):
    calls: list[str] = []
    fail = {"now": True}

    def work(inputs, ctx):
        calls.append(ctx.step_id)
        if ctx.step_id == "b" and fail["now"]:
            raise RuntimeError("b fails the first time")
        return ctx.step_id

    registry.add("work", work)
    text = (
        "name: r\nsteps:\n"
        "  - {id: a, runner: work, nextSteps: [b, {step: cleanup, on: always}]}\n"
        "  - {id: b, runner: work}\n"
        "  - {id: cleanup, runner: work}\n"
    )
    service = BatchService(store, DirectDispatcher(registry))
    failed = service.run(BatchService.prepare(load_text(text, "r.yaml", registry), {}))
    assert final(failed) == {"a": "succeeded", "b": "failed", "cleanup": "succeeded"}
    fail["now"] = False
    calls.clear()
    resumed = service.resume(failed.id, registry)
    assert resumed.status == "succeeded"
    assert calls == ["b"], "only the failed step runs again"


def test_a_pending_instance_cancelled_from_another_process_never_starts(db_url, store, registry):
    calls: list[str] = []
    registry.add("work", lambda inputs, ctx: calls.append(ctx.step_id))
    service = BatchService(store, DirectDispatcher(registry))
    prepared = service.prepare(
        load_text("name: p\nsteps:\n  - {id: a, runner: work}\n", "p.yaml", registry), {}
    )
    instance_id = service.start(prepared)
    other = Store(db_url)
    try:
        assert other.leases.request_cancel(instance_id) == f"instance {instance_id} cancelled"
    finally:
        other.close()
    with pytest.raises(InstanceTaken, match="is cancelled"):
        service.execute(prepared, instance_id)
    assert calls == []
    assert store.get_instance(instance_id).status == "cancelled"


def test_two_schedulers_racing_in_threads_for_one_tick_make_one_instance(db_url, store, registry):
    from datetime import UTC, datetime, timedelta

    from engine.scheduler import Scheduler

    registry.add("work", lambda inputs, ctx: None)
    text = "name: tick\ncron: '*/5 * * * *'\nsteps:\n  - {id: a, runner: work}\n"
    now = datetime(2026, 11, 26, 2, 0, 1, tzinfo=UTC)
    launched: list[int] = []
    stores = [store, Store(db_url)]
    schedulers = [
        Scheduler(
            BatchService(s, DirectDispatcher(registry)),
            [load_text(text, "tick.yaml", registry)],
            registry,
            launch=lambda prepared, instance_id: launched.append(instance_id),
            clock=lambda: now,
        )
        for s in stores
    ]
    barrier = threading.Barrier(2)

    def poll(scheduler: Scheduler) -> None:
        barrier.wait()
        scheduler.poll()

    threads = [threading.Thread(target=poll, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stores[1].close()
    assert len(set(launched)) == 1, "one instance (launched again until it starts: not twice)"
    assert len(store.list_instances("tick")) == 1
    claims = store.ticks.recent("tick", limit=10)
    assert [c.scheduled_for for c in claims] == [now - timedelta(seconds=1)]
