"""The process dispatcher beyond the contract suite: what only a process can survive or stop."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import process_runners
import pytest

from engine.definition import load_text
from engine.dispatch.process import ProcessDispatcher
from engine.registry import JobRegistry
from engine.service import BatchService

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def registry() -> JobRegistry:
    registry = JobRegistry()
    for key, target in process_runners.RUNNERS.items():
        registry.add(key, target)
    return registry


@pytest.fixture
def dispatcher(registry: JobRegistry) -> Iterator[ProcessDispatcher]:
    dispatcher = ProcessDispatcher(registry)
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def run(sqlite_store: Any, registry: JobRegistry, dispatcher: ProcessDispatcher) -> Callable:
    def run(text: str) -> Any:
        loaded = load_text(text, "process.yaml", registry)
        return BatchService(sqlite_store, dispatcher).run(BatchService.prepare(loaded, {}))

    return run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("code", [0, 7])
def test_a_runner_that_ends_its_process_fails_its_attempt_and_the_retry_runs(run, code):
    view = run(
        "name: exits\nsteps:\n"
        f"  - {{id: a, runner: exits_on_first, inputs: {{code: {code}}}, "
        "retry: {maxAttempts: 2, delaySeconds: 0}}\n"
        "  - {id: b, runner: pid}\n"
    )
    assert view.status == "succeeded"
    first, second = (s for s in view.steps if s.step == "a")
    assert (first.status, second.status) == ("failed", "succeeded")
    assert first.error.startswith(f"worker process exited with code {code}")
    assert second.result != os.getpid(), "the attempt ran in a worker, not the engine"


def test_a_runner_killed_by_a_signal_says_so(run):
    view = run("name: k\nsteps:\n  - {id: a, runner: killed}\n")
    assert view.status == "failed"
    (attempt,) = view.steps
    assert attempt.error == "worker process exited with code -9 (killed by SIGKILL)"


def test_a_runner_ignoring_its_timeout_is_killed(run, tmp_path):
    pidfile = tmp_path / "pid"
    view = run(
        "name: t\nsteps:\n  - {id: warm, runner: pid}\n"  # the worker is up when the clock starts
        f"  - {{id: a, runner: stubborn, timeoutSeconds: 0.5, inputs: {{pidfile: '{pidfile}'}}}}\n"
    )
    assert view.status == "failed"
    assert "timeout" in view.steps[-1].error
    pid = int(pidfile.read_text())
    _wait(lambda: not _alive(pid), "the stubborn worker to be killed")


def test_a_cancelled_runner_that_returns_in_time_keeps_its_worker(
    run, dispatcher, tmp_path, monkeypatch
):
    monkeypatch.setattr("engine.dispatch.process.CANCEL_GRACE_SECONDS", 0.3)
    pidfile = tmp_path / "pid"
    view = run(
        "name: p\nsteps:\n  - {id: warm, runner: pid}\n"  # the worker is up when the clock starts
        f"  - {{id: a, runner: polite, timeoutSeconds: 0.5, inputs: {{pidfile: '{pidfile}'}}}}\n"
    )
    assert view.status == "failed" and "timeout" in view.steps[-1].error
    pid = int(pidfile.read_text())
    _wait(lambda: pid in {w.process.pid for w in dispatcher._idle}, "the worker to be idle")
    time.sleep(0.6)  # past the grace: a worker that returned in time is not killed
    assert _alive(pid)


def test_workers_are_reused_and_closed(registry, sqlite_store):
    dispatcher = ProcessDispatcher(registry)
    loaded = load_text(
        "name: seq\nsteps:\n  - {id: a, runner: pid}\n  - {id: b, runner: pid}\n",
        "s.yaml",
        registry,
    )
    view = BatchService(sqlite_store, dispatcher).run(BatchService.prepare(loaded, {}))
    pids = {s.result for s in view.steps}
    assert len(pids) == 1, "one step after another runs in one warm worker"
    dispatcher.close()
    _wait(lambda: not any(_alive(p) for p in pids), "the workers to end")


def test_a_runner_defined_inside_a_function_fails_saying_why(sqlite_store):
    registry = JobRegistry()
    registry.add("local", lambda inputs, ctx: 1)
    dispatcher = ProcessDispatcher(registry)
    try:
        loaded = load_text("name: l\nsteps:\n  - {id: a, runner: local}\n", "l.yaml", registry)
        view = BatchService(sqlite_store, dispatcher).run(BatchService.prepare(loaded, {}))
    finally:
        dispatcher.close()
    assert view.status == "failed"
    assert "cannot be loaded in a worker process" in view.steps[0].error
    assert "define it at the top level of a module" in view.steps[0].error
