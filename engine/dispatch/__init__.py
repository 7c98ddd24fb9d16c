"""Dispatchers: where step attempts run. `direct` in this process; more by name."""

from __future__ import annotations

import os

from engine.config import DISPATCHER_ENV
from engine.dispatch.base import Dispatcher, StepOutcome, StepTask
from engine.errors import DispatchError
from engine.registry import JobRegistry


def resolve_dispatcher(name: str | None, registry: JobRegistry) -> Dispatcher:
    """The dispatcher named `name` (default: $ENGINE_DISPATCHER, else `direct`)."""
    name = name or os.environ.get(DISPATCHER_ENV) or "direct"
    if name == "direct":
        from engine.dispatch.direct import DirectDispatcher

        return DirectDispatcher(registry)
    raise DispatchError(f"unknown dispatcher {name!r} (known: direct)")


__all__ = ["Dispatcher", "StepOutcome", "StepTask", "resolve_dispatcher"]
