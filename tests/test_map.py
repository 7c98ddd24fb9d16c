"""`map`: a step fanned out over a list known at run time, keyed, retried per item, resumable.

Each test runs a definition through the service on real SQLite and PostgreSQL, and reads the
rows back as a user would find them (`engine runs show --json`).
"""

from __future__ import annotations

import textwrap
import threading
from collections import Counter
from typing import Any

import pytest
from executing import WAIT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from locating import at, only, problems, where, yaml

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.execution import Cancellation
from engine.service import BatchService


class Items:
    """Runners `make` (returns `inputs.items`) and `item`, which fails an item's first
    `fails[key]` attempts and records every call."""

    def __init__(self, registry: Any, fails: dict[str, int] | None = None) -> None:
        self.fails = fails or {}
        self.lock = threading.Lock()
        self.calls: list[tuple[str, int]] = []
        self.contexts: list[Any] = []
        self.running = self.most_running = 0
        self.gate: threading.Event | None = None
        self.barrier: threading.Barrier | None = None
        registry.add("make", lambda inputs, ctx: inputs["items"])
        registry.add("item", self)

    def __call__(self, inputs: dict[str, Any], ctx: Any) -> Any:
        with self.lock:
            self.calls.append((ctx.item_key, ctx.attempt))
            self.contexts.append(ctx)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                self.gate.wait(WAIT)
            if self.barrier is not None:
                self.barrier.wait(WAIT)
            if ctx.attempt <= self.fails.get(ctx.item_key, 0):
                raise RuntimeError(f"item {ctx.item_key} was told to fail")
            return {"key": ctx.item_key, "x": inputs.get("x")}
        finally:
            with self.lock:
                self.running -= 1

    def ran(self) -> Counter[str]:
        return Counter(key for key, _ in self.calls)


def definition(map_spec: str, *, retry: int = 1, extra: str = "") -> str:
    return textwrap.dedent(f"""
        name: m
        concurrency: 1
        defaults: {{retry: {{maxAttempts: {retry}}}}}
        params:
          items: {{type: array, default: [{{code: a}}, {{code: b}}, {{code: c}}]}}
        steps:
          - id: make
            inputs: {{items: "{{{{ params.items }}}}"}}
          - id: fan
            runner: item
            map: {map_spec}
            inputs: {{x: "{{{{ it.code }}}}"}}
          - id: after
            runner: make
            inputs: {{items: "{{{{ steps.fan.result }}}}"}}
        {extra}""")


KEYED = '{items: "{{ steps.make.result }}", as: it, key: "{{ it.code }}"}'


def run(store, registry, text, params=None, cancellation=None):
    service = BatchService(store, DirectDispatcher(registry))
    loaded = load_text(text, "m.yaml", registry)
    view = service.run(BatchService.prepare(loaded, params or {}), cancellation=cancellation)
    return service, store.get_instance(view.id)


def own(view, step="fan"):
    """The mapped step's own rows (item null)."""
    return [s for s in view.steps if s.step == step and s.item is None]


def items(view, step="fan"):
    return [(s.item, s.attempt, s.status) for s in view.steps if s.step == step and s.item]


def test_each_item_is_one_runner_call_and_downstream_sees_the_results_in_item_order(
    store, registry
):
    runner = Items(registry)
    _, view = run(store, registry, definition(KEYED))
    assert view.status == "succeeded"
    expected = [{"key": k, "x": k} for k in "abc"]
    [fan] = own(view)
    assert (fan.status, fan.result) == ("succeeded", expected)
    assert [s.result for s in view.steps if s.step == "after"] == [expected]
    assert sorted(items(view)) == [(k, 1, "succeeded") for k in "abc"]
    seen = {c.item_key: (c.item, c.item_index, c.results) for c in runner.contexts}
    assert seen == {
        "a": ({"code": "a"}, 0, {}),
        "b": ({"code": "b"}, 1, {}),
        "c": ({"code": "c"}, 2, {}),
    }


def test_a_literal_list_is_keyed_by_index_by_default(store, registry):
    runner = Items(registry)
    text = definition("{items: [{code: x}, {code: y}], as: it}")
    _, view = run(store, registry, text)
    assert own(view)[0].result == [{"key": "0", "x": "x"}, {"key": "1", "x": "y"}]
    assert sorted(runner.ran()) == ["0", "1"]


def test_an_empty_list_succeeds_with_an_empty_result_and_downstream_runs(store, registry):
    runner = Items(registry)
    _, view = run(store, registry, definition(KEYED), {"items": []})
    assert view.status == "succeeded" and runner.calls == []
    assert [(s.status, s.result) for s in own(view)] == [("succeeded", [])]
    assert [s.status for s in view.steps if s.step == "after"] == ["succeeded"]


@pytest.mark.parametrize(
    ("items", "says"),
    [
        ([{"code": "a"}, {"code": "a"}], "duplicate key 'a': items 0 and 1"),
        ([{"code": True}], "the key of item 0 is a boolean"),
        ([{"code": "x" * 201}], "the key of item 0 has 201 characters"),
        ([{"code": "a\x1b[31m"}], "control character"),
        ([{"name": "no code"}], "map: "),
    ],
)
def test_items_that_cannot_be_fanned_out_fail_the_step_before_any_item_runs(
    store, registry, items, says
):
    runner = Items(registry)
    _, view = run(store, registry, definition(KEYED), {"items": items})
    assert view.status == "failed" and runner.calls == []
    [fan] = own(view)
    assert fan.status == "failed" and says in fan.error
    assert not [s for s in view.steps if s.item is not None]


def test_a_template_that_yields_no_list_fails_the_step_saying_what_it_yields(store, registry):
    runner = Items(registry)
    text = definition('{items: "{{ params.one }}", as: it}').replace(
        "params:\n", "params:\n  one: {type: object, default: {code: a}}\n", 1
    )
    _, view = run(store, registry, text)
    assert view.status == "failed" and runner.calls == []
    assert own(view)[0].error == "map: items must be a list, not a mapping"


def test_each_item_is_retried_on_its_own(store, registry):
    runner = Items(registry, fails={"b": 2})
    _, view = run(store, registry, definition(KEYED, retry=3))
    assert view.status == "succeeded"
    assert runner.ran() == {"a": 1, "b": 3, "c": 1}
    assert [(a, s) for k, a, s in items(view) if k == "b"] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert own(view)[0].result[1] == {"key": "b", "x": "b"}


def test_failed_items_fail_the_step_naming_their_keys_and_the_others_still_run(store, registry):
    runner = Items(registry, fails={"a": 9, "c": 9})
    _, view = run(store, registry, definition(KEYED))
    assert view.status == "failed" and runner.ran() == {"a": 1, "b": 1, "c": 1}
    [fan] = own(view)
    assert fan.status == "failed"
    assert fan.error == "2 of 3 items failed: 'a', 'c'"
    assert [s.status for s in view.steps if s.step == "after"] == ["skipped"]


def test_fail_fast_starts_no_item_once_one_has_failed(store, registry):
    runner = Items(registry, fails={"b": 9})
    text = definition(
        '{items: "{{ steps.make.result }}", as: it, key: "{{ it.code }}", failFast: true}'
    )
    params = {"items": [{"code": k} for k in "abcde"]}
    _, view = run(store, registry, text, params)
    assert runner.ran() == {"a": 1, "b": 1}, "items after the failed one must not start"
    assert own(view)[0].error == "1 of 5 items failed: 'b'; 3 did not run to their end (failFast)"


def test_no_more_items_run_at_once_than_the_map_concurrency(store, registry):
    runner = Items(registry)
    runner.barrier = threading.Barrier(3)  # items pass only three at a time
    text = definition(
        '{items: "{{ steps.make.result }}", as: it, key: "{{ it.code }}", concurrency: 3}'
    )
    params = {"items": [{"code": str(i)} for i in range(12)]}
    _, view = run(store, registry, text, params)
    assert view.status == "succeeded" and runner.most_running == 3


def test_an_item_over_its_timeout_fails_with_a_timeout_error(store, registry):
    runner = Items(registry)
    runner.gate = threading.Event()  # never set: every item blocks until its timeout
    text = definition(KEYED).replace("defaults: {", "defaults: {timeoutSeconds: 0.2, ", 1)
    _, view = run(store, registry, text, {"items": [{"code": "slow"}]})
    runner.gate.set()
    assert items(view) == [("slow", 1, "failed")]
    error = next(s.error for s in view.steps if s.item == "slow")
    assert "timeout" in error


def test_resume_runs_again_only_the_items_that_did_not_succeed(store, registry):
    runner = Items(registry, fails={"b": 1, "d": 1})
    params = {"items": [{"code": k} for k in "abcd"]}
    service, first = run(store, registry, definition(KEYED), params)
    assert first.status == "failed" and runner.ran() == {"a": 1, "b": 1, "c": 1, "d": 1}
    service.resume(first.id, registry)
    view = store.get_instance(first.id)
    assert view.status == "succeeded"
    assert runner.ran() == {"a": 1, "b": 2, "c": 1, "d": 2}, "succeeded items must not run again"
    assert [(s.attempt, s.status) for s in own(view)] == [(1, "failed"), (2, "succeeded")]
    assert own(view)[1].result == [{"key": k, "x": k} for k in "abcd"]
    assert sorted((k, a) for k, a, s in items(view) if s == "succeeded") == [
        ("a", 1),
        ("b", 2),
        ("c", 1),
        ("d", 2),
    ]


def test_cancel_stops_the_items_in_flight_and_starts_no_more(store, registry):
    runner = Items(registry)
    runner.gate = threading.Event()
    cancellation = Cancellation()
    text = definition(
        '{items: "{{ steps.make.result }}", as: it, key: "{{ it.code }}", concurrency: 2}'
    )

    def cancel_once_two_run() -> None:
        while len(runner.calls) < 2:
            threading.Event().wait(0.01)
        cancellation.cancel("cancelled by the test")

    watcher = threading.Thread(target=cancel_once_two_run)
    watcher.start()
    _, view = run(
        store, registry, text, {"items": [{"code": str(i)} for i in range(6)]}, cancellation
    )
    runner.gate.set()
    watcher.join(WAIT)
    assert view.status == "cancelled" and len(runner.calls) == 2
    assert sorted(items(view)) == [("0", 1, "cancelled"), ("1", 1, "cancelled")]
    assert [s.status for s in own(view)] == ["cancelled"]
    assert not [s for s in view.steps if s.status == "running"]


def test_an_item_whose_inputs_fail_to_render_fails_alone(store, registry):
    runner = Items(registry)
    params = {"items": [{"code": "a"}, {"nocode": 1, "code": "b"}, {"code": "c"}]}
    text = definition(KEYED).replace(
        'x: "{{ it.code }}"', 'x: "{{ it.code }}", y: "{{ it.nocode + 1 }}"'
    )
    _, view = run(store, registry, text, params)
    assert runner.ran() == {"b": 1}
    failed = {s.item: s.error for s in view.steps if s.item and s.status == "failed"}
    assert set(failed) == {"a", "c"} and all(e.startswith("inputs: ") for e in failed.values())


# -- the property: whatever the items do, each ends succeeded exactly once or is named -----


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fails=st.lists(st.integers(0, 4), min_size=0, max_size=12),
    retry=st.integers(1, 3),
    concurrency=st.integers(1, 4),
    fail_fast=st.booleans(),
)
def test_any_mix_of_item_outcomes_and_a_resume_runs_each_item_to_success_exactly_once(
    sqlite_store, fails, retry, concurrency, fail_fast
):
    from engine.registry import JobRegistry

    registry = JobRegistry()
    keys = [f"k{i}" for i in range(len(fails))]
    runner = Items(registry, fails=dict(zip(keys, fails, strict=True)))
    spec = (
        '{items: "{{ steps.make.result }}", as: it, key: "{{ it.code }}", '
        f"concurrency: {concurrency}, failFast: {str(fail_fast).lower()}}}"
    )
    service, view = run(
        sqlite_store,
        registry,
        definition(spec, retry=retry),
        {"items": [{"code": k} for k in keys]},
    )
    for _ in range(sum(fails) + 1):  # each run uses up at least one planned failure
        if view.status == "succeeded":
            break
        [*_, fan] = own(view)
        unfinished = [k for k in keys if not _succeeded(view, k)]
        assert fan.status == "failed" and unfinished
        named = [k for k in keys if repr(k) in fan.error]
        assert named and set(named) <= set(unfinished), "only items that failed are named"
        if not fail_fast:
            assert named == unfinished[:10], "without failFast every item ran to its end"
        service.resume(view.id, registry)
        view = sqlite_store.get_instance(view.id)
    assert view.status == "succeeded"
    succeeded = Counter(k for k, _, s in items(view) if s == "succeeded")
    assert succeeded == Counter(keys), "every item succeeded exactly once"
    assert runner.ran() == Counter(k for k, _, _ in items(view)), "each call is one row"
    assert own(view)[-1].result == [{"key": k, "x": k} for k in keys]
    for key in keys:  # attempts of one key are numbered 1, 2, ... across resumes
        numbers = [a for k, a, _ in items(view) if k == key]
        assert numbers == list(range(1, len(numbers) + 1))


def _succeeded(view, key) -> bool:
    return any(k == key and s == "succeeded" for k, _, s in items(view))


# -- validation ---------------------------------------------------------------------------

MAPPED = """
name: x
steps:
  - id: make
  - id: fan
    map: {spec}
    inputs: {{v: "{{{{ item.code }}}}"}}
"""


@pytest.mark.parametrize(
    ("spec", "anchor", "says"),
    [
        ("{items: 5}", "5", "map.items must be a YAML list, or one template"),
        ("{items: plain text}", "plain text", "map.items must be a YAML list"),
        ('{items: "{{ steps.nope.result }}"}', '"{{ steps.nope', "unknown step 'nope'"),
        ('{items: "{{ item }}"}', '"{{ item }}"', "unknown name 'item'"),
        ("{items: [1], as: params}", "params}", "map.as: 'params' would hide a name"),
        ("{items: [1], as: secrets}", "secrets}", "would hide"),
        ("{items: [1], as: 2x}", "2x", "map.as: must be letters, digits and '_', starting with"),
        ("{items: [1], key: fixed}", "fixed", "map.key must be a template"),
        ('{items: [1], key: "{{ other.id }}"}', '"{{ other', "unknown name 'other'"),
        ("{items: [1], concurrency: 0}", "0}", "greater than or equal to 1"),
        ("{items: [1], failfast: true}", "failfast", "did you mean 'failFast'"),
        ("{item: [1]}", "item:", "unknown key 'item'"),
    ],
)
def test_a_bad_map_is_one_problem_located_at_its_value(spec, anchor, says):
    text = yaml(MAPPED.format(spec=spec))
    found = problems(text)
    assert says in " | ".join(p.message for p in found), found
    assert at(text, anchor) in [where(p) for p in found], found


def test_the_item_name_is_seen_by_inputs_and_key_only():
    text = yaml(
        """
        name: x
        steps:
          - id: make
          - id: fan
            map: {items: "{{ steps.make.result }}", as: region, key: "{{ region.code }}"}
            condition: "region.code == 'a'"
            inputs: {v: "{{ region.code }}"}
          - id: after
            inputs: {v: "{{ region }}"}
        """
    )
    found = problems(text)
    assert sorted(where(p) for p in found) == [
        at(text, '"region.code =='),
        at(text, '"{{ region }}"'),
    ]
    assert all("unknown name 'region'" in p.message for p in found)


def test_a_valid_map_loads_with_its_templates_compiled():
    text = yaml(MAPPED.format(spec='{items: "{{ steps.make.result }}", key: "{{ item.code }}"}'))
    loaded = load_text(text, "x.yaml")
    plan = loaded.maps["fan"]
    assert plan.spec.as_name == "item" and plan.key is not None and not plan.items.is_static
    assert only(yaml(MAPPED.format(spec="{items: 1}"))).message.startswith("map.items")


def test_a_dry_run_plan_shows_the_map_as_written(registry):
    Items(registry)
    loaded = load_text(definition(KEYED), "m.yaml", registry)
    plan = BatchService.prepare(loaded, {}).plan()
    fan = next(s for s in plan["steps"] if s["step"] == "fan")
    assert fan["map"] == {
        "items": "{{ steps.make.result }}",
        "as": "it",
        "key": "{{ it.code }}",
        "concurrency": None,
        "failFast": False,
    }
    assert next(s for s in plan["steps"] if s["step"] == "make")["map"] is None
