"""Runners of the dispatcher contract suite, in one place for both sides: the test process
registers them into its own registries, and `engine worker` subprocesses load them through
`worker_runners.py`. Each behaves by its inputs only, so that any process gives the same result."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from engine.registry import JobRegistry


def echo(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {"step": ctx.step_id, "attempt": ctx.attempt, "inputs": inputs, "up": ctx.results}


def flaky(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Fails until attempt `succeed_on`."""
    if ctx.attempt < inputs["succeed_on"]:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return {"attempt": ctx.attempt}


def sleep(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Sleeps; the result holds when it ran (wall clock: comparable across processes)."""
    start = time.time()
    time.sleep(inputs["seconds"])
    return {"start": start, "end": time.time()}


async def async_echo(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    return {"async": True, "params": ctx.params}


class Counter:
    def run(self, inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"count": inputs.get("count", 0)}


class Point(BaseModel):
    x: int
    y: int


def model(inputs: dict[str, Any], ctx: Any) -> Point:
    return Point(x=1, y=2)


def not_json(inputs: dict[str, Any], ctx: Any) -> Any:
    return {"a set": {1, 2}}


def exits(inputs: dict[str, Any], ctx: Any) -> None:
    sys.exit(3)


def where(inputs: dict[str, Any], ctx: Any) -> dict[str, str]:
    """Which worker ran the step (`direct` in the test process)."""
    return {"worker": os.environ.get("ENGINE_TEST_WORKER", "direct")}


def item(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """One item of a mapped step: fails until attempt `succeed_on`, then sleeps `seconds`; says
    which item it was given and which worker process (`here`: the test process) ran it."""
    if ctx.attempt < inputs.get("succeed_on", 1):
        raise RuntimeError(f"item {ctx.item_key} attempt {ctx.attempt} fails")
    time.sleep(inputs.get("seconds", 0))
    return {
        "key": ctx.item_key,
        "index": ctx.item_index,
        "item": ctx.item,
        "attempt": ctx.attempt,
        "inputs": inputs,
        "up": ctx.results,
        "worker": os.environ.get("ENGINE_TEST_WORKER", "here"),
        "pid": os.getpid(),
    }


def block_once(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """The first run anywhere writes its pid to `marker` and blocks; any later run returns."""
    marker = Path(inputs["marker"])
    if marker.exists():
        return {"blocked": False}
    marker.write_text(f"{os.environ.get('ENGINE_TEST_WORKER')} {os.getpid()}")
    time.sleep(60)
    return {"blocked": True}


def kills_itself(inputs: dict[str, Any], ctx: Any) -> None:
    """Dies as a crash in native code would, before it could report anything."""
    os.kill(os.getpid(), signal.SIGKILL)


RUNNERS = {
    "echo": echo,
    "flaky": flaky,
    "sleep": sleep,
    "async_echo": async_echo,
    "counter": Counter,
    "model": model,
    "not_json": not_json,
    "exits": exits,
    "where": where,
    "item": item,
    "block_once": block_once,
    "kills_itself": kills_itself,
}


def register(registry: JobRegistry) -> JobRegistry:
    for key, target in RUNNERS.items():
        registry.add(key, target)
    return registry
