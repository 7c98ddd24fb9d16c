"""How one attempt calls its runner, wherever it runs: the direct dispatcher's threads and a
Celery worker share this, so a step behaves the same under either."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engine.context import StepContext
from engine.dispatch.base import StepOutcome, StepTask
from engine.errors import RunnerNotFound
from engine.jsondata import NotJsonData, json_copy
from engine.registry import JobRegistry, Runner


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
    except RunnerNotFound as exc:
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


def call(
    resolve: Callable[[], Callable[..., Any]], task: StepTask, inputs: Any, ctx: StepContext
) -> StepOutcome:
    """Call a sync runner in this thread."""
    try:
        return StepOutcome.success(task, resolve()(inputs, ctx))
    except BaseException as exc:  # SystemExit from a runner must not kill the worker silently
        return StepOutcome.failure(task, exc)


async def call_async(
    fn: Callable[..., Any], task: StepTask, inputs: Any, ctx: StepContext
) -> StepOutcome:
    """Await an async runner."""
    try:
        return StepOutcome.success(task, await fn(inputs, ctx))
    except (Exception, asyncio.CancelledError, SystemExit, KeyboardInterrupt) as exc:
        # A cancelled coroutine reports too, and sys.exit() must not kill the event loop;
        # GeneratorExit (a coroutine being closed) is left alone.
        return StepOutcome.failure(task, exc)


def run_attempt(registry: JobRegistry, task: StepTask) -> StepOutcome:
    """Run one attempt to its end in this thread (an async runner on its own event loop)."""
    prepared = prepare(registry, task)
    if isinstance(prepared, StepOutcome):
        return prepared
    runner, inputs, ctx = prepared
    if runner.is_async:
        return asyncio.run(call_async(runner.resolve(), task, inputs, ctx))
    return call(runner.resolve, task, inputs, ctx)
