"""The dispatcher contract: one suite, run through the service against every dispatcher, each
giving the same final statuses and results for the same definitions.

The process dispatcher runs steps in worker processes of its own; the Celery dispatchers in real
`engine worker` subprocesses, two per broker, started once for this module. Add a dispatcher: one
entry in DISPATCHERS, and a fixture that makes it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import contract_runners
import pytest
from conftest import Workers, broker_url

from engine.definition import load_text
from engine.dispatch.base import Dispatcher
from engine.dispatch.direct import DirectDispatcher
from engine.dispatch.process import ProcessDispatcher
from engine.registry import JobRegistry
from engine.service import BatchService

pytestmark = pytest.mark.timeout(120)

DISPATCHERS = ["direct", "process", "celery-redis", "celery-amqp"]

MakeDispatcher = Callable[[JobRegistry], Dispatcher]


def _workers(kind: str, queue: str, logs: Any) -> Iterator[Workers]:
    workers = Workers(broker_url(kind), logs)
    try:
        workers.start(f"{kind}-1", queue)
        workers.start(f"{kind}-2", queue)
        workers.wait_ready()
        yield workers
    finally:
        workers.stop()


@pytest.fixture(scope="module")
def redis_workers(
    session_queue: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    yield from _workers("redis", session_queue, tmp_path_factory.mktemp("redis-workers"))


@pytest.fixture(scope="module")
def amqp_workers(session_queue: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    yield from _workers("amqp", session_queue, tmp_path_factory.mktemp("amqp-workers"))


@pytest.fixture(params=DISPATCHERS)
def make_dispatcher(request: pytest.FixtureRequest) -> MakeDispatcher:
    if request.param == "direct":
        return DirectDispatcher
    if request.param == "process":
        return ProcessDispatcher
    from engine.dispatch.celery import CeleryDispatcher

    workers: Workers = request.getfixturevalue(request.param.replace("celery-", "") + "_workers")
    return lambda registry: CeleryDispatcher(registry, broker=workers.broker)


@pytest.fixture
def run(
    make_dispatcher: MakeDispatcher, sqlite_store: Any, session_queue: str
) -> Callable[..., Any]:
    """Run a definition to its end; every step goes to this session's queue.

    `only_here` names runners that the orchestrator knows but the workers (and the dispatcher's
    registry) do not.
    """

    def run(yaml_text: str, params: dict[str, Any] | None = None, only_here: tuple[str, ...] = ()):
        text = textwrap.dedent(yaml_text)
        text = text.replace("defaults:", f"defaults:\n  queue: {session_queue}", 1)
        if "defaults:" not in yaml_text:
            text = f"defaults: {{queue: {session_queue}}}\n" + text
        orchestrator = contract_runners.register(JobRegistry())
        for key in only_here:
            orchestrator.add(key, contract_runners.echo)
        loaded = load_text(text, "contract.yaml", orchestrator)
        dispatcher = make_dispatcher(contract_runners.register(JobRegistry()))
        try:
            return BatchService(sqlite_store, dispatcher).run(
                BatchService.prepare(loaded, params or {})
            )
        finally:
            dispatcher.close()

    return run


def attempts(view: Any) -> set[tuple[str, int, str]]:
    return {(s.step, s.attempt, s.status) for s in view.steps}


def results(view: Any) -> dict[str, Any]:
    return {s.step: s.result for s in view.steps if s.status == "succeeded"}


def errors(view: Any) -> dict[tuple[str, int], str]:
    return {(s.step, s.attempt): s.error for s in view.steps if s.error}


def test_results_flow_through_sync_async_class_and_model_runners(run):
    view = run(
        """
        name: flow
        params: {n: {type: integer}}
        steps:
          - {id: a, runner: echo, inputs: {n: "{{ params.n }}", items: [1, "x"]}}
          - {id: b, runner: counter, inputs: {count: "{{ steps.a.result.inputs.n + 1 }}"}}
          - {id: c, runner: async_echo}
          - {id: d, runner: model}
          - {id: e, runner: echo}
        """,
        {"n": 41},
    )
    assert view.status == "succeeded"
    assert attempts(view) == {(s, 1, "succeeded") for s in "abcde"}
    assert results(view) == {
        "a": {"step": "a", "attempt": 1, "inputs": {"n": 41, "items": [1, "x"]}, "up": {}},
        "b": {"count": 42},
        "c": {"async": True, "params": {"n": 41}},
        "d": {"x": 1, "y": 2},
        "e": {"step": "e", "attempt": 1, "inputs": {}, "up": {"d": {"x": 1, "y": 2}}},
    }


def test_a_failed_attempt_is_retried_and_a_failure_handler_runs(run):
    view = run(
        """
        name: retries
        defaults:
          retry: {maxAttempts: 3, delaySeconds: 0}
        steps:
          - id: flaky
            runner: flaky
            inputs: {succeed_on: 2}
            nextSteps: [broken]
          - id: broken
            runner: flaky
            inputs: {succeed_on: 9}
            retry: {maxAttempts: 2, delaySeconds: 0}
            nextSteps: [{step: handler, on: failure}, done]
          - {id: handler, runner: echo}
          - {id: done, runner: echo}
        """
    )
    assert view.status == "failed"
    assert attempts(view) == {
        ("flaky", 1, "failed"),
        ("flaky", 2, "succeeded"),
        ("broken", 1, "failed"),
        ("broken", 2, "failed"),
        ("handler", 1, "succeeded"),
        ("done", 1, "skipped"),
    }
    assert results(view)["flaky"] == {"attempt": 2}
    error = errors(view)[("broken", 2)]
    assert error.startswith("RuntimeError: attempt 2 fails")
    assert "Traceback" in error and "contract_runners.py" in error


def test_an_attempt_over_its_timeout_fails_and_the_next_step_still_runs(run):
    view = run(
        """
        name: timeouts
        steps:
          - id: slow
            runner: sleep
            inputs: {seconds: 10}
            timeoutSeconds: 1
            allowFailure: true
            nextSteps: [{step: after, on: always}]
          - {id: after, runner: echo}
        """
    )
    assert view.status == "succeeded"
    assert attempts(view) == {("slow", 1, "failed"), ("after", 1, "succeeded")}
    assert "timeout" in errors(view)[("slow", 1)]


def test_conditions_and_join_any(run):
    view = run(
        """
        name: branches
        steps:
          - id: process
            runner: counter
            inputs: {count: 0}
            nextSteps:
              - load
              - {step: report_empty, condition: "steps.process.result.count == 0"}
          - id: load
            runner: echo
            condition: "steps.process.result.count > 0"
            nextSteps: [notify]
          - {id: report_empty, runner: echo, nextSteps: [notify]}
          - {id: notify, runner: echo, join: any}
        """
    )
    assert view.status == "succeeded"
    assert attempts(view) == {
        ("load", 1, "skipped"),
        ("notify", 1, "succeeded"),
        ("process", 1, "succeeded"),
        ("report_empty", 1, "succeeded"),
    }
    assert results(view)["notify"]["up"] == {
        "load": None,
        "report_empty": results(view)["report_empty"],
    }


def test_no_more_steps_run_at_once_than_the_concurrency(run):
    steps = "".join(
        f"  - {{id: s{i}, runner: sleep, inputs: {{seconds: 0.3}}}}\n" for i in range(6)
    )
    view = run(f"name: fanout\nconcurrency: 2\nsteps:\n{steps}  - {{id: end, runner: echo}}\n")
    assert view.status == "succeeded"
    spans = [(r["start"], r["end"]) for step, r in results(view).items() if step != "end"]
    assert len(spans) == 6
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap <= 2


def test_runner_errors_become_failed_steps(run):
    view = run(
        """
        name: misbehave
        steps:
          - id: not_json
            allowFailure: true
            nextSteps: &end [{step: fine, on: always}]
          - {id: exits, runner: exits, allowFailure: true, nextSteps: *end}
          - {id: unknown, runner: only_here, allowFailure: true, nextSteps: *end}
          - {id: fine, runner: echo}
        """,
        only_here=("only_here",),
    )
    assert view.status == "succeeded"
    assert attempts(view) == {
        ("not_json", 1, "failed"),
        ("exits", 1, "failed"),
        ("unknown", 1, "failed"),
        ("fine", 1, "succeeded"),
    }
    found = errors(view)
    assert found[("not_json", 1)].startswith("the result is")
    assert found[("exits", 1)].startswith("SystemExit: 3")
    assert found[("unknown", 1)].startswith(
        "RunnerNotFound: no runner is registered as 'only_here'; known runners: async_echo"
    )
