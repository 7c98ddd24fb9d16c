"""What the tests of the built-in runners share: a definition of one step run through the
engine, the step's log, and waiting on processes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from executing import WAIT, run


def one_step(
    store: Any,
    registry: Any,
    runner: str,
    inputs: dict[str, Any],
    *,
    params: dict[str, Any] | None = None,
    dispatcher: Any = None,
    **settings: Any,
) -> Any:
    """Run a definition of one step `s` (written as JSON, which is YAML); `params` are declared
    as strings with these defaults. Returns the instance."""
    definition = {
        "name": "builtin",
        "params": {name: {"type": "string", "default": v} for name, v in (params or {}).items()},
        "steps": [{"id": "s", "runner": runner, "inputs": inputs, **settings}],
    }
    return run(store, registry, json.dumps(definition), dispatcher=dispatcher)


def log_of(store: Any, instance_id: int) -> list[tuple[str, str]]:
    """The instance's log lines as (stream, message), oldest first."""
    return [(line.stream, line.message) for line in store.logs.page(instance_id).lines]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """The process has ended: no such process, or a zombie its new parent has not reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
