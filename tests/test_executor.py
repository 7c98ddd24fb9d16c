"""The executor through the service, as a user drives it: order, edges, conditions and joins
(the section-1 semantics of DESIGN.md), and concurrency.

Runs on SQLite (the store contract on both databases lives in test_store.py). Nothing here sleeps
to wait for something: runners synchronise through events and barriers, with generous bounds that
only matter when the engine is broken.
"""

from __future__ import annotations

import textwrap
import threading

import pytest
from executing import WAIT, final, rows, run

pytestmark = pytest.mark.timeout(60)


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
def test_step_condition_false_skips_the_step_without_calling_its_runner(store, registry, rec, go):
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


# (the steps, each step's final status, the instance's, the runners called): the step failing
# is the one with `inputs: {fail: true}`.
OUTCOMES = {
    "a linear failure skips every later step and fails the instance": (
        """
        steps:
          - {id: a, runner: r}
          - {id: b, runner: r, inputs: {fail: true}}
          - {id: c, runner: r}
          - {id: d, runner: r}
        """,
        {"a": "succeeded", "b": "failed", "c": "skipped", "d": "skipped"},
        "failed",
        ["a", "b"],
    ),
    "a root step's condition is evaluated too": (
        """
        params:
          n: {type: integer, default: 1}
        steps:
          - {id: a, runner: r, condition: "params.n > 5"}
          - {id: b, runner: r}
        """,
        {"a": "skipped", "b": "skipped"},
        "succeeded",
        [],
    ),
    "join any with no edge fired is skipped": (
        """
        concurrency: 2
        steps:
          - {id: x, runner: r, inputs: {fail: true}, allowFailure: true, nextSteps: [j]}
          - {id: y, runner: r, condition: "false", nextSteps: [j]}
          - {id: j, runner: r, join: any}
        """,
        {"x": "failed", "y": "skipped", "j": "skipped"},
        "succeeded",
        ["x"],
    ),
    "skipped propagates along success and failure edges, always edges fire": (
        """
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
        {
            "a": "skipped",
            "b": "skipped",
            "c": "skipped",
            "b_always": "succeeded",
            "cleanup": "succeeded",
            "handler": "skipped",
        },
        "succeeded",
        ["b_always", "cleanup"],
    ),
    "an allowFailure step does not fail the instance": (
        """
        steps:
          - id: flaky
            runner: r
            inputs: {fail: true}
            allowFailure: true
            nextSteps: [after, {step: alert, on: failure}]
          - {id: after, runner: r}
          - {id: alert, runner: r}
        """,
        {"flaky": "failed", "after": "skipped", "alert": "succeeded"},
        "succeeded",
        ["alert", "flaky"],
    ),
    "a failing failure handler fails the instance, even of a step that may fail": (
        """
        steps:
          - {id: a, runner: r, inputs: {fail: true}, allowFailure: true,
             nextSteps: [{step: alert, on: failure}]}
          - {id: alert, runner: r, inputs: {fail: true}}
        """,
        {"a": "failed", "alert": "failed"},
        "failed",
        ["a", "alert"],
    ),
    "an instance whose steps are all skipped succeeds": (
        """
        steps:
          - {id: a, runner: r, condition: "1 > 2"}
          - {id: b, runner: r}
        """,
        {"a": "skipped", "b": "skipped"},
        "succeeded",
        [],
    ),
}


@pytest.mark.parametrize(
    ("steps", "statuses", "status", "called"), OUTCOMES.values(), ids=OUTCOMES.keys()
)
def test_the_outcome_of_each_step_and_of_the_instance(
    store, registry, rec, steps, statuses, status, called
):
    view = run(store, registry, "name: outcome\n" + textwrap.dedent(steps))
    assert final(view) == statuses
    assert view.status == status
    assert sorted(rec.called) == called


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
