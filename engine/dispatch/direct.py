"""The in-process dispatcher: sync runners on a pool of daemon threads, async runners on one
event loop thread.

The threads are daemons so that a runner ignoring its timeout cannot keep the process alive after
the instance has ended: it is abandoned, its result discarded. A runner calling `os._exit` would
end the engine with it, under an exit code of the runner's choosing (0: the instance left
`running`, the run reported a success): in a runner thread it raises SystemExit instead, which
fails the attempt. Crashes in native code cannot be caught in-process: the process dispatcher
isolates those.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from engine.context import StepContext
from engine.dispatch.base import Dispatcher, Done, LogSink, StepOutcome, StepTask, TaskKey
from engine.dispatch.calling import call, call_async, prepare
from engine.registry import JobRegistry

_runner_thread = threading.local()
"""`active` is set in the threads that run runners."""


def _mark_runner_thread() -> None:
    _runner_thread.active = True


def _guard_process_exit() -> None:
    """Make `os._exit` in a runner thread of this process raise SystemExit; elsewhere (the
    engine, a process forked by a runner) it exits as always."""
    real = os._exit
    if getattr(real, "engine_guard", False):
        return
    engine_pid = os.getpid()

    def guarded(status: int) -> NoReturn:
        if getattr(_runner_thread, "active", False) and os.getpid() == engine_pid:
            raise SystemExit(
                f"os._exit({status}) called by the runner: refused, it would end the engine "
                "(ENGINE_DISPATCHER=process runs each attempt in a process of its own)"
            )
        real(status)

    guarded.engine_guard = True  # type: ignore[attr-defined]
    os._exit = guarded


class _ThreadPool:
    """Daemon worker threads, grown on demand: a thread stuck in a runaway runner never blocks
    the next task, and idle threads are reused."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._threads += 1
                threading.Thread(target=self._work, name="engine-runner", daemon=True).start()
        self._tasks.put(work)

    def shutdown(self) -> None:
        """Let every thread end once it is idle; a busy one ends when its runner returns."""
        with self._lock:
            for _ in range(self._threads):
                self._tasks.put(None)
            self._threads = self._idle = 0

    def _work(self) -> None:
        _mark_runner_thread()
        while (work := self._tasks.get()) is not None:
            work()
            with self._lock:
                self._idle += 1


class DirectDispatcher(Dispatcher):
    """Runs attempts in this process, through the given registry."""

    def __init__(self, registry: JobRegistry) -> None:
        _guard_process_exit()
        self.registry = registry
        self._pool = _ThreadPool()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._running: dict[TaskKey, tuple[StepContext, Any]] = {}

    def submit(self, task: StepTask, done: Done, sink: LogSink | None = None) -> None:
        """Run `task` on a thread (or the event loop, for async runners)."""
        prepared = prepare(self.registry, task)
        if isinstance(prepared, StepOutcome):
            done(prepared)
            return
        key, ctx = task.key, prepared.ctx
        if prepared.is_async:
            future = asyncio.run_coroutine_threadsafe(
                call_async(prepared, sink), self._event_loop()
            )
            self._running[key] = (ctx, future)
            future.add_done_callback(lambda f: self._finish(key, done, _settled(task, f)))
        else:
            self._running[key] = (ctx, None)
            self._pool.submit(lambda: self._finish(key, done, call(prepared, sink)))

    def _finish(self, key: TaskKey, done: Done, outcome: StepOutcome) -> None:
        self._running.pop(key, None)
        done(outcome)

    def cancel(self, task: StepTask) -> None:
        running = self._running.get(task.key)
        if running is None:
            return
        ctx, future = running
        ctx.cancel_event.set()
        if future is not None:
            future.cancel()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                loop.call_soon_threadsafe(_mark_runner_thread)
                threading.Thread(
                    target=loop.run_forever, name="engine-async-runners", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    def close(self) -> None:
        """End idle threads, and cancel async runners still running (their loop stops once they
        have seen the cancellation, or after a second). Returns at once."""
        self._pool.shutdown()
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(_cancel_all_and_stop(), self._loop)
            self._loop = None


async def _cancel_all_and_stop() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=1.0)
    asyncio.get_running_loop().stop()


def _settled(task: StepTask, future: concurrent.futures.Future[StepOutcome]) -> StepOutcome:
    if future.cancelled():
        return StepOutcome(task, ok=False, error="cancelled")
    return future.result()
