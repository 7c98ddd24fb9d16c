"""The `Dispatcher` interface: how the executor hands a step attempt to whatever runs it.

Tasks and outcomes are immutable plain data so that a remote dispatcher can send them over a wire.
"""

from __future__ import annotations

import abc
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from engine.jsondata import NotJsonData, json_copy, storable_text


@dataclass(frozen=True)
class StepTask:
    """One attempt of one step, with everything its runner receives."""

    instance_id: int
    step_id: str
    attempt: int
    runner: str
    inputs: dict[str, Any]
    params: dict[str, Any]
    results: dict[str, Any]
    run: dict[str, Any]
    timeout: float | None = None
    queue: str | None = None


@dataclass(frozen=True)
class StepOutcome:
    """How an attempt ended: a JSON-ready result, or an error message with its traceback."""

    task: StepTask
    ok: bool
    result: Any = None
    error: str | None = None

    @classmethod
    def success(cls, task: StepTask, value: Any) -> StepOutcome:
        """Wrap a runner's return value as it will be stored: plain JSON data (models dumped).

        Later steps then see exactly what the database holds, whatever the dispatcher.
        """
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        try:
            return cls(task, ok=True, result=json_copy(value))
        except NotJsonData as exc:
            return cls(task, ok=False, error=f"the result is {exc}")

    @classmethod
    def failure(cls, task: StepTask, exc: BaseException) -> StepOutcome:
        text = "".join(traceback.format_exception(exc))
        return cls(task, ok=False, error=storable_text(f"{type(exc).__name__}: {exc}\n\n{text}"))


Done = Callable[[StepOutcome], None]


class Dispatcher(abc.ABC):
    """Runs step attempts somewhere and reports each outcome exactly once through `done`."""

    @abc.abstractmethod
    def submit(self, task: StepTask, done: Done) -> None:
        """Start `task`; `done` may be called from any thread."""

    @abc.abstractmethod
    def cancel(self, task: StepTask) -> None:
        """Ask a running attempt to stop (it timed out or its instance was cancelled).

        Best effort: the executor has already recorded the attempt's end and ignores any outcome
        that still arrives for it.
        """

    def close(self) -> None:  # noqa: B027  (optional hook: most dispatchers hold nothing)
        """Release threads and connections; submitted attempts may be abandoned."""
