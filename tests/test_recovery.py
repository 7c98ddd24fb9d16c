"""Recovery in one process: orphans are adopted into free slots, each by exactly one process;
queued instances of a live process are left alone; ENGINE_MAX_RECOVERIES bounds the adoptions.
Real processes killed mid-run are in test_replicas.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import force
from sqlalchemy import select, update

from engine.background import BackgroundRunner
from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.errors import ConfigError
from engine.recovery import Recovery, recovering
from engine.registry import JobRegistry
from engine.service import BatchService
from engine.store import Store
from engine.store.tables import instances, step_results
from engine.store.types import utcnow

TWO = "name: two\nsteps:\n  - {id: a, runner: work}\n  - {id: b, runner: work}\n"


@pytest.fixture(autouse=True)
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_LEASE_SECONDS", "1")


@pytest.fixture
def calls(registry: JobRegistry) -> list[tuple[int, str]]:
    made: list[tuple[int, str]] = []
    registry.add("work", lambda inputs, ctx: made.append((ctx.instance_id, ctx.step_id)))
    return made


@pytest.fixture
def service(store: Store, registry: JobRegistry) -> BatchService:
    return BatchService(store, DirectDispatcher(registry))


@pytest.fixture
def runner(service: BatchService) -> Iterator[BackgroundRunner]:
    background = BackgroundRunner(service, max_instances=2)
    yield background
    background.stop(5)


def _abandoned(service: BatchService, registry: JobRegistry, recoveries: int = 0) -> int:
    """A running instance whose process died after step a succeeded, in the middle of b."""
    done = service.run(BatchService.prepare(load_text(TWO, "two.yaml", registry), {}))
    store = service.store
    with store.engine.begin() as conn:
        conn.execute(
            update(step_results)
            .where(step_results.c.batch_instance_id == done.id)
            .where(step_results.c.step_key == "b")
            .values(status="running", finished_at=None, result_payload=None)
        )
    force(
        store,
        done.id,
        status="running",
        finished_at=None,
        lease_owner="dead-host:1:0",
        lease_expires_at=utcnow() - timedelta(seconds=1),
        recoveries=recoveries,
    )
    return done.id


def _wait(condition: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_an_abandoned_instance_is_resumed_keeping_what_succeeded(service, registry, runner, calls):
    instance_id = _abandoned(service, registry)
    calls.clear()
    recovery = Recovery(runner, registry)
    assert recovery.adopt_orphans() == 1
    assert runner.drain(20)
    view = service.store.get_instance(instance_id)
    assert view.status == "succeeded"
    assert calls == [(instance_id, "b")], "a, which had succeeded, is not run again"
    b = [(s.attempt, s.status) for s in view.steps if s.step == "b"]
    assert b == [(1, "failed"), (2, "succeeded")]
    assert "abandoned" in (next(s for s in view.steps if s.step == "b").error or "")
    assert recovery.adopt_orphans() == 0, "nothing is adopted twice"


def test_a_pending_instance_whose_creator_died_is_started(service, registry, runner, calls):
    prepared = service.prepare(load_text(TWO, "two.yaml", registry), {})
    instance_id = service.start(prepared)  # and its creator dies before starting it
    with recovering(runner, registry, enabled=True):
        _wait(lambda: service.store.get_instance(instance_id).status == "succeeded", "the start")
    assert [step for _, step in calls] == ["a", "b"]


def test_of_two_recovering_processes_each_orphan_goes_to_exactly_one(
    db_url, service, registry, calls
):
    orphans = [_abandoned(service, registry) for _ in range(6)]
    calls.clear()
    other_store = Store(db_url)
    other = BatchService(other_store, DirectDispatcher(registry))
    runners = [BackgroundRunner(service, 3), BackgroundRunner(other, 3)]
    recoveries = [Recovery(r, registry) for r in runners]
    barrier = threading.Barrier(2)
    adopted = [0, 0]

    def adopt(n: int) -> None:
        barrier.wait()
        adopted[n] = recoveries[n].adopt_orphans()

    threads = [threading.Thread(target=adopt, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for background in runners:
        assert background.drain(30)
        background.stop(5)
    other_store.close()
    assert sum(adopted) == 6
    assert sorted(calls) == sorted((i, "b") for i in orphans), "each orphan resumed once"
    assert {service.store.get_instance(i).status for i in orphans} == {"succeeded"}


def test_the_queue_of_a_live_process_is_not_taken(db_url, service, registry, calls):
    opened = threading.Event()
    registry.add("gate", lambda inputs, ctx: opened.wait(20))
    gate = service.prepare(
        load_text("name: g\nsteps:\n  - {id: g, runner: gate}\n", "g.yaml", registry), {}
    )
    busy = BackgroundRunner(service, max_instances=1)
    running, queued = service.start(gate), service.start(gate)
    busy.launch(gate, running)
    busy.launch(gate, queued)
    other_store = Store(db_url)
    idle = BackgroundRunner(BatchService(other_store, DirectDispatcher(registry)), 2)
    try:
        recovery = Recovery(idle, registry)
        deadline = time.monotonic() + 3  # three leases: both leases must be kept meanwhile
        while time.monotonic() < deadline:
            assert recovery.adopt_orphans() == 0
            time.sleep(0.1)
        assert service.store.get_instance(queued).status == "pending"
    finally:
        opened.set()
        assert busy.drain(20)
        busy.stop(5)
        idle.stop(5)
        other_store.close()
    assert {service.store.get_instance(i).status for i in (running, queued)} == {"succeeded"}


def test_an_instance_abandoned_too_often_is_failed_not_adopted(
    service, registry, runner, calls, monkeypatch
):
    monkeypatch.setenv("ENGINE_MAX_RECOVERIES", "2")
    instance_id = _abandoned(service, registry, recoveries=2)
    calls.clear()
    assert Recovery(runner, registry).adopt_orphans() == 0
    view = service.store.get_instance(instance_id)
    assert view.status == "failed"
    assert "after 2 recoveries (ENGINE_MAX_RECOVERIES)" in (view.error or "")
    assert not any(s.status == "running" for s in view.steps)
    assert calls == []
    resumed = service.resume(instance_id, registry)  # a person may still resume it
    assert resumed.status == "succeeded"


def test_each_adoption_is_counted(service, registry, runner, calls, monkeypatch):
    monkeypatch.setenv("ENGINE_MAX_RECOVERIES", "2")
    instance_id = _abandoned(service, registry, recoveries=1)
    assert Recovery(runner, registry).adopt_orphans() == 1
    assert runner.drain(20)
    with service.store.engine.connect() as conn:
        count = conn.execute(
            select(instances.c.recoveries).where(instances.c.id == instance_id)
        ).scalar()
    assert count == 2


@pytest.mark.parametrize("value", ["-1", "two", "1.5", "nan"])
def test_a_bad_max_recoveries_is_a_clear_error(runner, registry, monkeypatch, value):
    monkeypatch.setenv("ENGINE_MAX_RECOVERIES", value)
    with pytest.raises(ConfigError, match=f"ENGINE_MAX_RECOVERIES='{value}': must be a whole"):
        Recovery(runner, registry)
