"""What the store hands out: the instance JSON of the CLI and the HTTP API."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer

from engine.jsondata import json_pieces

Timestamp = Annotated[datetime, PlainSerializer(datetime.isoformat, when_used="json")]
"""ISO 8601 with an explicit `+00:00` offset."""


def is_orphaned(status: str | None, lease_expires_at: datetime | None, now: datetime) -> bool:
    """A pending or running instance whose lease expired: no live process holds it."""
    active = status in ("pending", "running")
    return active and lease_expires_at is not None and lease_expires_at < now


def is_abandoned(status: str, lease_expires_at: datetime | None, now: datetime) -> bool:
    """A running instance whose process stopped renewing its lease: no process runs it."""
    return status == "running" and is_orphaned(status, lease_expires_at, now)


class StoredInstance(BaseModel):
    """What running an existing instance again needs: the definition version it started with,
    its params, and how and when it was triggered."""

    model_config = ConfigDict(frozen=True)

    definition_name: str
    version: str
    source: str
    trigger: str
    params: dict[str, Any]
    scheduled_for: datetime | None
    started_at: datetime | None
    created_at: datetime
    sealed_params: str | None = None
    """Its secret params, sealed with ENGINE_PARAMS_KEY (None when none, or none was kept)."""


class StepAttemptView(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: str
    item: str | None = None
    """For an attempt of one item of a mapped step, the item's key."""
    attempt: int
    status: str
    result: Any = None
    error: str | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None

    @classmethod
    def from_row(cls, row: Any) -> StepAttemptView:
        """The view of a `batch_step_result` row."""
        return cls(
            step=row.step_key,
            item=row.item_key,
            attempt=row.attempt,
            status=row.status,
            result=row.result_payload,
            error=row.error,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


class InstanceView(BaseModel):
    """One instance; `steps` lists every attempt in the order they started (None in lists)."""

    model_config = ConfigDict(frozen=True)

    id: int
    definition: str
    version: str
    status: str
    trigger: str
    params: dict[str, Any]
    scheduled_for: Timestamp | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    error: str | None = None
    abandoned: bool = False
    """Status `running`, but the process running it stopped renewing its lease (it died)."""
    steps: list[StepAttemptView] | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"steps"} if self.steps is None else None)


StepJson = dict[str, Any]


def instance_json_pieces(
    head: InstanceView,
    attempts: Iterable[StepAttemptView],
    *,
    indent: int | None,
    edit: Callable[[StepJson], StepJson] | None = None,
) -> Iterator[str]:
    """The text of `head.to_json()` with `attempts` as its steps, a piece at a time (see
    `json_pieces`); `edit` changes each step's JSON on the way (the API's drops tracebacks)."""
    steps: Iterable[StepJson] = (a.model_dump(mode="json") for a in attempts)
    if edit is not None:
        steps = map(edit, steps)
    return json_pieces(head.to_json(), "steps", steps, indent=indent)
