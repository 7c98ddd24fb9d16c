"""The direct dispatcher on its own: what it hands back for each submitted attempt, and how it
behaves with runners that misbehave (raise, exit, never return, ignore cancellation)."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import threading
import time
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

from engine.dispatch.base import StepOutcome, StepTask
from engine.dispatch.direct import DirectDispatcher

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0


def task(
    step: str,
    runner: str | None = None,
    *,
    attempt: int = 1,
    inputs=None,
    instance_id: int = 1,
    timeout: float | None = None,
) -> StepTask:
    return StepTask(
        instance_id,
        step,
        attempt,
        runner or step,
        inputs or {},
        {"p": 1},
        {"up": {"v": 2}},
        {"id": instance_id, "trigger": "cli"},
        timeout,
    )


class Outcomes:
    """Collects outcomes from any thread; `wait(n)` blocks until n arrived (a drain)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: list[StepOutcome] = []
        self.threads: list[str] = []

    def __call__(self, outcome: StepOutcome) -> None:
        with self.cond:
            self.items.append(outcome)
            self.threads.append(threading.current_thread().name)
            self.cond.notify_all()

    def wait(self, n: int) -> list[StepOutcome]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= n, WAIT), self.items
            return list(self.items)

    def by_step(self) -> dict[str, StepOutcome]:
        with self.cond:
            return {o.task.step_id: o for o in self.items}

    def counts(self) -> Counter[tuple[str, int]]:
        with self.cond:
            return Counter((o.task.step_id, o.task.attempt) for o in self.items)


@pytest.fixture
def dispatcher(registry):
    d = DirectDispatcher(registry)
    yield d
    d.close()


def flush(dispatcher: DirectDispatcher, registry) -> None:
    """Run one more sync and one more async attempt to the end: callbacks queued before them on
    the event loop have run by then."""
    if "_flush_sync" not in registry:
        registry.add("_flush_sync", lambda inputs, ctx: None)

        async def _flush_async(inputs, ctx):
            return None

        registry.add("_flush_async", _flush_async)
    got = Outcomes()
    dispatcher.submit(task("flush_s", "_flush_sync", instance_id=999), got)
    dispatcher.submit(task("flush_a", "_flush_async", instance_id=999), got)
    got.wait(2)


def test_sync_and_async_results_come_back_with_the_task(dispatcher, registry):
    registry.add("sync", lambda inputs, ctx: {"got": inputs, "step": ctx.step_id})

    @registry.handler("aio")
    async def aio(inputs, ctx):
        await asyncio.sleep(0)
        return {"got": inputs, "attempt": ctx.attempt}

    out = Outcomes()
    t1, t2 = task("s", "sync", inputs={"x": 1}), task("a", "aio", inputs={"y": 2}, attempt=3)
    dispatcher.submit(t1, out)
    dispatcher.submit(t2, out)
    out.wait(2)
    got = out.by_step()
    assert got["s"].ok and got["s"].result == {"got": {"x": 1}, "step": "s"}
    assert got["s"].task == t1
    assert got["a"].ok and got["a"].result == {"got": {"y": 2}, "attempt": 3}
    assert got["a"].task == t2


def test_the_context_carries_what_the_task_says(dispatcher, registry):
    seen: dict[str, Any] = {}

    @registry.handler("look")
    def look(inputs, ctx):
        seen.update(
            instance_id=ctx.instance_id,
            step_id=ctx.step_id,
            attempt=ctx.attempt,
            params=ctx.params,
            results=ctx.results,
            run=ctx.run,
            cancelled=ctx.cancelled,
            logger=ctx.logger is not None,
        )

    out = Outcomes()
    dispatcher.submit(task("look", instance_id=7, attempt=2), out)
    out.wait(1)
    assert seen == {
        "instance_id": 7,
        "step_id": "look",
        "attempt": 2,
        "params": {"p": 1},
        "results": {"up": {"v": 2}},
        "run": {"id": 7, "trigger": "cli"},
        "cancelled": False,
        "logger": True,
    }


def test_a_raising_runner_gives_a_failed_outcome_with_message_and_traceback(dispatcher, registry):
    def inner():
        raise KeyError("missing-column")

    registry.add("boom", lambda inputs, ctx: inner())

    @registry.handler("aboom")
    async def aboom(inputs, ctx):
        inner()

    out = Outcomes()
    dispatcher.submit(task("boom"), out)
    dispatcher.submit(task("aboom"), out)
    out.wait(2)
    for outcome in out.items:
        assert outcome.ok is False
        assert outcome.result is None
        assert outcome.error.startswith("KeyError: ")
        assert "missing-column" in outcome.error
        assert "Traceback (most recent call last)" in outcome.error
        assert "in inner" in outcome.error


def test_results_must_be_json_and_pydantic_models_are_dumped(dispatcher, registry):
    class Row(BaseModel):
        n: int

    registry.add("model", lambda inputs, ctx: Row(n=3))
    registry.add("bad", lambda inputs, ctx: {"s": {1, 2}})
    out = Outcomes()
    dispatcher.submit(task("model"), out)
    dispatcher.submit(task("bad"), out)
    out.wait(2)
    got = out.by_step()
    assert got["model"].ok and got["model"].result == {"n": 3}
    assert got["bad"].ok is False
    assert "JSON" in got["bad"].error


def test_an_unknown_runner_key_is_a_failed_outcome_naming_the_known_keys(dispatcher, registry):
    registry.add("alpha", lambda inputs, ctx: 1)
    registry.add("beta", lambda inputs, ctx: 1)
    out = Outcomes()
    dispatcher.submit(task("x", "gamma"), out)
    (outcome,) = out.wait(1)
    assert outcome.ok is False
    assert "RunnerNotFound" in outcome.error
    assert "gamma" in outcome.error
    assert "alpha" in outcome.error and "beta" in outcome.error
    flush(dispatcher, registry)
    assert out.counts() == {("x", 1): 1}


def test_every_outcome_is_delivered_exactly_once(dispatcher, registry):
    release = threading.Event()
    registry.add("ok", lambda inputs, ctx: inputs["i"])
    registry.add("fail", lambda inputs, ctx: 1 / 0)

    @registry.handler("aok")
    async def aok(inputs, ctx):
        await asyncio.sleep(0)
        return inputs["i"]

    @registry.handler("hang_async")
    async def hang_async(inputs, ctx):
        await asyncio.sleep(WAIT * 3)

    @registry.handler("hang_sync")
    def hang_sync(inputs, ctx):
        ctx.cancel_event.wait(WAIT)
        release.wait(WAIT)
        return "late"

    out = Outcomes()
    tasks = [
        task(f"{kind}{i}", kind, inputs={"i": i})
        for i in range(5)
        for kind in ("ok", "fail", "aok")
    ]
    tasks += [task("missing", "nope"), task("ha", "hang_async"), task("hs", "hang_sync")]
    for t in tasks:
        dispatcher.submit(t, out)
    out.wait(len(tasks) - 2)
    dispatcher.cancel(tasks[-2])
    dispatcher.cancel(tasks[-1])
    release.set()
    out.wait(len(tasks))
    flush(dispatcher, registry)
    assert out.counts() == {(t.step_id, 1): 1 for t in tasks}
    got = out.by_step()
    assert all(got[f"ok{i}"].result == i and got[f"aok{i}"].result == i for i in range(5))
    assert got["ha"].ok is False


def test_cancel_sets_the_cancel_event_of_a_sync_runner(dispatcher, registry):
    started = threading.Event()

    @registry.handler("polite")
    def polite(inputs, ctx):
        started.set()
        return {"cancelled": ctx.cancel_event.wait(WAIT)}

    out = Outcomes()
    t = task("polite")
    dispatcher.submit(t, out)
    assert started.wait(WAIT)
    dispatcher.cancel(t)
    (outcome,) = out.wait(1)
    assert outcome.result == {"cancelled": True}


def test_cancel_really_cancels_an_async_runner(dispatcher, registry):
    started, cancelled = threading.Event(), threading.Event()

    @registry.handler("forever")
    async def forever(inputs, ctx):
        started.set()
        try:
            await asyncio.sleep(WAIT * 3)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    out = Outcomes()
    t = task("forever")
    dispatcher.submit(t, out)
    assert started.wait(WAIT)
    dispatcher.cancel(t)
    assert cancelled.wait(WAIT)
    (outcome,) = out.wait(1)
    assert outcome.ok is False
    flush(dispatcher, registry)
    assert out.counts() == {("forever", 1): 1}


def test_cancel_of_another_attempt_leaves_the_running_one_alone(dispatcher, registry):
    started, release = threading.Event(), threading.Event()

    @registry.handler("work")
    def work(inputs, ctx):
        started.set()
        release.wait(WAIT)
        return {"cancelled": ctx.cancelled}

    out = Outcomes()
    dispatcher.submit(task("work", attempt=2), out)
    assert started.wait(WAIT)
    dispatcher.cancel(task("work", attempt=1))
    dispatcher.cancel(task("work", attempt=2, instance_id=2))
    release.set()
    (outcome,) = out.wait(1)
    assert outcome.result == {"cancelled": False}


def test_a_runaway_runner_does_not_block_later_attempts(dispatcher, registry):
    release = threading.Event()
    registry.add("stuck", lambda inputs, ctx: release.wait(WAIT))
    registry.add("quick", lambda inputs, ctx: "done")
    out = Outcomes()
    try:
        dispatcher.submit(task("stuck"), out)
        dispatcher.submit(task("quick"), out)
        (outcome,) = out.wait(1)
        assert outcome.task.step_id == "quick" and outcome.result == "done"
    finally:
        release.set()
    out.wait(2)


def test_system_exit_in_a_runner_is_a_failed_outcome_and_the_worker_lives_on(dispatcher, registry):
    def leave(inputs, ctx):
        raise SystemExit(2)

    registry.add("leave", leave)
    registry.add("after", lambda inputs, ctx: "still here")
    out = Outcomes()
    for i in range(3):
        dispatcher.submit(task(f"leave{i}", "leave"), out)
    out.wait(3)
    assert all(not o.ok and "SystemExit" in o.error for o in out.items)
    dispatcher.submit(task("after"), out)
    assert out.wait(4)[-1].result == "still here"


def test_os_exit_in_a_runner_fails_the_attempt_and_the_engine_lives_on(dispatcher, registry):
    async def leave_async(inputs, ctx):
        os._exit(0)

    registry.add("leave", lambda inputs, ctx: os._exit(0))
    registry.add("leave_async", leave_async)
    out = Outcomes()
    dispatcher.submit(task("leave"), out)
    dispatcher.submit(task("leave_async"), out)
    for outcome in out.wait(2):
        assert not outcome.ok
        assert outcome.error.startswith("SystemExit: os._exit(0) called by the runner: refused")


def test_a_process_forked_by_a_runner_still_exits_with_os_exit(dispatcher, registry):
    def fork(inputs, ctx):
        child = multiprocessing.get_context("fork").Process(target=lambda: None)
        child.start()
        child.join(10)
        return child.exitcode

    registry.add("fork", fork)
    out = Outcomes()
    dispatcher.submit(task("fork"), out)
    (outcome,) = out.wait(1)
    assert outcome.result == 0, outcome.error


def test_class_runners_get_a_fresh_instance_per_attempt(dispatcher, registry):
    made: list[int] = []

    class Counter_:
        def __init__(self) -> None:
            made.append(id(self))
            self.calls = 0

        def run(self, inputs, ctx):
            self.calls += 1
            return self.calls

    registry.add("cls", Counter_)
    out = Outcomes()
    for attempt in (1, 2, 3):
        dispatcher.submit(task("cls", attempt=attempt), out)
    out.wait(3)
    assert [o.result for o in out.items] == [1, 1, 1]
    assert len(made) == 3


def test_close_does_not_hang_with_runaway_runners(registry):
    dispatcher = DirectDispatcher(registry)
    started_sync, started_async, release = threading.Event(), threading.Event(), threading.Event()

    @registry.handler("stuck")
    def stuck(inputs, ctx):
        started_sync.set()
        release.wait(WAIT * 3)  # ignores cancellation

    @registry.handler("astuck")
    async def astuck(inputs, ctx):
        started_async.set()
        while True:
            try:
                await asyncio.sleep(WAIT * 3)
            except asyncio.CancelledError:
                continue  # ignores cancellation too

    before = set(threading.enumerate())
    out = Outcomes()
    dispatcher.submit(task("stuck"), out)
    dispatcher.submit(task("astuck"), out)
    assert started_sync.wait(WAIT) and started_async.wait(WAIT)
    closer = threading.Thread(target=dispatcher.close, daemon=True)
    try:
        closer.start()
        closer.join(WAIT)
        assert not closer.is_alive(), "close() hangs on a runaway runner"
    finally:
        release.set()
        del dispatcher
        collect_abandoned(before)


def collect_abandoned(before: set[threading.Thread]) -> None:
    """Let the event loop thread of a closed dispatcher end, then collect what it abandoned.

    Done here, at a known point, so that finalising an abandoned coroutine cannot happen inside
    whatever the interpreter does next.
    """
    for thread in set(threading.enumerate()) - before:
        if thread.name == "engine-async-runners":
            thread.join(WAIT)
    gc.collect()


def test_an_abandoned_async_runner_runs_no_engine_code_when_collected(registry, monkeypatch):
    # Closing may abandon a coroutine that never ends; when it is garbage-collected Python throws
    # GeneratorExit into it. The engine must let that through, not treat it as the runner's
    # failure: that would run outcome and traceback code inside the garbage collector, in
    # whatever thread happens to trigger it.
    reported: list[type[BaseException]] = []

    def failure(cls, task, exc):
        reported.append(type(exc))
        return StepOutcome(task, ok=False, error=type(exc).__name__)

    monkeypatch.setattr(StepOutcome, "failure", classmethod(failure))
    started = threading.Event()

    @registry.handler("endless")
    async def endless(inputs, ctx):
        started.set()
        await asyncio.Event().wait()

    before = set(threading.enumerate())
    dispatcher = DirectDispatcher(registry)
    dispatcher.submit(task("endless"), Outcomes())
    assert started.wait(WAIT)
    dispatcher.close()
    del dispatcher
    collect_abandoned(before)
    assert GeneratorExit not in reported


def test_close_releases_the_idle_worker_threads(registry):
    before = set(threading.enumerate())
    dispatcher = DirectDispatcher(registry)
    barrier = threading.Barrier(3, timeout=WAIT)
    registry.add("meet", lambda inputs, ctx: barrier.wait())
    out = Outcomes()
    for i in range(3):
        dispatcher.submit(task(f"m{i}", "meet"), out)
    out.wait(3)
    workers = [t for t in threading.enumerate() if t not in before]
    assert len(workers) >= 3
    dispatcher.close()
    deadline = time.monotonic() + 2.0
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    assert [w.name for w in workers if w.is_alive()] == []
