"""What the executor knows and keeps of each step: its settings, edges and condition resolved
once from the definition, its counters, when its edges let it run, and what the steps' ends
make of the instance's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.definition import LoadedDefinition, MapPlan
from engine.definition.models import Join, On, Retry
from engine.execution import Outcome
from engine.expressions import Compiled, TemplateTree
from engine.status import InstanceStatus, StepStatus

FIRES = {
    On.success: {"succeeded"},
    On.failure: {"failed"},
    On.always: {"succeeded", "failed", "skipped", "cancelled"},
}
"""Which ends of the upstream step make an edge fire, by the edge's `on`."""


@dataclass
class Incoming:
    source: str
    on: On
    condition: Compiled | None


@dataclass
class StepState:
    """One step as the executor needs it, precomputed so a round does no lookups, with the
    counters the executor keeps for it."""

    index: int
    id: str
    runner: str
    retry: Retry
    timeout: float | None
    queue: str | None
    allow_failure: bool
    join: Join
    condition: Compiled | None
    inputs: TemplateTree | dict[str, Any]
    incoming: list[Incoming]
    downstream: list[str]
    map: MapPlan | None = None
    waiting: int = 0
    ready_at: float = 0.0
    """When it last became runnable (monotonic): how long it then waited for a slot is a metric."""
    attempt: int = 0
    status: StepStatus | None = None

    def render_inputs(self, scope: Mapping[str, Any]) -> Any:
        return self.inputs.render(scope) if isinstance(self.inputs, TemplateTree) else self.inputs

    def should_run(self, scope: Mapping[str, Any]) -> bool:
        """Once every upstream step has ended: do its edges and its condition let it run?"""
        if self.incoming:
            steps = scope["steps"]
            fired = sum(
                1
                for edge in self.incoming
                if steps[edge.source]["status"] in FIRES[edge.on]
                and (edge.condition is None or edge.condition(scope))
            )
            met = fired == len(self.incoming) if self.join is Join.all else fired > 0
            if not met:
                return False
        return self.condition is None or bool(self.condition(scope))


def step_states(loaded: LoadedDefinition) -> dict[str, StepState]:
    """The state of each step of a definition before its instance starts."""
    definition, graph = loaded.definition, loaded.graph
    states = {}
    for index, step in enumerate(definition.steps):
        retry, timeout, queue_name = definition.settings(step)
        incoming = [
            Incoming(edge.source, edge.on, loaded.edge_conditions.get((step.id, j)))
            for j, edge in enumerate(graph.incoming[step.id])
        ]
        states[step.id] = StepState(
            index=index,
            id=step.id,
            runner=step.runner_key,
            retry=retry,
            timeout=timeout,
            queue=queue_name,
            allow_failure=step.allow_failure,
            join=step.join,
            condition=loaded.conditions.get(step.id),
            inputs=loaded.inputs.get(step.id, step.inputs),
            incoming=incoming,
            downstream=[edge.target for edge in graph.outgoing[step.id]],
            map=loaded.maps.get(step.id),
            waiting=len(incoming),
        )
    return states


def instance_outcome(states: Iterable[StepState]) -> Outcome:
    """How an instance whose steps all ended ended: failed when a step failed that may not."""
    failed = [s.id for s in states if s.status is StepStatus.failed and not s.allow_failure]
    if failed:
        return Outcome(InstanceStatus.failed, "failed steps: " + ", ".join(failed))
    return Outcome(InstanceStatus.succeeded)
