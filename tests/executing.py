"""What the executor tests share: running a definition through the service, reading its
attempts, and a recording runner."""

from __future__ import annotations

import textwrap
import threading
from typing import Any

from engine.definition import load_text
from engine.dispatch.direct import DirectDispatcher
from engine.service import BatchService

WAIT = 10.0
"""Upper bound of any wait on an event; reached only when the engine is broken."""


def run(store, registry, yaml_text, params=None, *, dispatcher=None, listener=None):
    loaded = load_text(textwrap.dedent(yaml_text), "x.yaml", registry)
    dispatcher = dispatcher or DirectDispatcher(registry)
    try:
        return BatchService(store, dispatcher).run(
            BatchService.prepare(loaded, params or {}), listener
        )
    finally:
        dispatcher.close()


def final(view) -> dict[str, str]:
    """Each step's status after its last attempt."""
    return {s.step: s.status for s in view.steps}


def rows(view, step):
    return [s for s in view.steps if s.step == step]


class Recorder:
    """A runner `r` driven by its inputs: `fail: true` raises, `ret` is merged into the result.

    Logs ("start", step) and ("end", step) in order, so tests can check what ran and when.
    """

    def __init__(self, registry) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, str]] = []
        self.contexts: dict[str, Any] = {}
        registry.add("r", self)

    def __call__(self, inputs, ctx):
        with self.lock:
            self.log.append(("start", ctx.step_id))
            self.contexts[ctx.step_id] = ctx
        try:
            if inputs.get("fail"):
                raise RuntimeError(f"{ctx.step_id} was told to fail")
            return {"step": ctx.step_id, **inputs.get("ret", {})}
        finally:
            with self.lock:
                self.log.append(("end", ctx.step_id))

    @property
    def called(self) -> list[str]:
        return [step for kind, step in self.log if kind == "start"]
