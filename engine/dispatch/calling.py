"""How one attempt calls its runner, wherever it runs: the direct dispatcher's threads and a
Celery worker share this, so a step behaves the same under either."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from engine.context import StepContext
from engine.dispatch.base import LogLine, LogSink, StepOutcome, StepTask
from engine.dispatch.capture import capturing
from engine.errors import RunnerNotFound
from engine.jsondata import NotJsonData, json_copy
from engine.registry import JobRegistry, Runner
from engine.typed_inputs import InputsMismatch, checked


def prepare(registry: JobRegistry, task: StepTask) -> tuple[Runner, Any, StepContext] | StepOutcome:
    """The runner, its own copy of the inputs, and its context; or the outcome of an attempt
    that cannot start (an unknown runner key, data that is not JSON).

    Everything is copied as JSON would carry it to a remote worker: what one runner changes in
    its inputs or context, no other step sees.
    """
    try:
        runner = registry.get(task.runner)
        inputs, params, results, run, item = json_copy(
            [task.inputs, task.params, task.results, task.run, task.item]
        )
        if runner.inputs_model is not None:
            inputs = checked(runner.inputs_model, inputs)
    except (RunnerNotFound, InputsMismatch) as exc:
        return StepOutcome(task, ok=False, error=f"{type(exc).__name__}: {exc}")
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
    return runner, inputs, ctx


class _Output:
    """Where an attempt's log lines go: to the sink as they come, or, without one, with the
    attempt's outcome."""

    def __init__(self, task: StepTask, sink: LogSink | None) -> None:
        self.task = task
        self.sink = sink
        self.kept: list[LogLine] = []

    def deliver(self, lines: Sequence[LogLine]) -> None:
        if self.sink is None:
            self.kept.extend(lines)
        else:
            self.sink(self.task, lines)

    def ended(self, outcome: StepOutcome) -> StepOutcome:
        return dataclasses.replace(outcome, logs=tuple(self.kept)) if self.kept else outcome


def call(
    resolve: Callable[[], Callable[..., Any]],
    task: StepTask,
    inputs: Any,
    ctx: StepContext,
    sink: LogSink | None = None,
) -> StepOutcome:
    """Call a sync runner in this thread, catching what it says."""
    output = _Output(task, sink)
    with capturing(output.deliver):
        try:
            outcome = StepOutcome.success(task, resolve()(inputs, ctx))
        except BaseException as exc:  # SystemExit from a runner must not kill the worker silently
            outcome = StepOutcome.failure(task, exc)
    return output.ended(outcome)


async def call_async(
    fn: Callable[..., Any],
    task: StepTask,
    inputs: Any,
    ctx: StepContext,
    sink: LogSink | None = None,
) -> StepOutcome:
    """Await an async runner, catching what it says (in its own task's context)."""
    output = _Output(task, sink)
    with capturing(output.deliver):
        try:
            outcome = StepOutcome.success(task, await fn(inputs, ctx))
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
    runner, inputs, ctx = prepared
    if runner.is_async:
        return asyncio.run(call_async(runner.resolve(), task, inputs, ctx))
    return call(runner.resolve, task, inputs, ctx)
