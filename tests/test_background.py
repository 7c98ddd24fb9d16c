"""The bounded background runner of `engine serve`, which the scheduler launches through too."""

from __future__ import annotations

import threading
from typing import Any

from engine.background import BackgroundRunner
from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.registry import JobRegistry
from engine.service import BatchService
from engine.store import Store

GATE = "name: gate\nsteps:\n  - {id: wait, runner: gate}\n"
FLAKY = "name: flaky\nsteps:\n  - {id: maybe, runner: maybe}\n"


def test_an_instance_launched_twice_runs_once(store: Store, registry: JobRegistry) -> None:
    calls: list[int] = []
    registry.add("gate", lambda inputs, ctx: calls.append(ctx.instance_id))
    service = BatchService(store, DirectDispatcher(registry))
    runner = BackgroundRunner(service, max_instances=2)
    ended = threading.Event()
    runner.on_end = ended.set
    prepared = service.prepare(load_text(GATE, "gate.yaml", registry), {})
    instance_id = service.start(prepared)
    for _ in range(3):
        runner.launch(prepared, instance_id)
    assert runner.drain(20)
    runner.stop(1)
    assert calls == [instance_id]
    assert ended.is_set(), "the scheduler is woken when an instance ends"
    assert store.get_instance(instance_id).status == "succeeded"


def test_stop_leaves_waiting_instances_resumable(store: Store, registry: JobRegistry) -> None:
    opened, entered = threading.Event(), threading.Event()
    fail = {"now": True}

    def gate(inputs: dict[str, Any], ctx: Any) -> None:
        entered.set()
        opened.wait(20)

    def maybe(inputs: dict[str, Any], ctx: Any) -> str:
        if fail["now"]:
            raise RuntimeError("not yet")
        return "fine"

    registry.add("gate", gate)
    registry.add("maybe", maybe)
    service = BatchService(store, DirectDispatcher(registry))
    failed = service.run(BatchService.prepare(load_text(FLAKY, "flaky.yaml", registry), {}))
    assert failed.status == "failed"

    runner = BackgroundRunner(service, max_instances=1)
    gated = service.prepare(load_text(GATE, "gate.yaml", registry), {})
    running = service.start(gated)
    runner.launch(gated, running)
    waiting = service.start(gated)
    runner.launch(gated, waiting)
    runner.launch_taken(service.take(failed.id, registry))
    assert entered.wait(20)
    assert runner.counts() == (1, 2)

    threading.Timer(0.2, opened.set).start()
    runner.stop(grace=20)
    assert store.get_instance(running).status == "succeeded"
    assert store.get_instance(waiting).status == "pending"
    claimed = store.get_instance(failed.id)
    assert claimed.status == "running" and claimed.abandoned, "its lease was released"

    fail["now"] = False
    assert service.resume(waiting, registry).status == "succeeded"
    assert service.resume(failed.id, registry).status == "succeeded"
