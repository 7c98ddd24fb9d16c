"""The child side of the process dispatcher: one worker process, running one attempt at a time.

A worker is a fresh interpreter (started, never forked from the threaded engine) talking to the
engine over a socket. It takes the engine's `sys.path`, rebuilds the engine's registry from
where each runner was defined, then serves attempts: the main thread
waits for messages (an attempt to run, a cancel, the end), a thread runs the attempt and sends
its outcome. SIGINT and SIGTERM are ignored: the engine decides when a worker ends, so that a
Ctrl-C or a service manager's stop reaches the engine, which lets attempts finish or cancels
them, instead of killing every attempt at once. A worker whose engine died sees its pipe close
and exits.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

from engine.dispatch.base import LogLine, StepOutcome, StepTask
from engine.dispatch.calling import Prepared, call, call_async, prepare
from engine.registry import JobRegistry, Runner


@dataclass(frozen=True)
class RunnerRef:
    """Where a runner was defined, so that another process can import it again."""

    key: str
    module: str
    file: str | None
    qualname: str

    @classmethod
    def of(cls, runner: Runner) -> RunnerRef:
        target = runner.target
        module = sys.modules.get(target.__module__)
        return cls(
            runner.key, target.__module__, getattr(module, "__file__", None), target.__qualname__
        )


def load_registry(refs: list[RunnerRef]) -> tuple[JobRegistry, dict[str, str]]:
    """The registry of the runners that import here, and why each other one does not."""
    registry = JobRegistry()
    unavailable: dict[str, str] = {}
    for ref in refs:
        try:
            target: Any = _module(ref)
            for part in ref.qualname.split("."):
                if part == "<locals>":
                    raise LookupError("it is defined inside a function")
                target = getattr(target, part)
            registry.add(ref.key, target)
        except Exception as exc:  # any error of the user's module: the attempt reports it
            unavailable[ref.key] = (
                f"runner {ref.key!r} ({ref.module}.{ref.qualname}) cannot be loaded in a worker "
                f"process: {type(exc).__name__}: {exc}; define it at the top level of a module"
            )
    return registry, unavailable


def _module(ref: RunnerRef) -> ModuleType:
    if ref.module in sys.modules:
        return sys.modules[ref.module]
    try:
        return importlib.import_module(ref.module)
    except ImportError:
        if ref.file is None:
            raise
    # A file discovered under a made-up module name (runners/ folders): load it under that name.
    spec = importlib.util.spec_from_file_location(ref.module, ref.file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {ref.file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[ref.module] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    """`python -c 'from engine.dispatch.subprocess_worker import main; main()' FD`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(int(sys.argv[1]))
    try:
        path, refs = conn.recv()
    except (EOFError, OSError):
        return
    sys.path[:] = path
    serve(conn, refs)


def serve(conn: Connection, refs: list[RunnerRef]) -> None:
    """Run attempts sent over `conn` until told to stop, or the engine is gone."""
    registry, unavailable = load_registry(refs)
    send_lock = threading.Lock()
    cancel_event: threading.Event | None = None

    def send(message: object) -> None:
        with send_lock:
            conn.send(message)

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the engine is gone
        if message is None:
            return
        if message == "cancel":
            if cancel_event is not None:
                cancel_event.set()
            continue
        task: StepTask = message
        if task.runner in unavailable:
            send(StepOutcome(task, ok=False, error=unavailable[task.runner]))
            continue
        prepared = prepare(registry, task)
        if isinstance(prepared, StepOutcome):
            send(prepared)
            continue
        cancel_event = prepared.ctx.cancel_event
        threading.Thread(
            target=_attempt,
            args=(send, prepared),
            name="engine-attempt",
            daemon=True,
        ).start()


def _attempt(send: Callable[[object], None], prepared: Prepared) -> None:
    """Run the attempt; its log lines go to the engine as they come (lists of lines), then its
    outcome."""

    def sink(_task: StepTask, lines: Sequence[LogLine]) -> None:
        send(list(lines))

    if prepared.is_async:
        send(asyncio.run(call_async(prepared, sink)))
    else:
        send(call(prepared, sink))
