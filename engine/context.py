"""What a runner sees of the run it is part of."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

RUNNER_LOGGER = "engine.runner"
"""The logger of `ctx.logger`: its records go to the attempt's log."""
_runner_logger = logging.getLogger(RUNNER_LOGGER)
_making_events = threading.Lock()


@dataclass(frozen=True)
class StepContext:
    """The second argument of every runner.

    `results` holds the results of the step's direct upstream steps, by step id. A runner that may
    outlive its `timeoutSeconds` should poll `cancelled` (or `cancel_event.wait(seconds)` instead of
    `time.sleep`) and return early once it is set: the engine cannot stop a thread from outside.
    """

    instance_id: int
    step_id: str
    attempt: int
    params: dict[str, Any]
    results: dict[str, Any]
    run: dict[str, Any]
    item: Any = None
    """In one item of a mapped step: the item, its key and its index; None outside `map`."""
    item_key: str | None = None
    item_index: int | None = None
    _cancel: threading.Event | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def cancel_event(self) -> threading.Event:
        """Set once the attempt timed out or the instance was cancelled. Made when first asked
        for: most attempts never are, and an Event costs a lock and a condition."""
        event = self._cancel
        if event is None:
            with _making_events:
                event = self._cancel
                if event is None:
                    event = threading.Event()
                    object.__setattr__(self, "_cancel", event)
        return event

    @property
    def cancelled(self) -> bool:
        """True once the attempt timed out or the instance was cancelled."""
        event = self._cancel
        return event is not None and event.is_set()

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that tags each record with the instance, step and attempt."""
        return logging.LoggerAdapter(
            _runner_logger,
            {
                "instance_id": self.instance_id,
                "step_id": self.step_id,
                "item_key": self.item_key,
                "attempt": self.attempt,
            },
        )
