"""What the executor decided in one round, to be written and told: each attempt it opened or
closed, as a row for the database and as an event for the listener (a progress display).

Rows wait here until the round's one transaction commits them; the events go out at once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from engine.dispatch.base import LogLine, StepTask
from engine.execution import Listener, LogEvent, StepEvent
from engine.status import StepStatus
from engine.store import AttemptEnd, AttemptLine, AttemptStart
from engine.store.attempts import AttemptWriter
from engine.store.types import utcnow

log = logging.getLogger(__name__)

BATCH_SECONDS = 0.2
"""How long heard log lines may wait for others, so that lines are written in batches."""


class Journal:
    """The rows of the round in progress, and the listener told of every attempt."""

    def __init__(
        self, instance_id: int, listener: Listener | None, wake: Callable[[], None]
    ) -> None:
        self.instance_id = instance_id
        self.listener = listener
        self._wake = wake
        self._heard: deque[tuple[StepTask, Sequence[LogLine]]] = deque()
        self.heard_due: float | None = None
        """When the executor should take the lines heard (`time.monotonic`, BATCH_SECONDS after
        the first of them); None while none are waiting."""
        self._starts: list[AttemptStart] = []
        self._ends: list[AttemptEnd] = []
        self._lines: list[AttemptLine] = []
        self._unwritten: tuple[list[AttemptEnd], list[AttemptStart], list[AttemptLine]] = (
            [],
            [],
            [],
        )

    def open(
        self,
        step: str,
        attempt: int,
        status: StepStatus = StepStatus.running,
        error: str | None = None,
        *,
        item: str | None = None,
        items: int | None = None,
        waited: float | None = None,
    ) -> None:
        """An attempt starts; with another status than running it also ends at once (a step
        skipped, or failed before its runner was called)."""
        now = utcnow()
        finished = None if status is StepStatus.running else now
        self._starts.append(AttemptStart(step, attempt, status, now, finished, None, error, item))
        self._emit(
            StepEvent(step, attempt, status, now, error, item=item, items=items, waited=waited)
        )

    def close(
        self,
        step: str,
        attempt: int,
        status: StepStatus,
        result: Any = None,
        error: str | None = None,
        *,
        item: str | None = None,
        retry_in: float | None = None,
    ) -> None:
        """A started attempt ended."""
        now = utcnow()
        self._ends.append(AttemptEnd(step, attempt, status, now, result, error, item))
        self._emit(StepEvent(step, attempt, status, now, error, retry_in, item))

    def hear(self, task: StepTask, lines: Sequence[LogLine]) -> None:
        """A dispatcher's `LogSink`, called from any thread: the first lines since the executor
        last took them set when it takes them, and wake it."""
        self._heard.append((task, lines))
        if self.heard_due is None:
            self.heard_due = time.monotonic() + BATCH_SECONDS
            self._wake()

    def take_heard(self) -> None:
        """Move the lines heard into this round, in the order they came."""
        if self.heard_due is None:
            return
        self.heard_due = None  # before taking: a line heard meanwhile sets it again
        task: StepTask | None = None
        lines: list[LogLine] = []
        while self._heard:
            heard, more = self._heard.popleft()
            if heard is not task and task is not None:
                self.said(task, lines)
                lines = []
            task = heard
            lines.extend(more)
        if task is not None:
            self.said(task, lines)

    def said(self, task: StepTask, lines: Sequence[LogLine]) -> None:
        """Log lines of an attempt (it may have ended: a late line is still its own)."""
        step, item, attempt = task.step_id, task.item_key, task.attempt
        self._lines += (
            AttemptLine(step, item, attempt, line.at, line.level, line.stream, line.message)
            for line in lines
        )
        self._emit(LogEvent(step, item, attempt, tuple(lines)))

    def flush(self, writer: AttemptWriter) -> None:
        """Write this round's rows; until they are committed, they are kept as unwritten."""
        self._unwritten = (self._ends, self._starts, self._lines)
        self._ends, self._starts, self._lines = [], [], []
        writer.record(*self._unwritten)
        self._unwritten = ([], [], [])

    def salvage(self, writer: AttemptWriter) -> None:
        """Best effort after the loop broke: write what is unwritten, so that no attempt stays
        running.

        Updates can be repeated, inserts cannot: if writing everything fails (the round that broke
        may have been committed after all, or may hold the fault), the ends alone are written.
        """
        ends = self._unwritten[0] + self._ends
        starts = self._unwritten[1] + self._starts
        lines = self._unwritten[2] + self._lines
        for rows in ((ends, starts, lines), (ends, [], [])):
            try:
                writer.record(*rows)
                return
            except Exception:
                continue

    def _emit(self, event: StepEvent | LogEvent) -> None:
        """Tell the listener; a listener that fails (a progress display) never fails the run."""
        if self.listener is not None:
            try:
                self.listener(event)
            except Exception:
                log.exception("instance %d: the listener failed on %s", self.instance_id, event)
