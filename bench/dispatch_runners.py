"""The runners of bench/dispatch.py, loaded by it and by its `engine worker` subprocesses."""

from __future__ import annotations

import time
from typing import Any

from engine.registry import job_handler, registry

__all__ = ["registry"]


@job_handler("io_sleep")
def io_sleep(inputs: dict[str, Any], ctx: Any) -> dict[str, float]:
    """Stands for I/O: waits without using the CPU."""
    time.sleep(inputs["seconds"])
    return {"slept": inputs["seconds"]}


@job_handler("noop")
def noop(inputs: dict[str, Any], ctx: Any) -> dict[str, int]:
    return {"ok": 1}
