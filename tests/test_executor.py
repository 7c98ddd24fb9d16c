"""The executor through the service, as a user drives it: the section-1 semantics of DESIGN.md,
runner calling conventions, retries, timeouts and concurrency.

Runs on SQLite (the store contract on both databases lives in test_store.py). Nothing here sleeps to
wait for something: runners synchronise through events and barriers, with generous bounds that only
matter when the engine is broken.
"""

from __future__ import annotations

import asyncio
import math
import textwrap
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from engine.definition import load_text
from engine.definition.models import Retry
from engine.dispatch.direct import DirectDispatcher
from engine.execution import StepEvent
from engine.service import BatchService

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0
"""Upper bound of any wait on an event; reached only when the engine is broken."""


def run(store, registry, yaml_text, params=None, *, dispatcher=None, listener=None):
    loaded = load_text(textwrap.dedent(yaml_text), "x.yaml", registry)
    dispatcher = dispatcher or DirectDispatcher(registry)
    try:
        return BatchService(store, dispatcher).run(loaded, params or {}, listener=listener)
    finally:
        dispatcher.close()


def final(view) -> dict[str, str]:
    """Each step's status after its last attempt."""
    return {s.step: s.status for s in view.steps}


def rows(view, step):
    return [s for s in view.steps if s.step == step]


class Recorder:
    """A runner `r` driven by its inputs: `fail: true` raises, `ret` is merged into the result.

    Logs ("start", step) and ("end", step) in order, so tests can check what ran and when.
    """

    def __init__(self, registry) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, str]] = []
        self.contexts: dict[str, Any] = {}
        registry.add("r", self)

    def __call__(self, inputs, ctx):
        with self.lock:
            self.log.append(("start", ctx.step_id))
            self.contexts[ctx.step_id] = ctx
        try:
            if inputs.get("fail"):
                raise RuntimeError(f"{ctx.step_id} was told to fail")
            return {"step": ctx.step_id, **inputs.get("ret", {})}
        finally:
            with self.lock:
                self.log.append(("end", ctx.step_id))

    @property
    def called(self) -> list[str]:
        return [step for kind, step in self.log if kind == "start"]


@pytest.fixture
def rec(registry) -> Recorder:
    return Recorder(registry)


# -- section 1: order and edges ----------------------------------------------------------------


def test_linear_steps_run_one_after_another_in_list_order(store, registry, rec):
    view = run(
        store,
        registry,
        """
        name: lin
        concurrency: 4
        steps:
          - {id: c, runner: r}
          - {id: a, runner: r}
          - {id: b, runner: r}
    """,
    )
    assert view.status == "succeeded"
    # even with room for four in flight, a linear chain never overlaps
    assert rec.log == [
        ("start", "c"),
        ("end", "c"),
        ("start", "a"),
        ("end", "a"),
        ("start", "b"),
        ("end", "b"),
    ]
    assert [(s.step, s.attempt, s.status) for s in view.steps] == [
        ("c", 1, "succeeded"),
        ("a", 1, "succeeded"),
        ("b", 1, "succeeded"),
    ]
    assert [s.result for s in view.steps] == [{"step": "c"}, {"step": "a"}, {"step": "b"}]


def test_linear_failure_skips_every_later_step_and_fails_the_instance(store, registry, rec):
    view = run(
        store,
        registry,
        """
        name: lin
        steps:
          - {id: a, runner: r}
          - {id: b, runner: r, inputs: {fail: true}}
          - {id: c, runner: r}
          - {id: d, runner: r}
    """,
    )
    assert rec.called == ["a", "b"]
    assert final(view) == {"a": "succeeded", "b": "failed", "c": "skipped", "d": "skipped"}
    assert view.status == "failed"


@pytest.mark.parametrize("fails", [False, True], ids=["a-succeeds", "a-fails"])
def test_edges_fire_on_success_failure_and_always(store, registry, rec, fails):
    view = run(
        store,
        registry,
        f"""
        name: edges
        steps:
          - id: a
            runner: r
            inputs: {{fail: {str(fails).lower()}}}
            nextSteps:
              - on_success
              - {{step: on_failure, on: failure}}
              - {{step: on_always, on: always}}
          - {{id: on_success, runner: r}}
          - {{id: on_failure, runner: r}}
          - {{id: on_always, runner: r}}
    """,
    )
    if fails:
        expected = {
            "a": "failed",
            "on_success": "skipped",
            "on_failure": "succeeded",
            "on_always": "succeeded",
        }
    else:
        expected = {
            "a": "succeeded",
            "on_success": "succeeded",
            "on_failure": "skipped",
            "on_always": "succeeded",
        }
    assert final(view) == expected
    assert set(rec.called) == {s for s, st in expected.items() if st != "skipped"}
    # a failure handler that succeeds does not rescue the instance
    assert view.status == ("failed" if fails else "succeeded")


def test_once_any_step_declares_next_steps_the_graph_is_only_the_declared_edges(
    store, registry, rec
):
    view = run(
        store,
        registry,
        """
        name: dag
        concurrency: 3
        steps:
          - {id: a, runner: r, inputs: {fail: true}}
          - {id: b, runner: r, nextSteps: [c]}
          - {id: c, runner: r}
    """,
    )
    # no implicit a -> b: b is a root and runs although a failed; c follows b only
    assert final(view) == {"a": "failed", "b": "succeeded", "c": "succeeded"}
    assert rec.log.index(("end", "b")) < rec.log.index(("start", "c"))


@pytest.mark.parametrize("count", [0, 5])
def test_edge_condition_decides_whether_the_edge_fires(store, registry, rec, count):
    view = run(
        store,
        registry,
        f"""
        name: cond
        steps:
          - id: process
            runner: r
            inputs: {{ret: {{count: {count}}}}}
            nextSteps:
              - {{step: load, condition: "steps.process.result.count > 0"}}
              - {{step: report_empty, condition: "steps.process.result.count == 0"}}
          - {{id: load, runner: r}}
          - {{id: report_empty, runner: r}}
    """,
    )
    ran, skipped = ("load", "report_empty") if count else ("report_empty", "load")
    assert final(view)[ran] == "succeeded"
    assert final(view)[skipped] == "skipped"
    assert skipped not in rec.called
    assert view.status == "succeeded"


@pytest.mark.parametrize("go", [True, False])
def test_step_condition_false_skips_the_step_without_calling_its_runner(
    store, registry, rec, go
):
    view = run(
        store,
        registry,
        """
        name: guard
        params:
          go: {type: boolean}
        steps:
          - id: a
            runner: r
            inputs: {ret: {count: 2}}
            nextSteps: [b]
          - id: b
            runner: r
            condition: "params.go and steps.a.result.count > 1"
    """,
        {"go": go},
    )
    assert final(view)["b"] == ("succeeded" if go else "skipped")
    assert ("b" in rec.called) is go
    (b_row,) = rows(view, "b")
    assert b_row.attempt == 1
    if not go:
        assert b_row.result is None
        assert b_row.error is None
    assert view.status == "succeeded"


def test_a_root_step_condition_is_evaluated_too(store, registry, rec):
    view = run(
        store,
        registry,
        """
        name: guard
        params:
          n: {type: integer, default: 1}
        steps:
          - {id: a, runner: r, condition: "params.n > 5"}
          - {id: b, runner: r}
    """,
    )
    assert final(view) == {"a": "skipped", "b": "skipped"}
    assert rec.called == []
    assert view.status == "succeeded"


def test_join_all_needs_every_incoming_edge_join_any_needs_one(store, registry, rec):
    view = run(
        store,
        registry,
        """
        name: joins
        concurrency: 2
        steps:
          - {id: ok, runner: r, nextSteps: [all_of, any_of]}
          - {id: bad, runner: r, inputs: {fail: true}, allowFailure: true,
             nextSteps: [all_of, any_of]}
          - {id: all_of, runner: r}
          - {id: any_of, runner: r, join: any}
    """,
    )
    assert final(view) == {
        "ok": "succeeded",
        "bad": "failed",
        "all_of": "skipped",
        "any_of": "succeeded",
    }
    # join: any still waits for every upstream to end before deciding
    assert rec.log.index(("end", "bad")) < rec.log.index(("start", "any_of"))
    assert rec.log.index(("end", "ok")) < rec.log.index(("start", "any_of"))


def test_join_any_with_no_edge_fired_is_skipped(store, registry, rec):
    view = run(
        store,
        registry,
        """
        name: joins
        concurrency: 2
        steps:
          - {id: x, runner: r, inputs: {fail: true}, allowFailure: true, nextSteps: [j]}
          - {id: y, runner: r, condition: "false", nextSteps: [j]}
          - {id: j, runner: r, join: any}
    """,
    )
    assert final(view) == {"x": "failed", "y": "skipped", "j": "skipped"}
    assert "j" not in rec.called


def test_skipped_propagates_along_success_and_failure_edges_but_fires_always_edges(
    store, registry, rec
):
    view = run(
        store,
        registry,
        """
        name: skips
        steps:
          - id: a
            runner: r
            condition: "false"
            nextSteps: [b, {step: cleanup, on: always}, {step: handler, on: failure}]
          - {id: b, runner: r, nextSteps: [c, {step: b_always, on: always}]}
          - {id: c, runner: r}
          - {id: b_always, runner: r}
          - {id: cleanup, runner: r}
          - {id: handler, runner: r}
    """,
    )
    assert final(view) == {
        "a": "skipped",
        "b": "skipped",
        "c": "skipped",
        "b_always": "succeeded",
        "cleanup": "succeeded",
        "handler": "skipped",
    }
    assert sorted(rec.called) == ["b_always", "cleanup"]
    assert view.status == "succeeded"


def test_allow_failure_step_does_not_fail_the_instance(store, registry, rec):
    view = run(
        store,
        registry,
        """
        name: allow
        steps:
          - id: flaky
            runner: r
            inputs: {fail: true}
            allowFailure: true
            nextSteps: [after, {step: alert, on: failure}]
          - {id: after, runner: r}
          - {id: alert, runner: r}
    """,
    )
    assert final(view) == {"flaky": "failed", "after": "skipped", "alert": "succeeded"}
    assert view.status == "succeeded"


def test_failure_handlers_run_and_the_instance_still_fails(store, registry, rec):
    view = run(
        store,
        registry,
        """
        name: handlers
        steps:
          - id: load
            runner: r
            inputs: {fail: true}
            nextSteps: [{step: alert, on: failure}, {step: cleanup, on: always}]
          - {id: alert, runner: r}
          - {id: cleanup, runner: r}
    """,
    )
    assert final(view) == {"load": "failed", "alert": "succeeded", "cleanup": "succeeded"}
    assert sorted(rec.called) == ["alert", "cleanup", "load"]
    assert view.status == "failed"
    assert "load" in (view.error or "")


def test_a_failing_failure_handler_fails_the_instance_even_when_its_step_may_fail(
    store, registry, rec
):
    view = run(
        store,
        registry,
        """
        name: handlers
        steps:
          - {id: a, runner: r, inputs: {fail: true}, allowFailure: true,
             nextSteps: [{step: alert, on: failure}]}
          - {id: alert, runner: r, inputs: {fail: true}}
    """,
    )
    assert final(view) == {"a": "failed", "alert": "failed"}
    assert view.status == "failed"


def test_an_instance_whose_steps_are_all_skipped_succeeds(store, registry, rec):
    view = run(
        store,
        registry,
        """
        name: none
        steps:
          - {id: a, runner: r, condition: "1 > 2"}
          - {id: b, runner: r}
    """,
    )
    assert final(view) == {"a": "skipped", "b": "skipped"}
    assert view.status == "succeeded"


# -- templates and what a runner receives ---------------------------------------------------


def test_templates_see_results_statuses_params_and_run_with_native_types(store, registry):
    registry.add("produce", lambda inputs, ctx: {"rows": 3, "names": ["n1", "n2"]})
    registry.add("echo", lambda inputs, ctx: inputs)
    view = run(
        store,
        registry,
        """
        name: tpl
        params:
          day: {type: string, default: "2024-01-02"}
          flag: {type: boolean, default: true}
          limit: {type: number, default: 2.5}
        steps:
          - {id: a, runner: produce, nextSteps: [b]}
          - id: b
            runner: echo
            inputs:
              rows: "{{ steps.a.result.rows }}"
              whole: "{{ steps.a.result }}"
              status: "{{ steps.a.status }}"
              day: "{{ params.day }}"
              flag: "{{ params.flag }}"
              limit: "{{ params.limit }}"
              run_id: "{{ run.id }}"
              trigger: "{{ run.trigger }}"
              text: "rows={{ steps.a.result.rows }}"
              two: "{{ steps.a.result.rows }}{{ steps.a.result.rows }}"
              nested:
                list: ["{{ steps.a.result.rows + 1 }}", "x-{{ params.day }}", 5]
                deep: {first: "{{ steps.a.result.names[0] }}", n: "{{ steps.a.result.names }}"}
              plain: untouched
              number: 7
    """,
    )
    assert view.status == "succeeded", view
    (b,) = rows(view, "b")
    assert b.result == {
        "rows": 3,
        "whole": {"rows": 3, "names": ["n1", "n2"]},
        "status": "succeeded",
        "day": "2024-01-02",
        "flag": True,
        "limit": 2.5,
        "run_id": view.id,
        "trigger": "cli",
        "text": "rows=3",
        "two": "33",
        "nested": {"list": [4, "x-2024-01-02", 5], "deep": {"first": "n1", "n": ["n1", "n2"]}},
        "plain": "untouched",
        "number": 7,
    }
    assert type(b.result["rows"]) is int
    assert type(b.result["flag"]) is bool


def test_templates_and_conditions_see_a_failed_upstreams_status(store, registry, rec):
    registry.add("echo", lambda inputs, ctx: inputs)
    view = run(
        store,
        registry,
        """
        name: tpl
        steps:
          - {id: a, runner: r, inputs: {fail: true}, allowFailure: true,
             nextSteps: [{step: b, on: always}, {step: c, on: always}]}
          - id: b
            runner: echo
            condition: "steps.a.status == 'failed'"
            inputs: {status: "{{ steps.a.status }}", result: "{{ steps.a.result }}"}
          - {id: c, runner: r, condition: "steps.a.status == 'succeeded'"}
    """,
    )
    assert final(view) == {"a": "failed", "b": "succeeded", "c": "skipped"}
    assert rows(view, "b")[0].result == {"status": "failed", "result": None}


def test_context_carries_ids_params_run_and_direct_upstream_results(store, registry):
    seen: dict[str, Any] = {}

    @registry.handler("r")
    def r(inputs, ctx):
        seen[ctx.step_id] = ctx
        return {"from": ctx.step_id}

    view = run(
        store,
        registry,
        """
        name: ctx
        params:
          day: {type: string, default: "2024-05-06"}
        steps:
          - {id: a, runner: r, nextSteps: [b]}
          - {id: b, runner: r, nextSteps: [c]}
          - {id: x, runner: r, nextSteps: [c]}
          - {id: c, runner: r, nextSteps: [d, {step: e, on: always}]}
          - {id: skip_me, runner: r, condition: "false", nextSteps: [{step: e, on: always}]}
          - {id: d, runner: r}
          - {id: e, runner: r}
    """,
    )
    assert view.status == "succeeded"
    assert seen["a"].results == {}
    assert seen["b"].results == {"a": {"from": "a"}}
    # direct upstreams only: a is not in c's results
    assert seen["c"].results == {"b": {"from": "b"}, "x": {"from": "x"}}
    assert seen["d"].results == {"c": {"from": "c"}}
    # a skipped upstream is present, with no result
    assert seen["e"].results == {"c": {"from": "c"}, "skip_me": None}
    for step, ctx in seen.items():
        assert ctx.step_id == step
        assert ctx.instance_id == view.id
        assert ctx.attempt == 1
        assert ctx.params == {"day": "2024-05-06"}
        assert ctx.run["id"] == view.id
        assert ctx.run["trigger"] == "cli"
        assert ctx.logger is not None
        assert ctx.cancelled is False


def test_downstream_steps_see_an_upstream_result_as_it_was_stored(store, registry):
    # what a later step sees must not depend on whether it ran in this process, on a worker
    # that read the result back, or after a resume: it is the stored JSON
    registry.add("a", lambda inputs, ctx: {"pair": (1, 2), 7: "seven"})
    seen: dict[str, Any] = {}

    @registry.handler("b")
    def b(inputs, ctx):
        seen.update(results=ctx.results, inputs=inputs)

    view = run(
        store,
        registry,
        """
        name: stored
        steps:
          - id: a
          - {id: b, inputs: {pair: "{{ steps.a.result.pair }}", whole: "{{ steps.a.result }}"}}
    """,
    )
    assert view.status == "succeeded"
    stored = rows(view, "a")[0].result
    assert stored == {"pair": [1, 2], "7": "seven"}
    assert seen["results"] == {"a": stored}
    assert seen["inputs"] == {"pair": [1, 2], "whole": stored}


def test_a_runner_changing_what_it_received_does_not_change_what_later_steps_see(
    store, registry
):
    registry.add("a", lambda inputs, ctx: {"n": 1, "items": [1]})

    @registry.handler("meddle")
    def meddle(inputs, ctx):
        ctx.results["a"]["n"] = 99
        inputs["whole"]["items"].append(2)
        ctx.params["day"] = "changed"
        return {}

    registry.add(
        "c", lambda inputs, ctx: {"inputs": inputs, "params": ctx.params, "results": ctx.results}
    )
    view = run(
        store,
        registry,
        """
        name: meddle
        params:
          day: {type: string, default: d1}
        steps:
          - id: a
          - {id: b, runner: meddle, inputs: {whole: "{{ steps.a.result }}"}}
          - id: c
            inputs:
              n: "{{ steps.a.result.n }}"
              items: "{{ steps.a.result['items'] }}"
              day: "{{ params.day }}"
    """,
    )
    assert view.status == "succeeded"
    assert rows(view, "a")[0].result == {"n": 1, "items": [1]}
    assert rows(view, "c")[0].result == {
        "inputs": {"n": 1, "items": [1], "day": "d1"},
        "params": {"day": "d1"},
        "results": {"b": {}},
    }


def test_inputs_that_cannot_be_rendered_fail_the_step_without_calling_its_runner(
    store, registry, rec
):
    registry.add("a", lambda inputs, ctx: {"count": 1})
    view = run(
        store,
        registry,
        """
        name: render
        steps:
          - id: a
            nextSteps: [b]
          - id: b
            runner: r
            inputs: {x: "{{ steps.a.result.missing_key + 1 }}"}
            nextSteps: [{step: on_fail, on: failure}]
          - {id: on_fail, runner: r}
    """,
    )
    assert final(view) == {"a": "succeeded", "b": "failed", "on_fail": "succeeded"}
    assert rec.called == ["on_fail"]
    (b,) = rows(view, "b")
    assert "missing_key" in b.error
    assert view.status == "failed"


def test_a_step_without_inputs_receives_an_empty_dict(store, registry):
    got = []
    registry.add("a", lambda inputs, ctx: got.append(inputs))
    view = run(store, registry, "name: t\nsteps:\n  - id: a\n")
    assert view.status == "succeeded"
    assert got == [{}]
    assert rows(view, "a")[0].result is None


def test_async_def_runners_run_and_their_results_flow_downstream(store, registry):
    @registry.handler("fetch")
    async def fetch(inputs, ctx):
        await asyncio.sleep(0)
        return {"n": inputs["n"] * 2}

    @registry.handler("use")
    async def use(inputs, ctx):
        return {"got": inputs["n"], "upstream": ctx.results}

    view = run(
        store,
        registry,
        """
        name: aio
        steps:
          - {id: a, runner: fetch, inputs: {n: 21}}
          - {id: b, runner: use, inputs: {n: "{{ steps.a.result.n }}"}}
    """,
    )
    assert view.status == "succeeded"
    assert rows(view, "b")[0].result == {"got": 42, "upstream": {"a": {"n": 42}}}


def test_async_runners_of_one_instance_run_concurrently(store, registry):
    barrier = threading.Barrier(2, timeout=WAIT)

    @registry.handler("meet")
    async def meet(inputs, ctx):
        # both coroutines must be in flight at once for the barrier to open
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        return ctx.step_id

    view = run(
        store,
        registry,
        """
        name: aio
        concurrency: 2
        steps:
          - {id: a, runner: meet, nextSteps: []}
          - {id: b, runner: meet, nextSteps: []}
    """,
    )
    assert final(view) == {"a": "succeeded", "b": "succeeded"}


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_class_runners_get_a_fresh_instance_per_attempt(store, registry, is_async):
    instances: list[int] = []

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0
            instances.append(id(self))

        def work(self, ctx):
            self.calls += 1
            if ctx.attempt < 3:
                raise RuntimeError(f"attempt {ctx.attempt}")
            return {"calls_on_this_instance": self.calls, "attempt": ctx.attempt}

    if is_async:

        class Runner(Flaky):
            async def run(self, inputs, ctx):
                return self.work(ctx)
    else:

        class Runner(Flaky):  # type: ignore[no-redef]
            def run(self, inputs, ctx):
                return self.work(ctx)

    registry.add("cls", Runner)
    view = run(
        store,
        registry,
        """
        name: cls
        steps:
          - id: a
            runner: cls
            retry: {maxAttempts: 3, delaySeconds: 0.01}
    """,
    )
    assert view.status == "succeeded"
    assert [(s.attempt, s.status) for s in view.steps] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert view.steps[-1].result == {"calls_on_this_instance": 1, "attempt": 3}
    assert len(instances) == 3


@pytest.mark.parametrize(
    "value",
    [
        {"when": datetime(2024, 1, 1, tzinfo=UTC)},
        {"tags": {"a", "b"}},
        {"obj": object()},
        {"nan": math.nan},
    ],
    ids=["datetime", "set", "object", "nan"],
)
def test_a_non_json_result_fails_the_step_with_a_clear_error(store, registry, rec, value):
    registry.add("bad", lambda inputs, ctx: value)
    view = run(
        store,
        registry,
        """
        name: nojson
        steps:
          - {id: a, runner: bad}
          - {id: b, runner: r}
    """,
    )
    assert final(view) == {"a": "failed", "b": "skipped"}
    (a,) = rows(view, "a")
    assert a.result is None
    assert "JSON" in a.error
    assert view.status == "failed"


def test_a_pydantic_model_result_is_dumped_to_json(store, registry):
    class Summary(BaseModel):
        count: int
        at: datetime
        tags: list[str]

    registry.add(
        "model",
        lambda inputs, ctx: Summary(
            count=4, at=datetime(2024, 3, 1, 12, 0, tzinfo=UTC), tags=["x"]
        ),
    )
    registry.add("echo", lambda inputs, ctx: {"inputs": inputs, "results": ctx.results})
    view = run(
        store,
        registry,
        """
        name: model
        steps:
          - {id: a, runner: model}
          - {id: b, runner: echo, inputs: {count: "{{ steps.a.result.count }}"}}
    """,
    )
    assert view.status == "succeeded"
    dumped = {"count": 4, "at": "2024-03-01T12:00:00Z", "tags": ["x"]}
    assert rows(view, "a")[0].result == dumped
    assert rows(view, "b")[0].result == {"inputs": {"count": 4}, "results": {"a": dumped}}


def test_a_raising_runner_persists_the_message_and_the_traceback(store, registry):
    def explode_deep(n):
        raise ValueError(f"bad row {n}")

    @registry.handler("boom")
    def boom(inputs, ctx):
        explode_deep(17)

    view = run(store, registry, "name: boom\nsteps:\n  - {id: a, runner: boom}\n")
    assert view.status == "failed"
    (a,) = view.steps
    assert a.status == "failed"
    assert "ValueError" in a.error
    assert "bad row 17" in a.error
    assert "Traceback (most recent call last)" in a.error
    assert "explode_deep" in a.error  # the frames, not only the last line
    assert a.finished_at is not None


def test_a_runner_raising_system_exit_fails_its_step_and_the_run_goes_on(
    store, registry, rec
):
    def leave(inputs, ctx):
        raise SystemExit(3)

    registry.add("leave", leave)
    view = run(
        store,
        registry,
        """
        name: exit
        steps:
          - {id: a, runner: leave, allowFailure: true, nextSteps: [{step: b, on: failure}]}
          - {id: b, runner: r}
    """,
    )
    assert final(view) == {"a": "failed", "b": "succeeded"}
    assert "SystemExit" in rows(view, "a")[0].error


# -- retries ----------------------------------------------------------------------------------


def test_max_attempts_counts_every_attempt_each_one_a_row(store, registry):
    attempts: list[int] = []

    @registry.handler("never")
    def never(inputs, ctx):
        attempts.append(ctx.attempt)
        raise RuntimeError(f"try {ctx.attempt}")

    view = run(
        store,
        registry,
        """
        name: retry
        steps:
          - id: a
            runner: never
            retry: {maxAttempts: 3, delaySeconds: 0.01}
    """,
    )
    assert attempts == [1, 2, 3]
    assert [(s.step, s.attempt, s.status) for s in view.steps] == [
        ("a", 1, "failed"),
        ("a", 2, "failed"),
        ("a", 3, "failed"),
    ]
    assert all(f"try {s.attempt}" in s.error for s in view.steps)
    assert all(s.finished_at is not None for s in view.steps)
    assert view.status == "failed"


def test_max_attempts_one_means_no_retry(store, registry):
    calls = []
    registry.add("never", lambda inputs, ctx: calls.append(1) or 1 / 0)
    view = run(
        store,
        registry,
        """
        name: retry
        steps:
          - {id: a, runner: never, retry: {maxAttempts: 1, delaySeconds: 0.01}}
    """,
    )
    assert len(calls) == 1
    assert [s.attempt for s in view.steps] == [1]


def test_a_retry_that_succeeds_stops_retrying_and_the_instance_succeeds(store, registry):
    attempts: list[int] = []

    @registry.handler("third")
    def third(inputs, ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        return {"ok": ctx.attempt}

    registry.add("next", lambda inputs, ctx: ctx.results)
    view = run(
        store,
        registry,
        """
        name: retry
        steps:
          - {id: a, runner: third, retry: {maxAttempts: 5, delaySeconds: 0.01}}
          - {id: b, runner: next}
    """,
    )
    assert attempts == [1, 2, 3]
    assert [(s.step, s.attempt, s.status) for s in view.steps] == [
        ("a", 1, "failed"),
        ("a", 2, "failed"),
        ("a", 3, "succeeded"),
        ("b", 1, "succeeded"),
    ]
    assert view.steps[2].result == {"ok": 3}
    assert view.steps[3].result == {"a": {"ok": 3}}
    assert view.status == "succeeded"


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        (Retry(max_attempts=6, delay_seconds=1, backoff=2, max_delay_seconds=5), [1, 2, 4, 5, 5]),
        (Retry(max_attempts=4, delay_seconds=3), [3, 3, 3]),
        (Retry(max_attempts=4, delay_seconds=0.5, backoff=3), [0.5, 1.5, 4.5]),
        (Retry(max_attempts=3, delay_seconds=10, backoff=10, max_delay_seconds=0), [0, 0]),
        (Retry(max_attempts=3), [0, 0]),
    ],
)
def test_retry_delay_grows_by_backoff_capped_by_max_delay(retry, expected):
    assert [retry.delay(n) for n in range(1, retry.max_attempts)] == pytest.approx(expected)


def test_retry_settings_read_from_yaml_camel_case(store, registry):
    registry.add("a", lambda inputs, ctx: 1)
    loaded = load_text(
        textwrap.dedent("""
        name: t
        steps:
          - id: a
            retry: {maxAttempts: 4, delaySeconds: 2, backoff: 3, maxDelaySeconds: 10}
    """),
        "x.yaml",
        registry,
    )
    retry = loaded.definition.settings(loaded.definition.steps[0])[0]
    assert [retry.delay(n) for n in (1, 2, 3)] == [2, 6, 10]


def test_retry_delays_in_a_run_grow_by_backoff_up_to_the_cap(store, registry):
    registry.add("never", lambda inputs, ctx: 1 / 0)
    events: list[StepEvent] = []
    view = run(
        store,
        registry,
        """
        name: retry
        steps:
          - id: a
            runner: never
            retry: {maxAttempts: 5, delaySeconds: 0.01, backoff: 2, maxDelaySeconds: 0.03}
    """,
        listener=events.append,
    )
    assert len(view.steps) == 5
    failed = [e for e in events if e.status == "failed"]
    assert [e.attempt for e in failed] == [1, 2, 3, 4, 5]
    assert [e.retry_in for e in failed] == pytest.approx([0.01, 0.02, 0.03, 0.03, None])
    assert [e.attempt for e in events if e.status == "running"] == [1, 2, 3, 4, 5]


def test_retry_defaults_are_inherited_and_a_step_overrides_them(store, registry):
    calls: Counter[str] = Counter()

    @registry.handler("never")
    def never(inputs, ctx):
        calls[ctx.step_id] += 1
        raise RuntimeError("no")

    view = run(
        store,
        registry,
        """
        name: defaults
        concurrency: 3
        defaults:
          retry: {maxAttempts: 3, delaySeconds: 0.01}
        steps:
          - {id: inherits, runner: never, nextSteps: []}
          - {id: once, runner: never, retry: {maxAttempts: 1}, nextSteps: []}
          - {id: twice, runner: never, retry: {maxAttempts: 2, delaySeconds: 0.01},
             nextSteps: []}
    """,
    )
    assert calls == {"inherits": 3, "once": 1, "twice": 2}
    assert Counter(s.step for s in view.steps) == calls


# -- timeouts ---------------------------------------------------------------------------------


class SignallingDispatcher(DirectDispatcher):
    """The direct dispatcher, announcing each outcome once it was handed to the executor."""

    def __init__(self, registry) -> None:
        super().__init__(registry)
        self.delivered: dict[tuple[str, int], threading.Event] = {}
        self._lock = threading.Lock()

    def event(self, step: str, attempt: int) -> threading.Event:
        with self._lock:
            return self.delivered.setdefault((step, attempt), threading.Event())

    def submit(self, task, done):
        def relay(outcome):
            done(outcome)
            self.event(task.step_id, task.attempt).set()

        super().submit(task, relay)


def test_a_sync_runner_ignoring_its_timeout_fails_and_does_not_hold_the_run(
    store, registry, rec
):
    started, release, returned = threading.Event(), threading.Event(), threading.Event()

    @registry.handler("stuck")
    def stuck(inputs, ctx):
        started.set()
        release.wait(WAIT * 3)  # ignores ctx.cancelled on purpose
        returned.set()
        return {"late": True}

    try:
        view = run(
            store,
            registry,
            """
            name: slow
            defaults:
              timeoutSeconds: 0.1
            steps:
              - {id: a, runner: stuck, nextSteps: [b, {step: c, on: failure}]}
              - {id: b, runner: r}
              - {id: c, runner: r}
        """,
        )
        # the run ended while the runaway runner is still inside its call
        assert started.is_set()
        assert not returned.is_set()
    finally:
        release.set()
    assert final(view) == {"a": "failed", "b": "skipped", "c": "succeeded"}
    (a,) = rows(view, "a")
    assert "timeout" in a.error.lower()
    assert a.result is None
    assert a.finished_at is not None
    assert view.status == "failed"


def test_a_late_result_of_a_timed_out_attempt_is_discarded(store, registry):
    registry_dispatcher = SignallingDispatcher(registry)
    release = threading.Event()

    @registry.handler("slow_then_fast")
    def slow_then_fast(inputs, ctx):
        if ctx.attempt == 1:
            release.wait(WAIT)
            return {"attempt": 1}
        release.set()
        # hold attempt 2 until the late outcome of attempt 1 reached the executor
        assert registry_dispatcher.event("a", 1).wait(WAIT)
        return {"attempt": 2}

    registry.add("next", lambda inputs, ctx: ctx.results)
    view = run(
        store,
        registry,
        """
        name: late
        steps:
          - id: a
            runner: slow_then_fast
            timeoutSeconds: 0.1
            retry: {maxAttempts: 2, delaySeconds: 0.01}
          - {id: b, runner: next}
    """,
        dispatcher=registry_dispatcher,
    )
    assert registry_dispatcher.event("a", 1).is_set()
    assert [(s.step, s.attempt, s.status) for s in view.steps] == [
        ("a", 1, "failed"),
        ("a", 2, "succeeded"),
        ("b", 1, "succeeded"),
    ]
    first, second, b = view.steps
    assert "timeout" in first.error.lower()
    assert first.result is None  # not overwritten by the late {"attempt": 1}
    assert second.result == {"attempt": 2}
    assert b.result == {"a": {"attempt": 2}}
    assert view.status == "succeeded"


def test_a_late_result_after_the_step_ended_does_not_change_its_row(store, registry):
    dispatcher = SignallingDispatcher(registry)
    release = threading.Event()

    @registry.handler("stuck")
    def stuck(inputs, ctx):
        release.wait(WAIT)
        return {"late": True}

    @registry.handler("handler")
    def handler(inputs, ctx):
        release.set()
        assert dispatcher.event("a", 1).wait(WAIT)
        return {"handled": True}

    view = run(
        store,
        registry,
        """
        name: late
        steps:
          - {id: a, runner: stuck, timeoutSeconds: 0.1, nextSteps: [{step: h, on: failure}]}
          - {id: h, runner: handler}
    """,
        dispatcher=dispatcher,
    )
    assert final(view) == {"a": "failed", "h": "succeeded"}
    (a,) = rows(view, "a")
    assert a.result is None
    assert "timeout" in a.error.lower()
    assert len(view.steps) == 2


def test_a_cooperative_runner_sees_ctx_cancelled_once_timed_out(store, registry):
    observed: dict[str, Any] = {}
    noticed = threading.Event()

    @registry.handler("polite")
    def polite(inputs, ctx):
        observed["before"] = ctx.cancelled
        observed["woken"] = ctx.cancel_event.wait(WAIT)
        observed["after"] = ctx.cancelled
        noticed.set()
        return {"stopped": True}

    view = run(
        store,
        registry,
        """
        name: polite
        steps:
          - {id: a, runner: polite, timeoutSeconds: 0.1}
    """,
    )
    assert noticed.wait(WAIT)
    assert observed == {"before": False, "woken": True, "after": True}
    (a,) = view.steps
    assert a.status == "failed"
    assert "timeout" in a.error.lower()
    assert view.status == "failed"


def test_an_async_runner_past_its_timeout_is_cancelled(store, registry):
    cancelled = threading.Event()
    seen_cancel_flag: list[bool] = []

    @registry.handler("forever")
    async def forever(inputs, ctx):
        try:
            await asyncio.sleep(WAIT * 3)
        except asyncio.CancelledError:
            seen_cancel_flag.append(ctx.cancelled)
            cancelled.set()
            raise
        return {"late": True}

    view = run(
        store,
        registry,
        """
        name: aio
        steps:
          - {id: a, runner: forever, timeoutSeconds: 0.1}
    """,
    )
    assert cancelled.wait(WAIT), "the coroutine never saw CancelledError"
    assert seen_cancel_flag == [True]
    (a,) = view.steps
    assert a.status == "failed"
    assert "timeout" in a.error.lower()


def test_a_timed_out_attempt_is_retried(store, registry):
    release = threading.Event()

    @registry.handler("once_slow")
    def once_slow(inputs, ctx):
        if ctx.attempt == 1:
            ctx.cancel_event.wait(WAIT)
            release.wait(WAIT)
        return {"attempt": ctx.attempt}

    try:
        view = run(
            store,
            registry,
            """
            name: t
            steps:
              - {id: a, runner: once_slow, timeoutSeconds: 0.1,
                 retry: {maxAttempts: 2, delaySeconds: 0.01}}
        """,
        )
    finally:
        release.set()
    assert [(s.attempt, s.status) for s in view.steps] == [(1, "failed"), (2, "succeeded")]
    assert view.steps[1].result == {"attempt": 2}


def test_a_step_timeout_overrides_the_default(store, registry):
    short_stopped = threading.Event()

    @registry.handler("short")
    def short(inputs, ctx):
        ctx.cancel_event.wait(WAIT)
        short_stopped.set()

    @registry.handler("long")
    def long(inputs, ctx):
        # started with `short`: under the 0.05 s default it would be cancelled by now too
        assert short_stopped.wait(WAIT)
        return {"cancelled": ctx.cancel_event.wait(0.2)}

    view = run(
        store,
        registry,
        """
        name: t
        concurrency: 2
        defaults:
          timeoutSeconds: 0.05
        steps:
          - {id: short, runner: short, nextSteps: []}
          - {id: long, runner: long, timeoutSeconds: 30, nextSteps: []}
    """,
    )
    assert final(view) == {"short": "failed", "long": "succeeded"}
    assert "timeout" in rows(view, "short")[0].error.lower()
    assert rows(view, "long")[0].result == {"cancelled": False}


# -- concurrency --------------------------------------------------------------------------------


class InFlight:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


def test_concurrency_bounds_runners_in_flight_and_is_reached(store, registry):
    gauge = InFlight()
    barrier = threading.Barrier(3, timeout=WAIT)

    @registry.handler("meet")
    def meet(inputs, ctx):
        with gauge:
            barrier.wait()  # opens only with three runners in flight together
        return ctx.step_id

    steps = "\n".join(f"  - {{id: s{i}, runner: meet, nextSteps: []}}" for i in range(6))
    view = run(store, registry, f"name: c\nconcurrency: 3\nsteps:\n{steps}\n")
    assert view.status == "succeeded", [s.error for s in view.steps]
    assert gauge.peak == 3


def test_concurrency_one_runs_independent_steps_one_at_a_time(store, registry):
    gauge = InFlight()
    overlap = threading.Event()

    @registry.handler("solo")
    def solo(inputs, ctx):
        with gauge:
            with gauge.lock:
                if gauge.now > 1:
                    overlap.set()
            # give a wrongly started second runner the chance to show up
            overlap.wait(0.05)
        return ctx.step_id

    steps = "\n".join(f"  - {{id: s{i}, runner: solo, nextSteps: []}}" for i in range(4))
    view = run(store, registry, f"name: c\nsteps:\n{steps}\n")
    assert view.status == "succeeded"
    assert gauge.peak == 1
    assert not overlap.is_set()


def test_independent_branches_run_concurrently_while_dependents_wait(store, registry):
    barrier = threading.Barrier(2, timeout=WAIT)
    log: list[str] = []

    @registry.handler("branch")
    def branch(inputs, ctx):
        barrier.wait()
        log.append(ctx.step_id)
        return ctx.step_id

    registry.add("join", lambda inputs, ctx: (log.append("join"), sorted(ctx.results))[1])
    view = run(
        store,
        registry,
        """
        name: c
        concurrency: 4
        steps:
          - {id: left, runner: branch, nextSteps: [j]}
          - {id: right, runner: branch, nextSteps: [j]}
          - {id: j, runner: join}
    """,
    )
    assert final(view) == {"left": "succeeded", "right": "succeeded", "j": "succeeded"}
    assert log[-1] == "join"
    assert rows(view, "j")[0].result == ["left", "right"]


def test_a_retry_waiting_for_its_delay_does_not_block_other_steps(store, registry):
    other_done = threading.Event()

    @registry.handler("flaky")
    def flaky(inputs, ctx):
        if ctx.attempt == 1:
            raise RuntimeError("first")
        # the second attempt starts only after the independent step ran
        return {"other_done_first": other_done.is_set()}

    registry.add("other", lambda inputs, ctx: other_done.set())
    view = run(
        store,
        registry,
        """
        name: c
        steps:
          - {id: a, runner: flaky, retry: {maxAttempts: 2, delaySeconds: 0.3}, nextSteps: []}
          - {id: b, runner: other, nextSteps: []}
    """,
    )
    assert view.status == "succeeded"
    assert rows(view, "a")[-1].result == {"other_done_first": True}
