"""Properties of the UI's graph layout over random DAGs: every step drawn once (alone or in
exactly one group), every link between drawn nodes and pointing down the layers, and the
node count bounded however big the graph."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.definition import load_text
from engine.ui.layout import Edge, Kind, Layout, Node, Topology, layout

STATUSES = ("succeeded", "failed", "skipped", "running", "cancelled")


@st.composite
def graphs(draw: st.DrawFn) -> tuple[Topology, dict[str, str], int]:
    """A random DAG (edges only from a lower to a higher index), random statuses (some steps
    pending: no status), and a node limit."""
    count = draw(st.integers(1, 60))
    steps = tuple(f"s{i}" for i in range(count))
    pairs = draw(
        st.sets(
            st.tuples(st.integers(0, count - 1), st.integers(0, count - 1)).filter(
                lambda p: p[0] < p[1]
            ),
            max_size=120,
        )
    )
    labels = st.sampled_from(["", "failure"])
    edges = tuple(Edge(steps[a], steps[b], draw(labels)) for a, b in sorted(pairs))
    mapped = frozenset(draw(st.sets(st.sampled_from(steps), max_size=3)))
    statuses = draw(st.dictionaries(st.sampled_from(steps), st.sampled_from(STATUSES)))
    limit = draw(st.integers(2, 80))
    return Topology(steps, edges, mapped), statuses, limit


def owners(drawn: Layout) -> dict[str, Node]:
    """The node that holds each step."""
    return {step: node for node in drawn.nodes for step in node.members}


def drawn_edges(topology: Topology, drawn: Layout) -> list[tuple[str, str]]:
    """The step edges that a link should stand for: between two drawn nodes."""
    owner = owners(drawn)
    return [
        (owner[e.source].key, owner[e.target].key)
        for e in topology.edges
        if owner[e.source] is not owner[e.target]
        and Kind.more not in (owner[e.source].kind, owner[e.target].kind)
    ]


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_every_step_is_drawn_once_and_links_point_down_the_layers(
    case: tuple[Topology, dict[str, str], int],
) -> None:
    topology, statuses, limit = case
    drawn = layout(topology, statuses, limit)
    members = [step for node in drawn.nodes for step in node.members]
    assert sorted(members) == sorted(topology.steps)
    assert len(drawn.nodes) <= limit
    assert len({n.key for n in drawn.nodes}) == len(drawn.nodes)
    assert len({(n.layer, n.position) for n in drawn.nodes}) == len(drawn.nodes)
    for node in drawn.nodes:
        if node.kind is not Kind.more:
            assert {statuses.get(s, "pending") for s in node.members} == {node.status}
        if node.kind is Kind.step:
            assert node.key == node.members[0]
    by_key = {n.key: n for n in drawn.nodes}
    for link in drawn.links:
        source, target = by_key[link.source], by_key[link.target]
        assert Kind.more not in (source.kind, target.kind)
        assert source.layer < target.layer
    expected = drawn_edges(topology, drawn)
    assert {(link.source, link.target) for link in drawn.links} == set(expected)
    assert sum(link.count for link in drawn.links) == len(expected)


def test_a_small_graph_is_drawn_whole_with_its_edge_labels() -> None:
    loaded = load_text(
        """
name: g
steps:
  - {id: a, nextSteps: [b, {step: c, on: failure}, {step: d, condition: "steps.a.result.n > 1"}]}
  - {id: b}
  - {id: c}
  - {id: d}
""",
        "g.yaml",
    )
    drawn = layout(Topology.of(loaded.graph), {"a": "succeeded"})
    assert (drawn.nodes[0].key, drawn.nodes[0].kind, drawn.nodes[0].layer) == ("a", Kind.step, 0)
    assert {n.key for n in drawn.nodes if n.layer == 1} == {"b", "c", "d"}
    assert sorted(link.label for link in drawn.links) == ["", "failure", "steps.a.result.n > 1"]


def test_a_10000_step_chain_collapses_to_its_runs_of_one_status() -> None:
    steps = tuple(f"s{i}" for i in range(10_000))
    edges = tuple(Edge(a, b, "") for a, b in itertools.pairwise(steps))
    statuses = {s: "succeeded" for s in steps[:6000]} | {"s6000": "failed"}
    statuses |= {s: "skipped" for s in steps[6001:9000]}
    drawn = layout(Topology(steps, edges, frozenset()), statuses)
    assert [(n.kind, len(n.members), n.status) for n in drawn.nodes] == [
        (Kind.group, 6000, "succeeded"),
        (Kind.step, 1, "failed"),
        (Kind.group, 2999, "skipped"),
        (Kind.group, 1000, "pending"),
    ]
    assert [n.layer for n in drawn.nodes] == [0, 1, 2, 3]


def test_a_wide_fan_out_is_grouped_by_layer_and_status() -> None:
    middle = tuple(f"m{i}" for i in range(5000))
    steps = ("head", *middle, "tail")
    edges = tuple(Edge("head", m, "") for m in middle) + tuple(Edge(m, "tail", "") for m in middle)
    statuses = {m: ("succeeded", "failed", "running")[i % 3] for i, m in enumerate(middle)}
    drawn = layout(Topology(steps, edges, frozenset()), {"head": "succeeded", **statuses})
    assert [(n.layer, len(n.members)) for n in drawn.nodes] == [
        (0, 1),
        (1, 1667),
        (1, 1667),
        (1, 1666),
        (2, 1),
    ]
    assert {link.count for link in drawn.links} == {1666, 1667}
