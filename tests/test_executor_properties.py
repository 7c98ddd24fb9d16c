"""Properties of the executor over random step graphs, checked against a small independent model
of DESIGN section 1.

The model below knows nothing of the executor: it decides each step by a plain fixed point (a step
is decided once all its upstream steps are), straight from the wording of the semantics:
- an edge fires when its upstream ended as its `on` says (success: succeeded, failure: failed,
  always: any end) and its condition, if any, is true;
- a step runs when its join is met (all: every incoming edge fired, any: one did; roots always)
  and its own condition is true; otherwise it is skipped;
- the instance fails when a step without allowFailure failed.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import dataclass, field

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.service import BatchService

pytestmark = pytest.mark.timeout(120)

ENDS = ("succeeded", "failed", "skipped")


# -- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    """An expression the test can both write as Jinja2 and evaluate itself."""

    kind: str  # "result": steps.S.result.v > K   "status": steps.S.status == X   "param": gate > K
    step: str | None
    value: int | str

    def jinja(self) -> str:
        if self.kind == "result":
            return (
                f"steps.{self.step}.result is not none "
                f"and steps.{self.step}.result.v > {self.value}"
            )
        if self.kind == "status":
            return f"steps.{self.step}.status == '{self.value}'"
        return f"params.gate > {self.value}"

    def holds(self, status: dict[str, str], result: dict[str, dict | None], gate: int) -> bool:
        if self.kind == "result":
            res = result[self.step]
            return res is not None and res["v"] > self.value
        if self.kind == "status":
            return status[self.step] == self.value
        return gate > self.value


@dataclass(frozen=True)
class EdgeSpec:
    source: str
    target: str
    on: str
    cond: Cond | None = None


@dataclass(frozen=True)
class StepSpec:
    id: str
    fails: bool
    value: int
    join: str
    cond: Cond | None
    allow_failure: bool


@dataclass
class Dag:
    steps: list[StepSpec]
    edges: list[EdgeSpec]
    linear: bool
    gate: int
    incoming: dict[str, list[EdgeSpec]] = field(init=False)

    def __post_init__(self) -> None:
        self.incoming = {s.id: [e for e in self.edges if e.target == s.id] for s in self.steps}


def _fires(on: str, upstream_status: str) -> bool:
    return {
        "success": upstream_status == "succeeded",
        "failure": upstream_status == "failed",
        "always": True,
    }[on]


def model(dag: Dag) -> tuple[dict[str, str], str]:
    """Every step's end and the instance status, by fixed-point iteration."""
    status: dict[str, str] = {}
    result: dict[str, dict | None] = {}
    changed = True
    while changed:
        changed = False
        for step in dag.steps:
            incoming = dag.incoming[step.id]
            if step.id in status or any(e.source not in status for e in incoming):
                continue
            fired = [
                e
                for e in incoming
                if _fires(e.on, status[e.source])
                and (e.cond is None or e.cond.holds(status, result, dag.gate))
            ]
            if not incoming:
                joined = True
            elif step.join == "all":
                joined = len(fired) == len(incoming)
            else:
                joined = len(fired) > 0
            runs = joined and (step.cond is None or step.cond.holds(status, result, dag.gate))
            if not runs:
                status[step.id], result[step.id] = "skipped", None
            elif step.fails:
                status[step.id], result[step.id] = "failed", None
            else:
                status[step.id], result[step.id] = "succeeded", {"v": step.value}
            changed = True
    assert len(status) == len(dag.steps), "the model met a cycle"
    failed = any(status[s.id] == "failed" and not s.allow_failure for s in dag.steps)
    return status, "failed" if failed else "succeeded"


def test_the_model_itself_on_a_hand_checked_graph():
    a = StepSpec("a", fails=True, value=0, join="all", cond=None, allow_failure=True)
    b = StepSpec("b", fails=False, value=5, join="all", cond=None, allow_failure=False)
    c = StepSpec("c", fails=False, value=1, join="any", cond=None, allow_failure=False)
    d = StepSpec(
        "d", fails=False, value=1, join="all", cond=Cond("param", None, 3), allow_failure=False
    )
    edges = [
        EdgeSpec("a", "b", "failure"),
        EdgeSpec("a", "c", "success"),
        EdgeSpec("b", "c", "always", Cond("result", "b", 4)),
        EdgeSpec("c", "d", "success"),
    ]
    assert model(Dag([a, b, c, d], edges, linear=False, gate=2)) == (
        {"a": "failed", "b": "succeeded", "c": "succeeded", "d": "skipped"},
        "succeeded",
    )


# -- random graphs ------------------------------------------------------------------------------


def _ancestors(n: int, edges: list[EdgeSpec]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {f"s{i}": set() for i in range(n)}
    changed = True
    while changed:
        changed = False
        for e in edges:
            new = found[e.source] | {e.source}
            if not new <= found[e.target]:
                found[e.target] |= new
                changed = True
    return found


def _cond(draw, refs: list[str]) -> Cond | None:
    """A condition over params or over one of `refs` (steps known when it is evaluated)."""
    kinds = ["none", "none", "param"] + (["result", "status"] if refs else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "param":
        return Cond("param", None, draw(st.integers(0, 9)))
    step = draw(st.sampled_from(sorted(refs)))
    if kind == "result":
        return Cond("result", step, draw(st.integers(-1, 9)))
    return Cond("status", step, draw(st.sampled_from(ENDS)))


@st.composite
def dags(draw) -> Dag:
    n = draw(st.integers(1, 7))
    ids = [f"s{i}" for i in range(n)]
    linear = draw(st.integers(0, 4)) == 0
    if linear:
        edges = [EdgeSpec(a, b, "success") for a, b in itertools.pairwise(ids)]
    else:
        # edges follow a random topological order, independent of the list order
        topo = draw(st.permutations(ids))
        edges = []
        for i, j in itertools.combinations(range(n), 2):
            if draw(st.integers(0, 2)) == 0:
                source, target = topo[i], topo[j]
                on = draw(st.sampled_from(["success", "failure", "always"]))
                edges.append(EdgeSpec(source, target, on))
        ancestors = _ancestors(n, edges)
        edges = [
            EdgeSpec(
                e.source, e.target, e.on, _cond(draw, sorted(ancestors[e.source] | {e.source}))
            )
            for e in edges
        ]
    ancestors = _ancestors(n, edges)
    steps = [
        StepSpec(
            id=step,
            fails=draw(st.integers(0, 2)) == 0,
            value=draw(st.integers(0, 9)),
            join=draw(st.sampled_from(["all", "any"])),
            cond=_cond(draw, sorted(ancestors[step])),
            allow_failure=draw(st.booleans()),
        )
        for step in ids
    ]
    return Dag(steps, edges, linear, gate=draw(st.integers(0, 9)))


def to_yaml(dag: Dag, concurrency: int) -> str:
    steps = []
    for s in dag.steps:
        step: dict = {"id": s.id, "runner": "r", "inputs": {"fail": s.fails, "v": s.value}}
        if s.join != "all":
            step["join"] = s.join
        if s.cond is not None:
            step["condition"] = s.cond.jinja()
        if s.allow_failure:
            step["allowFailure"] = True
        if not dag.linear:
            step["nextSteps"] = [
                {"step": e.target, "on": e.on, **({"condition": e.cond.jinja()} if e.cond else {})}
                for e in dag.edges
                if e.source == s.id
            ]
        steps.append(step)
    definition = {
        "name": "prop",
        "concurrency": concurrency,
        "params": {"gate": {"type": "integer", "default": dag.gate}},
        "steps": steps,
    }
    return yaml.safe_dump(definition, sort_keys=False)


# -- the property -------------------------------------------------------------------------------


class Trace:
    """What the runners saw: a global sequence of starts and ends, and the in-flight peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.seq = itertools.count()
        self.starts: list[str] = []
        self.started_at: dict[str, int] = {}
        self.ended_at: dict[str, int] = {}
        self.in_flight = 0
        self.peak = 0

    def runner(self, inputs, ctx):
        with self.lock:
            self.starts.append(ctx.step_id)
            self.started_at[ctx.step_id] = next(self.seq)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            if inputs["fail"]:
                raise RuntimeError(f"{ctx.step_id} was told to fail")
            return {"v": inputs["v"]}
        finally:
            with self.lock:
                self.in_flight -= 1
                self.ended_at[ctx.step_id] = next(self.seq)


def check(dag: Dag, concurrency: int, service: BatchService, registry, trace: Trace) -> None:
    trace.reset()
    loaded = load_text(to_yaml(dag, concurrency), "prop.yaml", registry)
    view = service.run(BatchService.prepare(loaded, {}))
    expected, instance = model(dag)

    # each step ran at most once, and exactly the steps the model runs ran
    assert all(n == 1 for n in Counter(trace.starts).values()), trace.starts
    assert set(trace.starts) == {s for s, end in expected.items() if end != "skipped"}

    # never before every upstream step ended
    for step in trace.starts:
        for edge in dag.incoming[step]:
            assert edge.source in trace.ended_at or expected[edge.source] == "skipped"
            if edge.source in trace.ended_at:
                assert trace.ended_at[edge.source] < trace.started_at[step], (edge, trace.starts)

    assert trace.peak <= concurrency

    # the persisted rows: one per step, with the model's statuses
    assert sorted((s.step, s.attempt) for s in view.steps) == sorted((s.id, 1) for s in dag.steps)
    assert {s.step: s.status for s in view.steps} == expected
    specs = {s.id: s for s in dag.steps}
    for row in view.steps:
        if row.status == "succeeded":
            assert row.result == {"v": specs[row.step].value}
        elif row.status == "failed":
            assert "was told to fail" in row.error
        else:
            assert row.result is None
    assert view.status == instance


SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def harness(registry):
    trace = Trace()
    registry.add("r", trace.runner)
    dispatcher = DirectDispatcher(registry)
    yield trace, dispatcher
    dispatcher.close()


@pytest.mark.parametrize("concurrency", [1, 3])
@settings(max_examples=60, **SETTINGS)
@given(dag=dags())
def test_random_graphs_end_as_the_model_says(sqlite_store, registry, harness, concurrency, dag):
    trace, dispatcher = harness
    check(dag, concurrency, BatchService(sqlite_store, dispatcher), registry, trace)


@settings(max_examples=12, **SETTINGS)
@given(dag=dags())
def test_random_graphs_end_as_the_model_says_on_each_database(store, registry, harness, dag):
    trace, dispatcher = harness
    check(dag, 2, BatchService(store, dispatcher), registry, trace)
