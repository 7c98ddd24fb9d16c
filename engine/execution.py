"""What the executor is given and what it reports: a resumed instance's history, the request to
stop, the progress events, and how the instance ended. Kept apart from the executor so that the
service, the CLI and the background runner depend on these small types, not on the loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.dispatch.base import LogLine
from engine.status import InstanceStatus, StepStatus


@dataclass(frozen=True)
class StepEvent:
    """A step attempt started or ended; what progress displays are fed."""

    step: str
    attempt: int
    status: StepStatus
    at: datetime
    error: str | None = None
    retry_in: float | None = None
    """Seconds until the next attempt, when a failed attempt will be retried."""
    item: str | None = None
    """The key of the item, for an attempt of one item of a mapped step."""
    items: int | None = None
    """How many items a mapped step has, when it starts."""
    waited: float | None = None
    """When a step's attempt starts: the seconds it was ready but waited for a free slot."""


@dataclass(frozen=True)
class LogEvent:
    """Lines an attempt said, in order, on their way to the step's log; what live log displays
    are fed. As many as were heard together: a display writes them at once."""

    step: str
    item: str | None
    attempt: int
    lines: tuple[LogLine, ...]


Listener = Callable[[StepEvent | LogEvent], None]
"""Told of every attempt's start and end, and of every log line, in the executor's thread."""


@dataclass(frozen=True)
class PriorAttempt:
    """The last attempt of a step in an instance being resumed."""

    attempt: int
    status: StepStatus
    result: Any = None


class Cancellation:
    """A request to stop an instance, from another thread or a signal handler.

    `cancel` stops it in order: no new step starts, running attempts end `cancelled`, and so does
    the instance. `lose` says the lease was lost to another process: the executor stops its
    attempts and writes nothing more. Both only set a reason and wake the executor
    (`SimpleQueue.put` is reentrant), so they are safe in a signal handler.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.lease_lost: str | None = None
        self._wakers: list[Callable[[], None]] = []

    def subscribe(self, wake: Callable[[], None]) -> None:
        self._wakers.append(wake)

    def cancel(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self._wake()

    def lose(self, reason: str) -> None:
        if self.lease_lost is None:
            self.lease_lost = reason
        self._wake()

    def _wake(self) -> None:
        for wake in self._wakers:
            wake()


@dataclass(frozen=True)
class Outcome:
    """How an instance ended."""

    status: InstanceStatus
    error: str | None = None
