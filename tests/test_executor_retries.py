"""The executor's retries and timeouts.

Runs on SQLite (the store contract on both databases lives in test_store.py). Nothing here sleeps
to wait for something: runners synchronise through events and barriers, with generous bounds that
only matter when the engine is broken.
"""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections import Counter
from typing import Any

import pytest
from executing import WAIT, final, rows, run

from engine.definition import load_text
from engine.definition.models import Retry
from engine.dispatch.direct import DirectDispatcher
from engine.execution import StepEvent

pytestmark = pytest.mark.timeout(60)


# -- retries ----------------------------------------------------------------------------------


def test_max_attempts_counts_every_attempt_each_one_a_row(store, registry):
    attempts: list[int] = []

    @registry.handler("never")
    def never(inputs, ctx):
        attempts.append(ctx.attempt)
        raise RuntimeError(f"try {ctx.attempt}")

    view = run(
        store,
        registry,
        """
        name: retry
        steps:
          - id: a
            runner: never
            retry: {maxAttempts: 3, delaySeconds: 0.01}
    """,
    )
    assert attempts == [1, 2, 3]
    assert [(s.step, s.attempt, s.status) for s in view.steps] == [
        ("a", 1, "failed"),
        ("a", 2, "failed"),
        ("a", 3, "failed"),
    ]
    assert all(f"try {s.attempt}" in s.error for s in view.steps)
    assert all(s.finished_at is not None for s in view.steps)
    assert view.status == "failed"


def test_max_attempts_one_means_no_retry(store, registry):
    calls = []
    registry.add("never", lambda inputs, ctx: calls.append(1) or 1 / 0)
    view = run(
        store,
        registry,
        """
        name: retry
        steps:
          - {id: a, runner: never, retry: {maxAttempts: 1, delaySeconds: 0.01}}
    """,
    )
    assert len(calls) == 1
    assert [s.attempt for s in view.steps] == [1]


def test_a_retry_that_succeeds_stops_retrying_and_the_instance_succeeds(store, registry):
    attempts: list[int] = []

    @registry.handler("third")
    def third(inputs, ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        return {"ok": ctx.attempt}

    registry.add("next", lambda inputs, ctx: ctx.results)
    view = run(
        store,
        registry,
        """
        name: retry
        steps:
          - {id: a, runner: third, retry: {maxAttempts: 5, delaySeconds: 0.01}}
          - {id: b, runner: next}
    """,
    )
    assert attempts == [1, 2, 3]
    assert [(s.step, s.attempt, s.status) for s in view.steps] == [
        ("a", 1, "failed"),
        ("a", 2, "failed"),
        ("a", 3, "succeeded"),
        ("b", 1, "succeeded"),
    ]
    assert view.steps[2].result == {"ok": 3}
    assert view.steps[3].result == {"a": {"ok": 3}}
    assert view.status == "succeeded"


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        (Retry(max_attempts=6, delay_seconds=1, backoff=2, max_delay_seconds=5), [1, 2, 4, 5, 5]),
        (Retry(max_attempts=4, delay_seconds=3), [3, 3, 3]),
        (Retry(max_attempts=4, delay_seconds=0.5, backoff=3), [0.5, 1.5, 4.5]),
        (Retry(max_attempts=3, delay_seconds=10, backoff=10, max_delay_seconds=0), [0, 0]),
        (Retry(max_attempts=3), [0, 0]),
    ],
)
def test_retry_delay_grows_by_backoff_capped_by_max_delay(retry, expected):
    assert [retry.delay(n) for n in range(1, retry.max_attempts)] == pytest.approx(expected)


def test_retry_settings_read_from_yaml_camel_case(store, registry):
    registry.add("a", lambda inputs, ctx: 1)
    loaded = load_text(
        textwrap.dedent("""
        name: t
        steps:
          - id: a
            retry: {maxAttempts: 4, delaySeconds: 2, backoff: 3, maxDelaySeconds: 10}
    """),
        "x.yaml",
        registry,
    )
    retry = loaded.definition.settings(loaded.definition.steps[0])[0]
    assert [retry.delay(n) for n in (1, 2, 3)] == [2, 6, 10]


def test_retry_delays_in_a_run_grow_by_backoff_up_to_the_cap(store, registry):
    registry.add("never", lambda inputs, ctx: 1 / 0)
    events: list[StepEvent] = []
    view = run(
        store,
        registry,
        """
        name: retry
        steps:
          - id: a
            runner: never
            retry: {maxAttempts: 5, delaySeconds: 0.01, backoff: 2, maxDelaySeconds: 0.03}
    """,
        listener=events.append,
    )
    assert len(view.steps) == 5
    failed = [e for e in events if e.status == "failed"]
    assert [e.attempt for e in failed] == [1, 2, 3, 4, 5]
    assert [e.retry_in for e in failed] == pytest.approx([0.01, 0.02, 0.03, 0.03, None])
    assert [e.attempt for e in events if e.status == "running"] == [1, 2, 3, 4, 5]


def test_retry_defaults_are_inherited_and_a_step_overrides_them(store, registry):
    calls: Counter[str] = Counter()

    @registry.handler("never")
    def never(inputs, ctx):
        calls[ctx.step_id] += 1
        raise RuntimeError("no")

    view = run(
        store,
        registry,
        """
        name: defaults
        concurrency: 3
        defaults:
          retry: {maxAttempts: 3, delaySeconds: 0.01}
        steps:
          - {id: inherits, runner: never, nextSteps: []}
          - {id: once, runner: never, retry: {maxAttempts: 1}, nextSteps: []}
          - {id: twice, runner: never, retry: {maxAttempts: 2, delaySeconds: 0.01},
             nextSteps: []}
    """,
    )
    assert calls == {"inherits": 3, "once": 1, "twice": 2}
    assert Counter(s.step for s in view.steps) == calls


# -- timeouts ---------------------------------------------------------------------------------


class SignallingDispatcher(DirectDispatcher):
    """The direct dispatcher, announcing each outcome once it was handed to the executor."""

    def __init__(self, registry) -> None:
        super().__init__(registry)
        self.delivered: dict[tuple[str, int], threading.Event] = {}
        self._lock = threading.Lock()

    def event(self, step: str, attempt: int) -> threading.Event:
        with self._lock:
            return self.delivered.setdefault((step, attempt), threading.Event())

    def submit(self, task, done, sink=None):
        def relay(outcome):
            done(outcome)
            self.event(task.step_id, task.attempt).set()

        super().submit(task, relay, sink)


def test_a_sync_runner_ignoring_its_timeout_fails_and_does_not_hold_the_run(store, registry, rec):
    started, release, returned = threading.Event(), threading.Event(), threading.Event()

    @registry.handler("stuck")
    def stuck(inputs, ctx):
        started.set()
        release.wait(WAIT * 3)  # ignores ctx.cancelled on purpose
        returned.set()
        return {"late": True}

    try:
        view = run(
            store,
            registry,
            """
            name: slow
            defaults:
              timeoutSeconds: 0.1
            steps:
              - {id: a, runner: stuck, nextSteps: [b, {step: c, on: failure}]}
              - {id: b, runner: r}
              - {id: c, runner: r}
        """,
        )
        # the run ended while the runaway runner is still inside its call
        assert started.is_set()
        assert not returned.is_set()
    finally:
        release.set()
    assert final(view) == {"a": "failed", "b": "skipped", "c": "succeeded"}
    (a,) = rows(view, "a")
    assert "timeout" in a.error.lower()
    assert a.result is None
    assert a.finished_at is not None
    assert view.status == "failed"


def test_a_late_result_of_a_timed_out_attempt_is_discarded(store, registry):
    registry_dispatcher = SignallingDispatcher(registry)
    release = threading.Event()

    @registry.handler("slow_then_fast")
    def slow_then_fast(inputs, ctx):
        if ctx.attempt == 1:
            release.wait(WAIT)
            return {"attempt": 1}
        release.set()
        # hold attempt 2 until the late outcome of attempt 1 reached the executor
        assert registry_dispatcher.event("a", 1).wait(WAIT)
        return {"attempt": 2}

    registry.add("next", lambda inputs, ctx: ctx.results)
    view = run(
        store,
        registry,
        """
        name: late
        steps:
          - id: a
            runner: slow_then_fast
            timeoutSeconds: 0.1
            retry: {maxAttempts: 2, delaySeconds: 0.01}
          - {id: b, runner: next}
    """,
        dispatcher=registry_dispatcher,
    )
    assert registry_dispatcher.event("a", 1).is_set()
    assert [(s.step, s.attempt, s.status) for s in view.steps] == [
        ("a", 1, "failed"),
        ("a", 2, "succeeded"),
        ("b", 1, "succeeded"),
    ]
    first, second, b = view.steps
    assert "timeout" in first.error.lower()
    assert first.result is None  # not overwritten by the late {"attempt": 1}
    assert second.result == {"attempt": 2}
    assert b.result == {"a": {"attempt": 2}}
    assert view.status == "succeeded"


def test_a_late_result_after_the_step_ended_does_not_change_its_row(store, registry):
    dispatcher = SignallingDispatcher(registry)
    release = threading.Event()

    @registry.handler("stuck")
    def stuck(inputs, ctx):
        release.wait(WAIT)
        return {"late": True}

    @registry.handler("handler")
    def handler(inputs, ctx):
        release.set()
        assert dispatcher.event("a", 1).wait(WAIT)
        return {"handled": True}

    view = run(
        store,
        registry,
        """
        name: late
        steps:
          - {id: a, runner: stuck, timeoutSeconds: 0.1, nextSteps: [{step: h, on: failure}]}
          - {id: h, runner: handler}
    """,
        dispatcher=dispatcher,
    )
    assert final(view) == {"a": "failed", "h": "succeeded"}
    (a,) = rows(view, "a")
    assert a.result is None
    assert "timeout" in a.error.lower()
    assert len(view.steps) == 2


def test_a_cooperative_runner_sees_ctx_cancelled_once_timed_out(store, registry):
    observed: dict[str, Any] = {}
    noticed = threading.Event()

    @registry.handler("polite")
    def polite(inputs, ctx):
        observed["before"] = ctx.cancelled
        observed["woken"] = ctx.cancel_event.wait(WAIT)
        observed["after"] = ctx.cancelled
        noticed.set()
        return {"stopped": True}

    view = run(
        store,
        registry,
        """
        name: polite
        steps:
          - {id: a, runner: polite, timeoutSeconds: 0.1}
    """,
    )
    assert noticed.wait(WAIT)
    assert observed == {"before": False, "woken": True, "after": True}
    (a,) = view.steps
    assert a.status == "failed"
    assert "timeout" in a.error.lower()
    assert view.status == "failed"


def test_an_async_runner_past_its_timeout_is_cancelled(store, registry):
    cancelled = threading.Event()
    seen_cancel_flag: list[bool] = []

    @registry.handler("forever")
    async def forever(inputs, ctx):
        try:
            await asyncio.sleep(WAIT * 3)
        except asyncio.CancelledError:
            seen_cancel_flag.append(ctx.cancelled)
            cancelled.set()
            raise
        return {"late": True}

    view = run(
        store,
        registry,
        """
        name: aio
        steps:
          - {id: a, runner: forever, timeoutSeconds: 0.1}
    """,
    )
    assert cancelled.wait(WAIT), "the coroutine never saw CancelledError"
    assert seen_cancel_flag == [True]
    (a,) = view.steps
    assert a.status == "failed"
    assert "timeout" in a.error.lower()


def test_a_timed_out_attempt_is_retried(store, registry):
    release = threading.Event()

    @registry.handler("once_slow")
    def once_slow(inputs, ctx):
        if ctx.attempt == 1:
            ctx.cancel_event.wait(WAIT)
            release.wait(WAIT)
        return {"attempt": ctx.attempt}

    try:
        view = run(
            store,
            registry,
            """
            name: t
            steps:
              - {id: a, runner: once_slow, timeoutSeconds: 0.1,
                 retry: {maxAttempts: 2, delaySeconds: 0.01}}
        """,
        )
    finally:
        release.set()
    assert [(s.attempt, s.status) for s in view.steps] == [(1, "failed"), (2, "succeeded")]
    assert view.steps[1].result == {"attempt": 2}


def test_a_step_timeout_overrides_the_default(store, registry):
    short_stopped = threading.Event()

    @registry.handler("short")
    def short(inputs, ctx):
        ctx.cancel_event.wait(WAIT)
        short_stopped.set()

    @registry.handler("long")
    def long(inputs, ctx):
        # started with `short`: under the 0.05 s default it would be cancelled by now too
        assert short_stopped.wait(WAIT)
        return {"cancelled": ctx.cancel_event.wait(0.2)}

    view = run(
        store,
        registry,
        """
        name: t
        concurrency: 2
        defaults:
          timeoutSeconds: 0.05
        steps:
          - {id: short, runner: short, nextSteps: []}
          - {id: long, runner: long, timeoutSeconds: 30, nextSteps: []}
    """,
    )
    assert final(view) == {"short": "failed", "long": "succeeded"}
    assert "timeout" in rows(view, "short")[0].error.lower()
    assert rows(view, "long")[0].result == {"cancelled": False}
