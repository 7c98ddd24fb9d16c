"""The HTTP API's request and response bodies, as they appear in `/openapi.json`.

Instances are `engine.store.InstanceView`, the JSON of `engine runs show --json`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.status import InstanceStatus


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    definition: str = Field(description="The name of a served definition.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The run's params, checked against its typed params."
    )


class RunAccepted(BaseModel):
    instance_id: int
    status: InstanceStatus
    """`pending` for a new instance; a replayed Idempotency-Key says the instance's status now."""


class Message(BaseModel):
    """An error, or what a cancel or resume did, in words."""

    detail: str


class Accepted(BaseModel):
    instance_id: int
    detail: str


class PlanStep(BaseModel):
    step: str
    runner: str
    condition: str | None
    join: str
    upstream: list[str]
    map: dict[str, Any] | None = Field(
        None,
        description="A mapped step's `map` as written (items, as, key, concurrency, failFast).",
    )


class PlanEdge(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    source: str = Field(alias="from")
    to: str
    on: str
    condition: str | None


class Plan(BaseModel):
    """What `engine run --dry-run --json` prints: params resolved, steps in order, edges."""

    definition: str
    version: str
    params: dict[str, Any]
    order: list[str]
    steps: list[PlanStep]
    edges: list[PlanEdge]


class ParamInfo(BaseModel):
    type: str
    description: str | None
    default: Any
    required: bool
    enum: list[Any] | None
    secret: bool = False
    """Given when a run starts and shown as `***` everywhere after (a form's password field)."""


class _DefinitionHead(BaseModel):
    name: str
    description: str | None
    version: str
    file: str
    cron: str | None
    timezone: str
    params: dict[str, ParamInfo]


class DefinitionSummary(_DefinitionHead):
    steps: list[str]


class DefinitionDetail(_DefinitionHead):
    """A definition with its step graph (as in a plan) and its YAML source."""

    catchup: str
    overlap: str
    concurrency: int
    order: list[str]
    steps: list[PlanStep]
    edges: list[PlanEdge]
    source: str


class SchedulerState(BaseModel):
    alive: bool = Field(description="The scheduler's thread runs.")
    last_round: datetime | None = Field(
        description="When the scheduler last tried every definition; null before its first round."
    )
    failing: list[str] = Field(description="The definitions whose last round failed, by name.")


class Health(BaseModel):
    status: Literal["ok", "unhealthy"] = Field(
        description="`unhealthy` (with status code 503) when the scheduler's thread died or "
        "completed no round for a minute."
    )
    running: int
    waiting: int
    scheduler: SchedulerState | None = Field(
        description="The cron scheduler of this process; null when it runs none."
    )
