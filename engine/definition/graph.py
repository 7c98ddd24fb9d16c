"""The step graph of a definition, with networkx for the graph algorithms.

Linear definitions (no step declares `nextSteps`) chain their steps in list order; otherwise the
graph is exactly the declared edges. The executor reads the precomputed adjacency lists, never the
networkx object, so a step costs no graph query. networkx is imported only when an algorithm needs
it (naming a cycle, ordering a plan): its import costs more than validating most definitions, and
a definition without a cycle is told apart by one linear pass.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.definition.models import Definition, Edge, On, Step


@dataclass(frozen=True)
class GraphEdge:
    source: str
    target: str
    on: On
    condition: str | None
    path: tuple[str | int, ...]
    """Where the edge stands in the YAML, for error messages."""


class StepGraph:
    """Steps as nodes (in list order) and edges with their `on` and `condition`."""

    def __init__(self, definition: Definition) -> None:
        self.definition = definition
        self.order = [step.id for step in definition.steps]
        self.edges = list(_edges(definition))
        self.incoming: dict[str, list[GraphEdge]] = {s: [] for s in self.order}
        self.outgoing: dict[str, list[GraphEdge]] = {s: [] for s in self.order}
        for edge in self.edges:
            if edge.target in self.incoming and edge.source in self.outgoing:
                self.incoming[edge.target].append(edge)
                self.outgoing[edge.source].append(edge)

    def outline(self) -> dict[str, Any]:
        """The graph as data, for dry runs and `GET /definitions/{name}`: the order steps
        become ready in, each step, each edge."""
        steps = {s.id: s for s in self.definition.steps}
        order = self.topological_order()
        return {
            "order": order,
            "steps": [
                {
                    "step": step_id,
                    "runner": steps[step_id].runner_key,
                    "condition": steps[step_id].condition,
                    "join": steps[step_id].join.value,
                    "upstream": [e.source for e in self.incoming[step_id]],
                    "map": _map_outline(steps[step_id]),
                }
                for step_id in order
            ],
            "edges": [
                {"from": e.source, "to": e.target, "on": e.on.value, "condition": e.condition}
                for e in self.edges
            ],
        }

    @functools.cached_property
    def nx(self) -> Any:
        """The graph as a networkx MultiDiGraph (edges keep their GraphEdge as `edge`)."""
        import networkx as nx

        graph = nx.MultiDiGraph()
        graph.add_nodes_from(self.order)
        for edge in self.edges:
            if edge.target in self.incoming:
                graph.add_edge(edge.source, edge.target, edge=edge)
        return graph

    def is_acyclic(self) -> bool:
        """Kahn's pass over the adjacency lists: every step can be ordered."""
        waiting = {step: len(edges) for step, edges in self.incoming.items()}
        ready = [step for step, count in waiting.items() if count == 0]
        ordered = 0
        while ready:
            ordered += 1
            for edge in self.outgoing[ready.pop()]:
                waiting[edge.target] -= 1
                if waiting[edge.target] == 0:
                    ready.append(edge.target)
        return ordered == len(waiting)

    def cycles(self) -> list[list[str]]:
        """One cycle per strongly connected knot of steps (self-loops included)."""
        if self.is_acyclic():
            return []
        import networkx as nx

        found = []
        for component in nx.strongly_connected_components(self.nx):
            first = next(iter(component))
            if len(component) > 1 or self.nx.has_edge(first, first):
                sub = self.nx.subgraph(component)
                cycle = nx.find_cycle(sub, source=min(component, key=self.order.index))
                found.append([edge[0] for edge in cycle])
        return sorted(found, key=lambda c: self.order.index(c[0]))

    def upstream_among(self, step: str, candidates: Iterable[str]) -> set[str]:
        """Those of `candidates` from which a path leads to `step`.

        A breadth-first walk up the edges that stops once every candidate is found: expressions
        mostly name close upstream steps, so checking all of a long chain stays linear.
        """
        wanted = set(candidates) - {step}
        found: set[str] = set()
        seen = {step}
        frontier = [step]
        while frontier and found != wanted:
            above = []
            for target in frontier:
                for edge in self.incoming.get(target, ()):
                    if edge.source not in seen:
                        seen.add(edge.source)
                        above.append(edge.source)
                        if edge.source in wanted:
                            found.add(edge.source)
            frontier = above
        return found

    def topological_order(self) -> list[str]:
        """Steps in an order that respects every edge, ties broken by list order."""
        import networkx as nx

        index = {s: i for i, s in enumerate(self.order)}
        return list(nx.lexicographical_topological_sort(self.nx, key=index.__getitem__))

    def _mapped(self) -> set[str]:
        return {step.id for step in self.definition.steps if step.map is not None}

    def to_mermaid(self) -> str:
        """Mermaid flowchart text; labels quoted, and ids Mermaid reserves (`end`) renamed. A
        mapped step is drawn as a subroutine (a box in a box), its label saying `(map)`."""
        node = {
            step: f"step_{step}" if step.lower() in _MERMAID_RESERVED else step
            for step in self.order
        }
        mapped = self._mapped()
        lines = ["flowchart TD"]
        lines += [
            f'    {node[step]}[["{_mermaid_text(step)} (map)"]]'
            if step in mapped
            else f'    {node[step]}["{_mermaid_text(step)}"]'
            for step in self.order
        ]
        for edge in self.edges:
            label = _label(edge)
            arrow = f' -->|"{_mermaid_text(label)}"| ' if label else " --> "
            lines.append(f"    {node[edge.source]}{arrow}{node[edge.target]}")
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        lines = [f"digraph {_dot_text(self.definition.name)} {{", "    rankdir=TB;"]
        mapped = self._mapped()
        lines += [
            f"    {_dot_text(step)} [shape=box3d, label={_dot_text(step + ' (map)')}];"
            if step in mapped
            else f"    {_dot_text(step)};"
            for step in self.order
        ]
        for edge in self.edges:
            label = _label(edge)
            attrs = f" [label={_dot_text(label)}]" if label else ""
            lines.append(f"    {_dot_text(edge.source)} -> {_dot_text(edge.target)}{attrs};")
        return "\n".join(lines) + "\n}\n"


def _map_outline(step: Step) -> dict[str, Any] | None:
    """A mapped step's `map` as written (YAML keys), for plans; None for other steps."""
    return None if step.map is None else step.map.model_dump(mode="json", by_alias=True)


_MERMAID_RESERVED = {
    "end",
    "graph",
    "subgraph",
    "flowchart",
    "style",
    "class",
    "classdef",
    "click",
    "linkstyle",
    "default",
    "direction",
}


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: quotes as entities, one line."""
    return " ".join(text.split()).replace('"', "#quot;")


def _dot_text(text: str) -> str:
    """A quoted Graphviz string."""
    return '"' + " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(edge: GraphEdge) -> str:
    parts = [] if edge.on is On.success else [edge.on.value]
    if edge.condition:
        parts.append(edge.condition)
    return ": ".join(parts)


def _edges(definition: Definition) -> Iterator[GraphEdge]:
    steps = definition.steps
    if not definition.is_dag:
        for i, (a, b) in enumerate(itertools.pairwise(steps)):
            yield GraphEdge(a.id, b.id, On.success, None, ("steps", i + 1))
        return
    for i, step in enumerate(steps):
        for j, edge in enumerate(step.edges):
            yield _graph_edge(step.id, edge, ("steps", i, "nextSteps", j))


def _graph_edge(source: str, edge: Edge, path: tuple[str | int, ...]) -> GraphEdge:
    return GraphEdge(source, edge.step, edge.on, edge.condition, path)
