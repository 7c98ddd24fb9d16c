"""A run as its page and its feeds draw it: each step's last row, mapped steps' item counts,
the collapsed graph, a page of the step table and of the timeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode

from engine.status import ENDED
from engine.store import InstanceView
from engine.store.browse import BEGINNING, StepRow, latest
from engine.store.types import utcnow
from engine.ui.layout import Kind, Layout, Node, Topology, layout
from engine.ui.state import UIState
from engine.ui.svg import graph_svg, timeline_svg

PAGE = 100
"""Rows of the step table and of the timeline per page."""


@dataclass(frozen=True)
class StepLine:
    """One row of the step table: a step, its last own row (None while pending)."""

    step: str
    row: StepRow | None
    items: dict[str, int] | None
    """A mapped step's item counts by status."""


@dataclass(frozen=True)
class RunPicture:
    view: InstanceView
    topology: Topology | None
    rows: dict[str, StepRow]
    items: dict[str, dict[str, int]]
    drawn: Layout | None

    @property
    def ended(self) -> bool:
        return self.view.status in ENDED

    @property
    def cursor(self) -> datetime:
        """Where the run's feed starts: the latest timestamp of its rows, or of the instance."""
        view = self.view
        times = [r.changed_at for r in self.rows.values()]
        return latest([*times, view.started_at, view.finished_at]) or BEGINNING

    def steps(self) -> list[str]:
        return list(self.topology.steps) if self.topology else sorted(self.rows)

    def graph(self) -> str:
        if self.drawn is None or self.topology is None:
            return ""
        return graph_svg(self.drawn, self.href, self.items, self.topology.mapped)

    def href(self, node: Node) -> str:
        base = f"/ui/runs/{self.view.id}"
        if node.kind is Kind.step:
            return f"{base}/steps/{quote(node.members[0], safe='')}"
        return f"{base}?{urlencode({'group': node.key})}#steps"

    def table(self, group: str | None, page: int) -> tuple[list[StepLine], int]:
        """One page of the step table, filtered to a collapsed node's members with `group`
        (a node key: `group:<first member>` or `more`), and how many rows it has in all."""
        steps = self.steps()
        if group and self.drawn is not None:
            node = next((n for n in self.drawn.nodes if n.key == group), None)
            members = set(node.members) if node else set()
            steps = [s for s in steps if s in members]
        shown = steps[page * PAGE : (page + 1) * PAGE]
        lines = [StepLine(s, self.rows.get(s), self.items.get(s)) for s in shown]
        return lines, len(steps)


def timeline(ui: UIState, view: InstanceView, page: int) -> tuple[str, int]:
    """One page of the run's timeline as SVG, and how many attempts there are in all."""
    rows, total = ui.browse.attempts(view.id, page * PAGE, PAGE)
    end = view.finished_at if view.status in ENDED and view.finished_at else utcnow()
    return timeline_svg(rows, view.started_at, end), total


def picture(ui: UIState, instance_id: int) -> RunPicture:
    """The run now; InstanceNotFound for an unknown id."""
    store = ui.served.service.store
    view = ui.browse.instance(instance_id)
    topology = ui.topology(view.definition, view.version, instance_id)
    rows = {row.step: row for row in ui.browse.step_rows(instance_id)}
    items = store.item_counts(instance_id) if topology is None or topology.mapped else {}
    statuses = {step: row.status for step, row in rows.items()}
    drawn = layout(topology, statuses) if topology is not None else None
    return RunPicture(view, topology, rows, items, drawn)
