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


MAPPED = """
name: mapped
defaults:
  retry: {maxAttempts: 3, delaySeconds: 0}
  timeoutSeconds: 20  # an item sent to another queue would fail, not hang
steps:
  - id: make
    runner: echo
    inputs:
      rows:
        - {code: b2, tries: 2}
        - {code: a1, tries: 1}
        - {code: d4, tries: 3}
        - {code: c3, tries: 1}
  - id: fan
    runner: item
    map:
      items: "{{ steps.make.result.inputs.rows }}"
      as: row
      key: "{{ row.code }}"
      concurrency: 2
    inputs: {succeed_on: "{{ row.tries }}"}
  - {id: after, runner: echo}
"""


def _here(result: dict[str, Any]) -> dict[str, Any]:
    """An item's result without where it ran."""
    return {k: v for k, v in result.items() if k not in ("worker", "pid")}


@pytest.fixture
def worker_names(request: pytest.FixtureRequest) -> set[str]:
    """Where this test's dispatcher runs steps, as the `item` runner names it: this module's two
    workers (which consume this session's queue only), or `here` (the test's own processes)."""
    name = request.node.callspec.params["make_dispatcher"]
    if not name.startswith("celery-"):
        return {"here"}
    kind = name.removeprefix("celery-")
    return {f"{kind}-1", f"{kind}-2"}


def test_a_mapped_step_runs_each_item_on_the_steps_queue_retrying_each_alone(
    run, sqlite_store, worker_names
):
    view = run(MAPPED)
    assert view.status == "succeeded"
    assert attempts(view) == {
        ("make", 1, "succeeded"),
        ("fan", 1, "succeeded"),
        ("after", 1, "succeeded"),
    }, "the service's view holds the steps' own rows"
    items = [s for s in sqlite_store.get_instance(view.id).steps if s.item is not None]
    assert {(s.item, s.attempt, s.status) for s in items} == {
        ("b2", 1, "failed"),
        ("b2", 2, "succeeded"),
        ("a1", 1, "succeeded"),
        ("d4", 1, "failed"),
        ("d4", 2, "failed"),
        ("d4", 3, "succeeded"),
        ("c3", 1, "succeeded"),
    }
    failures = {(s.item, s.attempt): s.error or "" for s in items if s.status == "failed"}
    assert failures[("d4", 2)].startswith("RuntimeError: item d4 attempt 2 fails")
    rows = [("b2", 2), ("a1", 1), ("d4", 3), ("c3", 1)]
    collected = results(view)["fan"]
    assert [_here(r) for r in collected] == [
        {
            "key": code,
            "index": index,
            "item": {"code": code, "tries": tries},
            "attempt": tries,
            "inputs": {"succeed_on": tries},
            "up": {},
        }
        for index, (code, tries) in enumerate(rows)
    ], "the items' results in item order, each item seeing its key, index and item only"
    succeeded = {s.item: s.result for s in items if s.status == "succeeded"}
    assert [succeeded[code] for code, _ in rows] == collected
    assert results(view)["after"]["up"] == {"fan": collected}
    assert {r["worker"] for r in collected} <= worker_names, "items ran on the step's queue"


@pytest.mark.parametrize("make_dispatcher", ["celery-redis", "celery-amqp"], indirect=True)
def test_the_items_of_a_mapped_step_are_tasks_of_their_own_spread_over_the_workers(
    run, worker_names
):
    """Four items at once, on two workers of two pool processes each taking one message at a
    time (prefetch 1, late acks): each worker holds two of them, each pool process one."""
    view = run(
        """
        name: spread
        steps:
          - id: fan
            runner: item
            map: {items: [1, 2, 3, 4], concurrency: 4}
            inputs: {seconds: 1}
        """
    )
    assert view.status == "succeeded"
    ran = [(r["worker"], r["pid"]) for r in results(view)["fan"]]
    assert {worker for worker, _ in ran} == worker_names
    assert len(set(ran)) == 4, ran


def test_a_mapped_item_over_its_timeout_is_stopped_alone_while_other_items_run(run, sqlite_store):
    """Item `slow` times out at 4s while item `c` (started at 2.5s, when `b` ended) runs: only
    the attempt of `slow` is stopped, which tells the items' attempts apart by item. The `warm`
    items first start the workers a dispatcher starts on demand, so that no timing below
    includes a worker's start."""
    view = run(
        """
        name: slow_item
        steps:
          - id: warm
            runner: item
            map: {items: [1, 2], concurrency: 2}
            nextSteps: [fan]
          - id: fan
            runner: item
            map:
              items: [{key: slow, seconds: 10}, {key: b, seconds: 2.5}, {key: c, seconds: 2.5}]
              as: x
              key: "{{ x.key }}"
              concurrency: 2
            inputs: {seconds: "{{ x.seconds }}"}
            timeoutSeconds: 4
            allowFailure: true
            nextSteps: [{step: after, on: always}]
          - {id: after, runner: echo}
        """
    )
    assert view.status == "succeeded"
    items = [s for s in sqlite_store.get_instance(view.id).steps if s.step == "fan" and s.item]
    assert [(s.item, s.attempt, s.status) for s in items] == [
        ("slow", 1, "failed"),
        ("b", 1, "succeeded"),
        ("c", 1, "succeeded"),
    ]
    assert (items[0].error or "").startswith("timeout")
    assert errors(view)[("fan", 1)] == "1 of 3 items failed: 'slow'"
    assert results(view)["after"]["step"] == "after"
