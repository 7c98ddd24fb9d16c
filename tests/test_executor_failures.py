"""When a run is stopped or breaks: no attempt is ever left `running`, nothing is written twice."""

from __future__ import annotations

import threading

import pytest

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.execution import Cancellation
from engine.service import BatchService
from engine.store.attempts import AttemptWriter

CHAIN = """
name: chain
steps:
  - {id: a, runner: quick}
  - {id: b, runner: slow}
  - {id: c, runner: quick}
"""


def test_a_cancellation_from_another_thread_stops_the_instance(store, registry):
    started = threading.Event()
    seen_cancel = threading.Event()
    registry.add("quick", lambda inputs, ctx: "ok")

    @registry.handler("slow")
    def slow(inputs, ctx):
        started.set()
        if ctx.cancel_event.wait(30):
            seen_cancel.set()
        return "late"

    cancellation = Cancellation()
    threading.Thread(
        target=lambda: started.wait(30) and cancellation.cancel("stopped by a test"), daemon=True
    ).start()
    service = BatchService(store, DirectDispatcher(registry))
    prepared = service.prepare(load_text(CHAIN, "chain.yaml", registry), {})
    view = service.execute(prepared, service.start(prepared), cancellation=cancellation)

    assert view.status == "cancelled" and view.error == "stopped by a test"
    assert [(s.step, s.status) for s in view.steps] == [("a", "succeeded"), ("b", "cancelled")]
    assert seen_cancel.wait(5), "the runner was not told"


def test_a_database_failure_mid_run_leaves_no_attempt_running(store, registry, monkeypatch):
    registry.add("quick", lambda inputs, ctx: "ok")
    registry.add("slow", lambda inputs, ctx: "ok")
    real_record = AttemptWriter.record
    calls = {"n": 0}

    def failing_once(self, ended, started, lines=()):
        calls["n"] += 1
        if calls["n"] == 2:  # the round that ends `a` and starts `b`
            raise RuntimeError("the database went away")
        return real_record(self, ended, started, lines)

    monkeypatch.setattr(AttemptWriter, "record", failing_once)
    service = BatchService(store, DirectDispatcher(registry))
    prepared = service.prepare(load_text(CHAIN, "chain.yaml", registry), {})
    instance_id = service.start(prepared)
    with pytest.raises(RuntimeError, match="went away"):
        service.execute(prepared, instance_id)

    view = store.get_instance(instance_id)
    assert view.status == "failed" and "went away" in view.error
    assert [s.status for s in view.steps if s.status == "running"] == []
    assert [(s.step, s.status) for s in view.steps] == [("a", "succeeded"), ("b", "failed")]
    assert "engine error" in view.steps[1].error


def test_an_async_runner_calling_sys_exit_fails_its_step_and_later_ones_still_run(store, registry):
    @registry.handler("leave")
    async def leave(inputs, ctx):
        raise SystemExit(3)

    @registry.handler("fine")
    async def fine(inputs, ctx):
        return "ran"

    dispatcher = DirectDispatcher(registry)
    definition = load_text(
        "name: x\nsteps:\n  - {id: a, runner: leave, allowFailure: true}\n"
        "  - {id: b, runner: fine, nextSteps: []}\n"
        "  - {id: c, runner: fine}\n",
        "x.yaml",
        registry,
    )
    view = BatchService(store, dispatcher).run(BatchService.prepare(definition, {}))
    statuses = {s.step: (s.status, s.result) for s in view.steps}
    assert statuses["a"][0] == "failed" and "SystemExit" in view.steps[0].error
    assert statuses["b"] == ("succeeded", "ran") and statuses["c"] == ("succeeded", "ran")


@pytest.mark.parametrize("value", [2.0, -0.0, 10**20, 12345678901234567890123, 1e20, [1.5, "x"]])
def test_results_read_back_exactly_as_returned(store, registry, value):
    registry.add("give", lambda inputs, ctx: value)
    view = BatchService(store, DirectDispatcher(registry)).run(
        BatchService.prepare(
            load_text("name: x\nsteps:\n  - {id: a, runner: give}\n", "x.yaml", registry), {}
        )
    )
    (attempt,) = view.steps
    assert attempt.result == value and type(attempt.result) is type(value)
