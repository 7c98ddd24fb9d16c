"""The executor and what runners receive and return: templates, contexts, async and class
runners, results that are not JSON, raising runners.

Runs on SQLite (the store contract on both databases lives in test_store.py). Nothing here sleeps
to wait for something: runners synchronise through events and barriers, with generous bounds that
only matter when the engine is broken.
"""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from executing import WAIT, final, rows, run
from pydantic import BaseModel

pytestmark = pytest.mark.timeout(60)


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


def test_a_runner_changing_what_it_received_does_not_change_what_later_steps_see(store, registry):
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


def test_a_runner_raising_system_exit_fails_its_step_and_the_run_goes_on(store, registry, rec):
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
