"""How one attempt calls its runner, wherever it runs: the direct dispatcher's threads and a
Celery worker share this, so a step behaves the same under either."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.context import StepContext
from engine.dispatch.base import LogLine, LogSink, StepOutcome, StepTask
from engine.dispatch.capture import Capture
from engine.errors import RunnerNotFound
from engine.jsondata import NotJsonData, json_text
from engine.registry import JobRegistry, Runner
from engine.secret_params import revealed_params
from engine.secrets import (
    NO_SECRETS,
    Masker,
    MissingSecret,
    holds_placeholders,
    masking,
    reveal,
)
from engine.typed_inputs import InputsMismatch, checked


@dataclass(slots=True)
class Prepared:
    """An attempt ready to call: its runner, its own copy of the inputs (secrets revealed, a
    typed runner's model built), its context, and the masker of the secrets it was given."""

    task: StepTask
    runner: Runner
    inputs: Any
    ctx: StepContext
    masker: Masker

    @property
    def is_async(self) -> bool:
        return self.runner.is_async


def prepare(registry: JobRegistry, task: StepTask) -> Prepared | StepOutcome:
    """The attempt ready to call; or the outcome of one that cannot start (an unknown runner
    key, data that is not JSON, a secret this process lacks, inputs the runner's model refuses).

    Everything is copied as JSON would carry it to a remote worker: what one runner changes in
    its inputs or context, no other step sees.
    """
    masker = NO_SECRETS
    try:
        runner = registry.get(task.runner)
        copied = json_text([task.inputs, task.params, task.results, task.run, task.item])
        inputs, params, results, run, item = json.loads(copied)
        if task.secret_params is not None or holds_placeholders(copied):
            inputs, masker = reveal(inputs, task.secret_params)
            params = revealed_params(params, task.secret_params)
        if runner.inputs_model is not None:
            inputs = checked(runner.inputs_model, inputs)
    except (RunnerNotFound, InputsMismatch, MissingSecret) as exc:
        error = masker.text(f"{type(exc).__name__}: {exc}")
        return StepOutcome(task, ok=False, error=error)
    except NotJsonData as exc:
        return StepOutcome(task, ok=False, error=f"the step's inputs or context {exc}")
    ctx = StepContext(
        task.instance_id,
        task.step_id,
        task.attempt,
        params,
        results,
        run,
        item=item,
        item_key=task.item_key,
        item_index=task.item_index,
    )
    return Prepared(task, runner, inputs, ctx, masker)


class _Output:
    """Where an attempt's log lines go, masked: to the sink as they come, or, without one,
    with the attempt's outcome, whose result and error are masked too."""

    __slots__ = ("kept", "masker", "sink", "task")

    def __init__(self, prepared: Prepared, sink: LogSink | None) -> None:
        self.task = prepared.task
        self.masker = prepared.masker
        self.sink = sink
        self.kept: list[LogLine] = []

    def deliver(self, lines: Sequence[LogLine]) -> None:
        if self.masker is not NO_SECRETS:
            lines = [
                dataclasses.replace(line, message=self.masker.text(line.message)) for line in lines
            ]
        if self.sink is None:
            self.kept.extend(lines)
        else:
            self.sink(self.task, lines)

    def ended(self, outcome: StepOutcome) -> StepOutcome:
        masker = self.masker
        if masker is not NO_SECRETS:
            error = None if outcome.error is None else masker.text(outcome.error)
            outcome = dataclasses.replace(outcome, result=masker.data(outcome.result), error=error)
        return dataclasses.replace(outcome, logs=tuple(self.kept)) if self.kept else outcome


def call(prepared: Prepared, sink: LogSink | None = None) -> StepOutcome:
    """Call a sync runner in this thread, catching what it says."""
    task, output = prepared.task, _Output(prepared, sink)
    with Capture(output.deliver), masking(prepared.masker):
        try:
            result = prepared.runner.resolve()(prepared.inputs, prepared.ctx)
            outcome = StepOutcome.success(task, result)
        except BaseException as exc:  # SystemExit from a runner must not kill the worker silently
            outcome = StepOutcome.failure(task, exc)
    return output.ended(outcome)


async def call_async(prepared: Prepared, sink: LogSink | None = None) -> StepOutcome:
    """Await an async runner, catching what it says (in its own task's context)."""
    task, output = prepared.task, _Output(prepared, sink)
    with Capture(output.deliver), masking(prepared.masker):
        try:
            result = await prepared.runner.resolve()(prepared.inputs, prepared.ctx)
            outcome = StepOutcome.success(task, result)
        except (Exception, asyncio.CancelledError, SystemExit, KeyboardInterrupt) as exc:
            # A cancelled coroutine reports too, and sys.exit() must not kill the event loop;
            # GeneratorExit (a coroutine being closed) is left alone.
            outcome = StepOutcome.failure(task, exc)
    return output.ended(outcome)


def run_attempt(registry: JobRegistry, task: StepTask) -> StepOutcome:
    """Run one attempt to its end in this thread (an async runner on its own event loop); its
    log lines come with its outcome."""
    prepared = prepare(registry, task)
    if isinstance(prepared, StepOutcome):
        return prepared
    if prepared.is_async:
        return asyncio.run(call_async(prepared))
    return call(prepared)
