"""The pydantic models of the YAML DSL (docs/dsl.md is their reference).

Attribute names are snake_case; the YAML keys are their camelCase aliases. Every model forbids
unknown keys, so a typo such as `nextStep` is an error rather than a silently ignored setting.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from pydantic.alias_generators import to_camel

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
STEP_ID_PATTERN = r"^(?:[A-Za-z]|_[A-Za-z0-9]|_$)[A-Za-z0-9_]*$"
"""A letter or one underscore, then letters, digits and underscores: templates refuse names that
start with `__` (the way out of a sandbox), so no id, `as` or param may take one."""
PARAM_NAME_PATTERN = r"^(?:[^_]|_[^_]|_$)"


class DslModel(BaseModel):
    """Strict: `concurrency: "4"` or `allowFailure: yes` are errors, not silently converted."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        use_attribute_docstrings=True,
    )


class On(StrEnum):
    """Which end of the upstream step makes an edge fire."""

    success = "success"
    failure = "failure"
    always = "always"


class Join(StrEnum):
    """How many incoming edges must fire for a step to run."""

    all = "all"
    any = "any"


MAX_DELAY_SECONDS = 86_400.0
"""The longest wait between two attempts (a day): longer is a schedule, not a retry."""
MAX_TIMEOUT_SECONDS = 30 * 86_400.0
"""The longest `timeoutSeconds` (30 days): beyond it a typo, not a limit."""


class Retry(DslModel):
    """How often and how patiently a failed step is tried again."""

    max_attempts: int = Field(1, ge=1, le=1000)
    """Every attempt counts, the first included: 1 means no retry."""
    delay_seconds: float = Field(0, ge=0, le=MAX_DELAY_SECONDS)
    """Wait before the second attempt."""
    backoff: float = Field(1.0, ge=1.0, le=100.0)
    """Factor by which the wait grows after each further attempt."""
    max_delay_seconds: float | None = Field(None, ge=0, le=MAX_DELAY_SECONDS)
    """Upper bound of the wait (at most a day in any case)."""

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number `failed_attempt` (1-based) failed."""
        try:
            wait = self.delay_seconds * self.backoff ** (failed_attempt - 1)
        except OverflowError:  # a large backoff over many attempts
            wait = MAX_DELAY_SECONDS
        bound = MAX_DELAY_SECONDS if self.max_delay_seconds is None else self.max_delay_seconds
        return min(wait, bound)


NO_RETRY = Retry()


class Edge(DslModel):
    """An edge to a downstream step."""

    step: str
    """The id of the downstream step."""
    on: On = Field(On.success, strict=False)
    """Fire on this end of the upstream step: success, failure, or always (skipped included)."""
    condition: str | None = None
    """A Jinja2 expression; the edge fires only when it is true."""


def _edge_form(value: Any) -> str:
    return "name" if isinstance(value, str) else "edge"


EdgeSpec = Annotated[
    Annotated[str, Tag("name")] | Annotated[Edge, Tag("edge")], Discriminator(_edge_form)
]


class ParamType(StrEnum):
    string = "string"
    number = "number"
    integer = "integer"
    boolean = "boolean"
    array = "array"
    object = "object"


_SECRET_PARAM_RULE: dict[str, Any] = {
    "if": {"properties": {"secret": {"const": True}}, "required": ["secret"]},
    "then": {
        "properties": {
            "type": {"const": "string"},
            "default": {"type": "null"},
            "enum": {"type": "null"},
        }
    },
}
"""What editors are told of a secret param: a string, without a default or an enum."""


class Param(DslModel):
    """A typed input of a run. A param without `default` is required."""

    model_config = ConfigDict(json_schema_extra=_SECRET_PARAM_RULE)

    type: ParamType = Field(ParamType.string, strict=False)
    description: str | None = None
    default: Any = None
    """The value when a run does not give one; strings may be `{{ }}` templates over `run`."""
    enum: list[Any] | None = None
    """The only values allowed."""
    secret: bool = False
    """True: the value is masked as `***` wherever it would be shown or stored, and reaches only
    the step's inputs and runner (a `type: string` param without a default)."""

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set


class StepSettings(DslModel):
    """Settings a step may set itself or inherit from `defaults`."""

    retry: Retry | None = None
    timeout_seconds: float | None = Field(None, gt=0, le=MAX_TIMEOUT_SECONDS)
    """Bound of one attempt; a timed-out attempt fails with a timeout error."""
    queue: str | None = None
    """With the Celery dispatcher: only workers listening on this queue take the step (unset: the
    queue `default`). The direct dispatcher ignores it."""


MAX_MAP_CONCURRENCY = 1024


class Map(DslModel):
    """Fan the step out over a list: one runner call per item, each with its own attempts."""

    items: Any = Field(json_schema_extra={"anyOf": [{"type": "array"}, {"type": "string"}]})
    """A YAML list, or one template that yields a list when the step is about to run."""
    as_name: str = Field("item", alias="as", pattern=STEP_ID_PATTERN, max_length=200)
    """The item's name in the step's templates."""
    key: str | None = None
    """A template giving each item a stable, unique key (a string or an integer); default: the
    item's index. Resume keeps the results of the keys that succeeded."""
    concurrency: int | None = Field(None, ge=1, le=MAX_MAP_CONCURRENCY)
    """Items in flight at once; default: the definition's `concurrency`."""
    fail_fast: bool = False
    """True: no new item starts once one has failed for good."""


class Step(StepSettings):
    id: str = Field(pattern=STEP_ID_PATTERN, max_length=200)
    """Unique within the definition."""
    runner: str | None = Field(None, min_length=1)
    """The `@job_handler` key; defaults to the id."""
    description: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    """Passed to the runner; strings are rendered as `{{ }}` templates."""
    condition: str | None = None
    """A Jinja2 expression; false means the step is skipped."""
    next_steps: list[EdgeSpec] | None = None
    """Downstream steps. Once any step declares nextSteps, the graph is exactly these edges."""
    join: Join = Field(Join.all, strict=False)
    """all: every incoming edge must fire; any: at least one."""
    allow_failure: bool = False
    """True: this step failing does not fail the instance."""
    map: Map | None = None
    """Run the step once per item of a list; its result is the list of the items' results."""

    @property
    def runner_key(self) -> str:
        return self.runner or self.id

    @property
    def edges(self) -> list[Edge]:
        return [Edge(step=e) if isinstance(e, str) else e for e in self.next_steps or ()]


class Definition(DslModel):
    """A batch definition: what runs, in which order, on which schedule."""

    name: str = Field(pattern=NAME_PATTERN, max_length=200)
    description: str | None = None
    cron: str | None = None
    """A croniter expression; the scheduler fires each tick once."""
    timezone: str = "UTC"
    """IANA time zone of `cron`."""
    catchup: Literal["none", "latest", "all"] = "latest"
    """Ticks missed while no scheduler ran: none, the latest only, or all."""
    overlap: Literal["skip", "queue", "allow"] = "skip"
    """A tick while the previous scheduled run still runs: skip it, queue it, or allow both."""
    concurrency: int = Field(1, ge=1, le=1024)
    """Steps of one instance in flight at once."""
    params: dict[Annotated[str, Field(pattern=PARAM_NAME_PATTERN)], Param] = Field(
        default_factory=dict
    )
    defaults: StepSettings = Field(default_factory=StepSettings)
    steps: list[Step] = Field(min_length=1)

    @property
    def is_dag(self) -> bool:
        return any(step.next_steps is not None for step in self.steps)

    def settings(self, step: Step) -> tuple[Retry, float | None, str | None]:
        """A step's retry policy, timeout and queue after inheriting `defaults`."""
        retry = step.retry or self.defaults.retry or NO_RETRY
        timeout = step.timeout_seconds or self.defaults.timeout_seconds
        return retry, timeout, step.queue or self.defaults.queue
