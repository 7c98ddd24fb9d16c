"""The Celery dispatcher: each attempt becomes a Celery task that any `engine worker` listening on
the step's queue may take; its outcome comes back through the result backend.

One thread, the courier, does all the talking to Celery (sending, polling, revoking): kombu
channels are not thread-safe, and the rpc:// backend answers the thread that sent the task.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.config import WORKER_LOST_ENV, number
from engine.dispatch.base import Dispatcher, Done, LogLine, LogSink, StepOutcome, StepTask, TaskKey
from engine.dispatch.celery_app import (
    DEFAULT_QUEUE,
    TASK_NAME,
    check_broker,
    make_app,
    to_wire,
)
from engine.jsondata import storable_text
from engine.registry import JobRegistry

POLL_SECONDS = (0.005, 0.05)
"""How often the states of attempts in flight are read (in one round trip): soon after anything
changed, then less and less often while nothing does, so that short steps are seen ending at once
and long ones cost few reads."""
TIME_LIMIT_GRACE = 30.0
"""A worker kills an attempt this long after its timeout, should the revoke not reach it."""
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 1, "interval_max": 2}

_Command = tuple[Callable[..., None], tuple[Any, ...]]


@dataclass
class _Sent:
    task: StepTask
    done: Done
    beat: float | None = None
    beat_seen: float = 0.0
    """When `beat` last changed, by this process's clock: workers' clocks may differ."""
    worker: str = ""


class CeleryDispatcher(Dispatcher):
    """Runs attempts on Celery workers (`engine worker`).

    The registry given is the orchestrator's, used for validation only: the workers' own
    registries run the steps, and a key no worker knows fails its step with `RunnerNotFound`.

    Raises:
        DispatchError: Celery is not installed, or the broker is unreachable (within seconds).
    """

    def __init__(
        self,
        registry: JobRegistry,
        *,
        broker: str | None = None,
        backend: str | None = None,
        lost_after: float | None = None,
    ) -> None:
        self.app = make_app(broker, backend)
        check_broker(self.app)
        self.lost_after = lost_after or number(WORKER_LOST_ENV)
        self._commands: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._sent: dict[str, _Sent] = {}
        self._ids: dict[TaskKey, str] = {}
        self._unreadable_since: float | None = None
        self._courier = threading.Thread(target=self._run, name="engine-celery", daemon=True)
        self._courier.start()

    def submit(self, task: StepTask, done: Done, sink: LogSink | None = None) -> None:
        """Send `task` to the workers; its log lines come with its outcome (not to `sink`)."""
        self._commands.put((self._send, (task, done)))

    def cancel(self, task: StepTask) -> None:
        """Revoke the attempt; a worker running it terminates the process running it."""
        self._commands.put((self._revoke, (task,)))

    def close(self) -> None:
        self._commands.put(None)
        self._courier.join(timeout=10)
        self.app.close()

    # -- the courier thread ---------------------------------------------------------------------

    def _run(self) -> None:
        fastest, slowest = POLL_SECONDS
        interval = fastest
        while True:
            try:
                command = self._commands.get(timeout=interval if self._sent else None)
                interval = fastest
                while True:
                    if command is None:
                        return
                    fn, args = command
                    fn(*args)
                    command = self._commands.get_nowait()
            except queue.Empty:
                interval = min(interval * 2, slowest)
            if self._sent and self._poll():
                interval = fastest

    def _send(self, task: StepTask, done: Done) -> None:
        task_id = str(uuid.uuid4())
        try:
            self.app.send_task(
                TASK_NAME,
                kwargs=to_wire(task),
                task_id=task_id,
                queue=task.queue or DEFAULT_QUEUE,
                time_limit=task.timeout + TIME_LIMIT_GRACE if task.timeout else None,
                retry=True,
                retry_policy=PUBLISH_RETRY,
            )
        except Exception as exc:
            done(StepOutcome(task, ok=False, error=f"DispatchError: the broker refused: {exc}"))
            return
        self._sent[task_id] = _Sent(task, done)
        self._ids[task.key] = task_id

    def _revoke(self, task: StepTask) -> None:
        task_id = self._ids.pop(task.key, None)
        if task_id is None:
            return
        del self._sent[task_id]
        with contextlib.suppress(Exception):  # best effort: the executor recorded the end
            self.app.control.revoke(task_id, terminate=True, signal="SIGTERM")

    def _poll(self) -> bool:
        """Report the attempts that ended; return whether any did."""
        ids = list(self._sent)
        now = time.monotonic()
        try:
            metas = self._states(ids)
        except Exception as exc:
            self._unreadable_since = self._unreadable_since or now
            if now - self._unreadable_since > self.lost_after:
                for task_id in ids:
                    self._end(task_id, f"DispatchError: results unreadable: {exc}")
            return len(self._sent) < len(ids)
        self._unreadable_since = None
        for task_id in ids:
            meta = metas.get(task_id) or {"status": "PENDING"}
            try:
                self._read(task_id, meta, now)
            except Exception as exc:  # not what a worker of this engine stores
                self._end(task_id, f"DispatchError: unreadable state {meta!r:.200}: {exc!r}")
        return len(self._sent) < len(ids)

    def _read(self, task_id: str, meta: dict[str, Any], now: float) -> None:
        sent = self._sent[task_id]
        status = meta["status"]
        if status == "SUCCESS":
            payload = meta["result"]
            logs = tuple(LogLine.from_wire(line) for line in payload.get("logs", ()))
            outcome = StepOutcome(
                sent.task, payload["ok"], payload["result"], payload["error"], logs
            )
            self._finish(task_id, outcome)
        elif status in ("FAILURE", "REVOKED"):
            self._end(task_id, _worker_error(meta))
        elif status == "STARTED":
            self._check_heartbeat(task_id, sent, meta.get("result") or {}, now)

    def _check_heartbeat(self, task_id: str, sent: _Sent, beat: dict[str, Any], now: float) -> None:
        """A started attempt whose worker stopped beating fails (its retry policy decides what
        next); it is marked ended so that no worker runs a redelivered copy of it."""
        if beat.get("beat") != sent.beat:
            sent.beat, sent.beat_seen = beat.get("beat"), now
            sent.worker = f"{beat.get('hostname')} (pid {beat.get('pid')})"
            return
        if now - sent.beat_seen <= self.lost_after:
            return
        error = (
            f"worker lost: {sent.worker} sent no heartbeat for {self.lost_after:g}s "
            "(killed, or cut off from the result backend)"
        )
        with contextlib.suppress(Exception):  # the step fails as lost all the same
            if hasattr(self.app.backend, "get_key_for_task"):  # a store workers read too
                self.app.backend.mark_as_revoked(task_id, reason="worker lost")
            self.app.control.revoke(task_id, terminate=True, signal="SIGTERM")
        self._end(task_id, error)

    def _states(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        backend = self.app.backend
        if hasattr(backend, "mget"):  # a key-value store: every state in one round trip
            values = backend.mget([backend.get_key_for_task(i) for i in ids])
            return {i: backend.decode_result(v) for i, v in zip(ids, values, strict=True) if v}
        return {i: backend.get_task_meta(i) for i in ids}

    def _end(self, task_id: str, error: str) -> None:
        self._finish(task_id, StepOutcome(self._sent[task_id].task, ok=False, error=error))

    def _finish(self, task_id: str, outcome: StepOutcome) -> None:
        sent = self._sent.pop(task_id)
        self._ids.pop(sent.task.key, None)
        sent.done(outcome)


def _worker_error(meta: dict[str, Any]) -> str:
    """A failure the worker itself reported (the runner's own errors arrive as outcomes): the
    backend hands it back as an exception, or as its JSON form when it could not rebuild it."""
    exc = meta.get("result")
    kind: str
    message: Any
    if isinstance(exc, BaseException):
        kind, message = type(exc).__name__, str(exc)
    elif isinstance(exc, dict):
        kind, message = exc.get("exc_type", meta["status"]), exc.get("exc_message")
        if isinstance(message, list | tuple):
            message = ", ".join(str(m) for m in message)
    else:
        kind, message = meta["status"], exc
    if kind == "WorkerLostError":  # the pool process running the attempt died
        return storable_text(f"worker lost: {message}")
    trace = meta.get("traceback") or ""
    return storable_text(f"worker: {kind}: {message}\n\n{trace}".rstrip())
