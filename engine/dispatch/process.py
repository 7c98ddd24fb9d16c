"""The process dispatcher (`ENGINE_DISPATCHER=process`, the default of `engine serve` and
`engine schedule`): each attempt runs in a worker process, so that a runner that exits, crashes,
leaks or hangs takes down its worker only, never the engine that runs every other instance.

Workers are started on demand and reused: one attempt at a time each, as many at once as the
executor dispatches. A worker that dies mid-attempt fails that attempt ("worker process exited
with code N"), and the step's retry policy decides what follows; a new worker takes its place.
A cancel (a timeout, `engine cancel`) sets the attempt's `ctx.cancel_event` in the worker; one
that has not ended `CANCEL_GRACE_SECONDS` later is killed: unlike a thread, a process can be
stopped from outside, so a timed-out runner never keeps running.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection, wait

from engine.dispatch.base import Dispatcher, Done, LogLine, LogSink, StepOutcome, StepTask, TaskKey
from engine.dispatch.subprocess_worker import RunnerRef
from engine.registry import JobRegistry

CANCEL_GRACE_SECONDS = 2.0
"""How long a cancelled attempt's worker may take to return before it is killed."""

_WORKER_MAIN = "from engine.dispatch.subprocess_worker import main; main()"


def exit_message(code: int | None) -> str:
    """Why an attempt failed whose worker died under it."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process exited with code {code} (killed by {name})"
    return (
        f"worker process exited with code {code} during the attempt "
        "(the runner ended its process: os._exit, a crash, or the system)"
    )


class _Worker:
    """One worker process and the thread that hands it attempts, one at a time."""

    def __init__(self, dispatcher: ProcessDispatcher) -> None:
        self._dispatcher = dispatcher
        mine, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_MAIN, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Connection(mine.detach())
        self._exited = os.pidfd_open(self.process.pid)
        """Readable once the process has exited, even if a child of it holds the socket."""
        self.conn.send((list(sys.path), dispatcher.refs))
        self.key: TaskKey | None = None
        """The attempt it runs now, if any."""
        self._send_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[tuple[StepTask, Done, LogSink | None] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._attend, name="engine-worker-attendant", daemon=True).start()

    def give(self, task: StepTask, done: Done, sink: LogSink | None) -> None:
        self.key = task.key
        self._inbox.put((task, done, sink))

    def cancel(self) -> None:
        self._send("cancel")

    def stop(self) -> None:
        """End the worker: at once if busy, else once it has read the stop."""
        self._inbox.put(None)
        if self.key is not None:
            self.kill()
        else:
            self._send(None)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def _send(self, message: object) -> bool:
        try:
            with self._send_lock:
                self.conn.send(message)
            return True
        except OSError:
            return False

    def _attend(self) -> None:
        while (item := self._inbox.get()) is not None:
            task, done, sink = item
            outcome, alive = self._exchange(task, sink)
            key, self.key = self.key, None
            self._dispatcher._returned(self, key, alive)
            done(outcome)
        self.conn.close()
        os.close(self._exited)

    def _exchange(self, task: StepTask, sink: LogSink | None) -> tuple[StepOutcome, bool]:
        """Run `task` in the worker: its outcome, and whether the worker lives on. The log lines
        the worker sends before the outcome go to `sink` (without one, into the outcome)."""
        kept: list[LogLine] = []
        if self._send(task):
            try:
                while True:
                    wait([self.conn, self._exited])
                    message = self.conn.recv()
                    if not isinstance(message, list):
                        return dataclasses.replace(message, logs=(*kept, *message.logs)), True
                    if sink is None:
                        kept.extend(message)
                    else:
                        sink(task, message)
            except (EOFError, OSError):
                pass
        code = self.process.wait()
        return StepOutcome(task, ok=False, error=exit_message(code), logs=tuple(kept)), False


class ProcessDispatcher(Dispatcher):
    """Runs attempts in worker processes that load the registry's runners where they were
    defined (runners defined inside a function cannot be, and fail saying so)."""

    def __init__(self, registry: JobRegistry) -> None:
        self.refs = [RunnerRef.of(runner) for runner in registry.runners()]
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: dict[TaskKey, _Worker] = {}
        self._closed = False

    def submit(self, task: StepTask, done: Done, sink: LogSink | None = None) -> None:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            try:
                worker = _Worker(self)
            except OSError as exc:
                done(StepOutcome(task, ok=False, error=f"cannot start a worker process: {exc}"))
                return
        with self._lock:
            self._busy[task.key] = worker
        worker.give(task, done, sink)

    def cancel(self, task: StepTask) -> None:
        key = task.key
        with self._lock:
            worker = self._busy.get(key)
        if worker is None:
            return
        worker.cancel()
        timer = threading.Timer(CANCEL_GRACE_SECONDS, self._kill_if_still, (worker, key))
        timer.daemon = True
        timer.start()

    def _kill_if_still(self, worker: _Worker, key: TaskKey) -> None:
        if worker.key == key:
            worker.kill()

    def _returned(self, worker: _Worker, key: TaskKey | None, alive: bool) -> None:
        with self._lock:
            if key is not None:
                self._busy.pop(key, None)
            if alive and not self._closed:
                self._idle.append(worker)
                return
        worker.stop()

    def close(self) -> None:
        """Stop every worker: idle ones end, busy ones are killed (their attempts abandoned)."""
        with self._lock:
            self._closed = True
            workers = [*self._idle, *self._busy.values()]
            self._idle, self._busy = [], {}
        for worker in workers:
            worker.stop()
        for worker in workers:
            try:
                worker.process.wait(5)
            except subprocess.TimeoutExpired:
                worker.kill()
