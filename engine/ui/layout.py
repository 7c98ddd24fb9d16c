"""A run's step graph as layered nodes, collapsed on the server when it is too big to draw.

Pure functions over the graph and the steps' statuses, so that a 10,000-step run is drawn as a
few hundred nodes and the browser never gets the whole run. Collapsing goes in stages, each
only while the graph is still over `MAX_NODES`:

1. maximal chains of steps with one status (each link the only way out of one step and the
   only way into the next) become one group node;
2. nodes of one layer (topological generation) and one status become one group node; an edge
   always runs from a lower generation to a higher one, so merging within one never makes a
   cycle;
3. the nodes past the limit, in layer order, are left out, counted by one "N more steps" note.

Layers are the topological generations of what is left; within a layer, nodes are ordered by
the mean position of their predecessors (the barycentric heuristic), which keeps most edges
short without the cost of a crossing-minimising layout.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import networkx as nx

from engine.definition.graph import StepGraph, _label

MAX_NODES = 300
"""The most nodes a drawn graph has."""
PENDING = "pending"
"""The status of a step that has no attempt yet."""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    """`on` unless success, and the condition: what the edge waits for."""


@dataclass(frozen=True)
class Topology:
    """What drawing needs of a definition's graph: steps in list order, edges, mapped steps."""

    steps: tuple[str, ...]
    edges: tuple[Edge, ...]
    mapped: frozenset[str]

    @classmethod
    def of(cls, graph: StepGraph) -> Topology:
        mapped = frozenset(s.id for s in graph.definition.steps if s.map is not None)
        edges = tuple(Edge(e.source, e.target, _label(e)) for e in graph.edges)
        return cls(tuple(graph.order), edges, mapped)


class Kind(StrEnum):
    step = "step"
    group = "group"
    more = "more"


@dataclass(frozen=True)
class Node:
    key: str
    """The step id, or `group:<first member>` / `more` for a collapsed node."""
    kind: Kind
    members: tuple[str, ...]
    status: str
    """The members' one status (`mixed` for the more note)."""
    layer: int
    position: int


@dataclass(frozen=True)
class Link:
    source: str
    target: str
    label: str
    count: int
    """How many step edges the link stands for (between groups, more than one)."""


@dataclass(frozen=True)
class Layout:
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]


def layout(topology: Topology, statuses: Mapping[str, str], limit: int = MAX_NODES) -> Layout:
    """The graph collapsed to at most `limit` nodes (one of them the more note), layered."""
    status = {s: statuses.get(s, PENDING) for s in topology.steps}
    groups: list[tuple[str, ...]] = [(s,) for s in topology.steps]
    if len(groups) > limit:
        groups = _chains(topology, status)
    if len(groups) > limit:
        groups = _by_generation(topology, groups, status)
    hidden: tuple[str, ...] = ()
    if len(groups) > limit:
        layers = _layers(topology, groups)
        groups.sort(key=lambda g: layers[g[0]])
        kept, rest = groups[: limit - 1], groups[limit - 1 :]
        groups, hidden = kept, tuple(s for g in rest for s in g)
    return _place(topology, groups, status, hidden)


def _chains(topology: Topology, status: Mapping[str, str]) -> list[tuple[str, ...]]:
    """Maximal chains of one status; a mapped step stays alone (it shows its item counts)."""
    successors: dict[str, set[str]] = defaultdict(set)
    predecessors: dict[str, set[str]] = defaultdict(set)
    for edge in topology.edges:
        successors[edge.source].add(edge.target)
        predecessors[edge.target].add(edge.source)
    follower: dict[str, str] = {}
    for step in topology.steps:
        if len(successors[step]) != 1 or step in topology.mapped:
            continue
        (nxt,) = successors[step]
        if (
            len(predecessors[nxt]) == 1
            and nxt not in topology.mapped
            and status[nxt] == status[step]
        ):
            follower[step] = nxt
    followed = set(follower.values())
    chains = []
    for step in topology.steps:
        if step in followed:
            continue
        chain = [step]
        while chain[-1] in follower:
            chain.append(follower[chain[-1]])
        chains.append(tuple(chain))
    return chains


def _by_generation(
    topology: Topology, groups: list[tuple[str, ...]], status: Mapping[str, str]
) -> list[tuple[str, ...]]:
    layers = _layers(topology, groups)
    buckets: dict[tuple[int, str], list[str]] = defaultdict(list)
    for group in groups:
        buckets[(layers[group[0]], status[group[0]])].extend(group)
    return [tuple(members) for _, members in sorted(buckets.items())]


def _quotient(
    topology: Topology, groups: Iterable[tuple[str, ...]]
) -> tuple[dict[str, str], nx.DiGraph]:
    """Each step's group head (its first member), and the graph between the groups."""
    head = {s: g[0] for g in groups for s in g}
    graph = nx.DiGraph()
    graph.add_nodes_from(dict.fromkeys(head.values()))
    for edge in topology.edges:
        a, b = head.get(edge.source), head.get(edge.target)
        if a is not None and b is not None and a != b:
            graph.add_edge(a, b)
    return head, graph


def _layers(topology: Topology, groups: list[tuple[str, ...]]) -> dict[str, int]:
    """Each step's layer: its group's topological generation in the graph between groups."""
    head, graph = _quotient(topology, groups)
    generation = {
        node: depth
        for depth, nodes in enumerate(nx.topological_generations(graph))
        for node in nodes
    }
    return {s: generation[h] for s, h in head.items()}


def _place(
    topology: Topology,
    groups: list[tuple[str, ...]],
    status: Mapping[str, str],
    hidden: tuple[str, ...],
) -> Layout:
    head, graph = _quotient(topology, groups)
    by_head = {g[0]: g for g in groups}
    index = {s: i for i, s in enumerate(topology.steps)}
    layers = [sorted(nodes, key=index.__getitem__) for nodes in nx.topological_generations(graph)]
    positions = _barycentric(layers, graph)
    nodes = [
        Node(
            _key(by_head[h]),
            Kind.step if len(by_head[h]) == 1 else Kind.group,
            by_head[h],
            status[h],
            depth,
            positions[h],
        )
        for depth, layer in enumerate(layers)
        for h in layer
    ]
    if hidden:
        nodes.append(Node("more", Kind.more, hidden, "mixed", len(layers), 0))
    keys = {h: _key(g) for h, g in by_head.items()}
    links: dict[tuple[str, str], list[str]] = defaultdict(list)
    for edge in topology.edges:
        a, b = head.get(edge.source), head.get(edge.target)
        if a is not None and b is not None and a != b:
            links[(keys[a], keys[b])].append(edge.label)
    return Layout(
        tuple(nodes),
        tuple(
            Link(a, b, labels[0] if len(labels) == 1 else "", len(labels))
            for (a, b), labels in links.items()
        ),
    )


def _key(group: tuple[str, ...]) -> str:
    return group[0] if len(group) == 1 else f"group:{group[0]}"


def _barycentric(layers: list[list[str]], graph: nx.DiGraph, sweeps: int = 2) -> dict[str, int]:
    """Positions within each layer, each node moved towards the mean of its predecessors'
    (then, sweeping up, its successors') positions."""
    position = {node: i for layer in layers for i, node in enumerate(layer)}
    for _ in range(sweeps):
        for nodes in layers[1:]:
            _reorder(nodes, graph.predecessors, position)
        for nodes in layers[-2::-1]:
            _reorder(nodes, graph.successors, position)
    return position


def _reorder(
    nodes: list[str], neighbours: Callable[[str], Iterable[str]], position: dict[str, int]
) -> None:
    def weight(node: str) -> float:
        near = [position[n] for n in neighbours(node)]
        return sum(near) / len(near) if near else position[node]

    nodes.sort(key=weight)
    position.update({node: i for i, node in enumerate(nodes)})
