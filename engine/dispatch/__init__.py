"""Dispatchers: where step attempts run, chosen by a short name or a dotted path."""

from __future__ import annotations

import importlib
import os

from engine.config import DISPATCHER_ENV, DISPATCHERS
from engine.dispatch.base import Dispatcher, StepOutcome, StepTask
from engine.errors import DispatchError
from engine.registry import JobRegistry


def resolve_dispatcher(
    name: str | None, registry: JobRegistry, default: str = "direct"
) -> Dispatcher:
    """The dispatcher named `name` (default: $ENGINE_DISPATCHER, else `default`).

    Never falls back to another dispatcher: an unknown or broken one is a DispatchError.
    """
    name = name or os.environ.get(DISPATCHER_ENV) or default
    path = DISPATCHERS.get(name, name)
    module_name, _, class_name = path.partition(":")
    if not class_name:
        known = ", ".join(DISPATCHERS)
        raise DispatchError(f"unknown dispatcher {name!r} (known: {known}, or module:Class)")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise DispatchError(f"dispatcher {name!r} cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Dispatcher)):
        raise DispatchError(f"dispatcher {name!r} is not a Dispatcher subclass")
    return cls(registry)  # type: ignore[call-arg]


__all__ = ["Dispatcher", "StepOutcome", "StepTask", "resolve_dispatcher"]
