"""Runners that talk, for the step log tests, in one place for every process that runs them: the
test process (direct dispatcher), the process dispatcher's workers, and `engine worker`
subprocesses (through `worker_runners.py`). What each says depends on its inputs and context
only, and `said` tells a test exactly which lines to expect, in order."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from engine.registry import JobRegistry


def name(ctx: Any) -> str:
    """How a runner names its attempt in its lines: `step`, `step[item]`, then `#attempt`."""
    step = ctx.step_id if ctx.item_key is None else f"{ctx.step_id}[{ctx.item_key}]"
    return f"{step}#{ctx.attempt}"


def said(who: str, lines: int, level: str = "info") -> list[tuple[str, str, str]]:
    """The (level, stream, message) rows of the attempt `who` of a `talk` runner, in order."""
    rows = []
    for i in range(lines):
        rows.append((level, "log", f"{who} log {i}"))
        rows.append(("info", "stdout", f"{who} print {i}"))
        rows.append(("warning", "stderr", f"{who} stderr {i}"))
    return rows


def say(ctx: Any, i: int, level: str = "info") -> None:
    """Line `i` of each kind: a `ctx.logger` record at `level`, a print, a write to stderr."""
    ctx.logger.log(logging.getLevelName(level.upper()), "%s log %d", name(ctx), i)
    print(f"{name(ctx)} print {i}")
    sys.stderr.write(f"{name(ctx)} stderr {i}\n")


def _outcome(ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    if ctx.attempt < inputs.get("succeed_on", 1):
        raise RuntimeError(f"{name(ctx)} fails")
    return {"said": name(ctx)}


def talk(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Says `lines` times a `ctx.logger` record (at `level`), a print and a write to stderr (see
    `said`), then fails until attempt `succeed_on`."""
    for i in range(inputs.get("lines", 1)):
        say(ctx, i, inputs.get("level", "info"))
    return _outcome(ctx, inputs)


async def talk_async(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """`talk` as a coroutine, giving way to the event loop between lines."""
    for i in range(inputs.get("lines", 1)):
        say(ctx, i, inputs.get("level", "info"))
        await asyncio.sleep(0)
    return _outcome(ctx, inputs)


def spilled(i: int) -> str:
    """Line `i` of `spill`: 20 bytes of UTF-8 in 12 characters."""
    return f"{i:03d} " + "é" * 8


def spill(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Prints `lines` lines (`spilled`), then fails until attempt `succeed_on`."""
    for i in range(inputs["lines"]):
        print(spilled(i))
    return _outcome(ctx, inputs)


RUNNERS = {"talk": talk, "talk_async": talk_async, "spill": spill}


def register(registry: JobRegistry) -> JobRegistry:
    for key, target in RUNNERS.items():
        registry.add(key, target)
    return registry
