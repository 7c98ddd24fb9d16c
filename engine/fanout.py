"""A mapped step while it runs: its items' keys, which item starts next, their attempts and
results, and when the step has ended.

A fan-out of 100,000 items must cost memory linear in its items and little per item: the state is
a few flat lists indexed by item (keys, attempts, results) and a bytearray of fates, not an
object per item; only the items in flight have a task.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Mapping
from typing import Any

from engine.config import MAX_RESULT_BYTES_ENV, number
from engine.dispatch.base import StepTask
from engine.expressions import Compiled, Scope
from engine.jsondata import json_kind, json_size
from engine.status import StepStatus

MAX_KEY_CHARS = 200
"""The longest item key (the width of `batch_step_result.item_key`)."""
NAMED_KEYS = 10
"""How many failed keys a mapped step's error names before it counts the rest."""

_OPEN, _SUCCEEDED, _FAILED, _RETRYING = 0, 1, 2, 3


_ENDED_FAILED = (_FAILED, _RETRYING)
"""The fates of items whose last attempt failed (a retry that failFast cut off included)."""


class MapError(ValueError):
    """Items that cannot be fanned out: not a list, or a key missing, invalid or repeated."""


def item_keys(items: Any, key: Compiled | None, as_name: str, scope: Scope) -> list[str]:
    """Each item's key, checked: all of them before any item runs.

    Raises MapError naming the first problem (the item's index, the repeated key).
    """
    if not isinstance(items, list):
        raise MapError(f"items must be a list, not {json_kind(items)}")
    if key is None:
        return [str(i) for i in range(len(items))]
    keys: list[str] = []
    seen: dict[str, int] = {}
    item_scope = dict(scope)
    for index, item in enumerate(items):
        item_scope[as_name] = item
        value = key(item_scope)
        if isinstance(value, bool) or not isinstance(value, str | int):
            kind = json_kind(value)
            raise MapError(f"the key of item {index} is {kind}, not a string or integer")
        text = str(value)
        if not text or len(text) > MAX_KEY_CHARS:
            raise MapError(
                f"the key of item {index} has {len(text)} characters: a key has 1 to "
                f"{MAX_KEY_CHARS}"
            )
        if any(unicodedata.category(c) == "Cc" for c in text):
            raise MapError(f"the key of item {index} holds a control character: {text!r}")
        first = seen.setdefault(text, index)
        if first != index:
            raise MapError(f"duplicate key {text!r}: items {first} and {index} have it")
        keys.append(text)
    return keys


class Fanout:
    """The items of one mapped step in one run of it (its own attempt `attempt`).

    `prior` holds each key's last attempt from earlier runs of the instance: a key that
    succeeded keeps its result and does not run again; the others continue their attempt count.

    The collected list is a step's result like any other, so `ENGINE_MAX_RESULT_BYTES` bounds it
    too: its size is summed as items succeed, and once past the limit the results are no longer
    held (each is kept in its item's row, for a resume under a higher limit to collect).
    """

    def __init__(
        self,
        step: str,
        attempt: int,
        items: list[Any],
        keys: list[str],
        *,
        concurrency: int,
        fail_fast: bool,
        prior: Mapping[str, tuple[int, str, Any]],
    ) -> None:
        self.step = step
        self.attempt = attempt
        self.items = items
        self.keys = keys
        self.concurrency = concurrency
        self.fail_fast = fail_fast
        self.attempts = [0] * len(items)
        self.results: list[Any] | None = [None] * len(items)
        """The items' results by index; None once they are over the limit together."""
        self.max_result_bytes = int(number(MAX_RESULT_BYTES_ENV))
        self.result_bytes = 2 + 2 * max(len(items) - 1, 0)
        """The collected list's size as JSON: its brackets and separators, then each result's."""
        self._fates = bytearray(len(items))
        self.running: dict[int, StepTask] = {}
        """The item attempts in flight, by item index."""
        self.awaiting_retry = 0
        """Items whose failed attempt will be tried again once its delay has passed."""
        self._retry_ready: deque[int] = deque()
        self._cursor = 0
        self.succeeded = self.failed = 0
        self.stopped = False
        """Set once an item failed under failFast: no item attempt starts any more."""
        for index, key in enumerate(keys) if prior else ():
            if key in prior:
                attempt_done, status, result = prior[key]
                self.attempts[index] = attempt_done
                if status == StepStatus.succeeded:
                    self._fates[index] = _SUCCEEDED
                    self._collect(index, result)
                    self.succeeded += 1

    def next_item(self) -> int | None:
        """The index of the item to start now, if one may start: retries first, then fresh."""
        if self.stopped or len(self.running) >= self.concurrency:
            return None
        if self._retry_ready:
            return self._retry_ready.popleft()
        index = self._fresh()
        if index < len(self.items):
            self._cursor = index + 1
            return index
        return None

    def started(self, index: int, task: StepTask) -> None:
        self.running[index] = task
        self.attempts[index] = task.attempt

    def succeed(self, index: int, result: Any) -> None:
        self.running.pop(index, None)
        self._fates[index] = _SUCCEEDED
        self._collect(index, result)
        self.succeeded += 1

    def _collect(self, index: int, result: Any) -> None:
        self.result_bytes += json_size(result)
        if self.results is None:
            return
        if self.result_bytes > self.max_result_bytes:
            self.results = None
        else:
            self.results[index] = result

    def fail(self, index: int, *, retry: bool) -> None:
        """An item attempt failed: to be retried, or for good (which stops a failFast map)."""
        self.running.pop(index, None)
        if retry:
            self._fates[index] = _RETRYING
            self.awaiting_retry += 1
            return
        self._fates[index] = _FAILED
        self.failed += 1
        self.stopped = self.stopped or self.fail_fast

    def retry_due(self, index: int) -> None:
        self.awaiting_retry -= 1
        if not self.stopped:
            self._fates[index] = _OPEN
            self._retry_ready.append(index)

    @property
    def finished(self) -> bool:
        """No item runs, and none will start: every item ended, or the map stopped."""
        if self.running:
            return False
        if self.stopped:
            return True
        return not (self._retry_ready or self.awaiting_retry) and self._fresh() == len(self.items)

    def outcome(self) -> tuple[StepStatus, Any, str | None]:
        """The step's own end once `finished`: status, result (the items' results in item
        order), error (naming the failed keys)."""
        total = len(self.items)
        if self.succeeded == total and self.results is not None:
            return StepStatus.succeeded, self.results, None
        errors = []
        failed = [self.keys[i] for i, fate in enumerate(self._fates) if fate in _ENDED_FAILED]
        if failed:
            named = ", ".join(repr(k) for k in failed[:NAMED_KEYS])
            if len(failed) > NAMED_KEYS:
                named += f" and {len(failed) - NAMED_KEYS:,} more"
            errors.append(f"{len(failed):,} of {total:,} items failed: {named}")
        unfinished = total - self.succeeded - len(failed)
        if unfinished:
            errors.append(f"{unfinished:,} did not run to their end (failFast)")
        if self.results is None:
            errors.append(self._over_limit())
        return StepStatus.failed, None, "; ".join(errors)

    def _over_limit(self) -> str:
        return (
            f"the results of its {self.succeeded:,} succeeded items come to "
            f"{self.result_bytes:,} bytes as a JSON list, over the limit of "
            f"{self.max_result_bytes:,} ({MAX_RESULT_BYTES_ENV}); each is kept with its item: "
            "raise the limit and resume the run to collect them"
        )

    def _fresh(self) -> int:
        """The first item at or after the cursor that has not ended (resumed items have)."""
        fates, cursor = self._fates, self._cursor
        while cursor < len(fates) and fates[cursor] != _OPEN:
            cursor += 1
        self._cursor = cursor
        return cursor
