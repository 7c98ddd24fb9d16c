"""The `Dispatcher` interface: how the executor hands a step attempt to whatever runs it.

Tasks and outcomes are immutable plain data so that a remote dispatcher can send them over a wire.
"""

from __future__ import annotations

import abc
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from engine.config import MAX_RESULT_BYTES_ENV, number
from engine.jsondata import MAX_TEXT_CHARS, NotJsonData, json_copy, storable_text

if TYPE_CHECKING:
    from engine.secret_params import SecretParams

_LINE = MAX_TEXT_CHARS // 8
"""The most of one traceback line kept (the last one repeats the message)."""


TaskKey = tuple[int, str, int | None, int]
"""Instance, step, item index (None outside `map`), attempt."""


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
    item: Any = None
    """For one item of a mapped step: the item, its key and its index (else None)."""
    item_key: str | None = None
    item_index: int | None = None
    secret_params: SecretParams | None = None
    """The values of the run's secret params, which `params` and `inputs` hold placeholders of
    (a Celery task carries them sealed)."""

    @property
    def key(self) -> TaskKey:
        """What tells this attempt from every other in flight: instance, step, item, attempt."""
        return self.instance_id, self.step_id, self.item_index, self.attempt


@dataclass(frozen=True)
class LogLine:
    """One line a runner said: a `ctx.logger` record (stream `log`, with its level), or a line
    it wrote to stdout (level info) or stderr (level warning)."""

    at: datetime
    level: str
    stream: str
    message: str

    def to_wire(self) -> list[str]:
        """As JSON carries it (a Celery result)."""
        return [self.at.isoformat(), self.level, self.stream, self.message]

    @classmethod
    def from_wire(cls, fields: list[str]) -> LogLine:
        at, level, stream, message = fields
        return cls(datetime.fromisoformat(at), level, stream, message)


LogSink = Callable[[StepTask, Sequence[LogLine]], None]
"""Where a dispatcher hands an attempt's lines as they come, before the attempt's outcome."""


@dataclass(frozen=True)
class StepOutcome:
    """How an attempt ended: a JSON-ready result, or an error message with its traceback."""

    task: StepTask
    ok: bool
    result: Any = None
    error: str | None = None
    logs: tuple[LogLine, ...] = ()
    """Lines not yet handed to the sink: those a remote worker sends with the outcome."""

    @classmethod
    def success(cls, task: StepTask, value: Any) -> StepOutcome:
        """Wrap a runner's return value as it will be stored: plain JSON data (models dumped).

        Later steps then see exactly what the database holds, whatever the dispatcher.
        """
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        try:
            return cls(task, ok=True, result=json_copy(value, int(number(MAX_RESULT_BYTES_ENV))))
        except NotJsonData as exc:
            return cls(task, ok=False, error=f"the result {exc}")

    @classmethod
    def failure(cls, task: StepTask, exc: BaseException) -> StepOutcome:
        """The error as `Type: message`, then the traceback; each line of it bounded, so that
        a huge message is neither stored twice nor formatted whole."""
        lines = traceback.TracebackException.from_exception(exc).format()
        text = "".join(line if len(line) <= _LINE else line[:_LINE] + " …\n" for line in lines)
        head = f"{type(exc).__name__}: {exc}"
        return cls(task, ok=False, error=storable_text(f"{head}\n\n{text}"))


Done = Callable[[StepOutcome], None]


class Dispatcher(abc.ABC):
    """Runs step attempts somewhere and reports each outcome exactly once through `done`."""

    @abc.abstractmethod
    def submit(self, task: StepTask, done: Done, sink: LogSink | None = None) -> None:
        """Start `task`; `done` may be called from any thread, once. The attempt's log lines
        go to `sink` (from any thread) as they come, where the dispatcher can, and all before
        `done`; the rest, or all of them without a sink, come in the outcome's `logs`."""

    @abc.abstractmethod
    def cancel(self, task: StepTask) -> None:
        """Ask a running attempt to stop (it timed out or its instance was cancelled).

        Best effort: the executor has already recorded the attempt's end and ignores any outcome
        that still arrives for it.
        """

    def close(self) -> None:  # noqa: B027  (optional hook: most dispatchers hold nothing)
        """Release threads and connections; submitted attempts may be abandoned."""
