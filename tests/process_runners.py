"""Runners for the process dispatcher's own tests: they end, kill or stall their process."""

from __future__ import annotations

import os
import signal
import time
from typing import Any


def pid(inputs: dict[str, Any], ctx: Any) -> int:
    return os.getpid()


def exits_on_first(inputs: dict[str, Any], ctx: Any) -> int:
    """os._exit(code) on attempt 1, as a runner ending its own process would; then succeeds."""
    if ctx.attempt == 1:
        os._exit(inputs.get("code", 0))
    return os.getpid()


def killed(inputs: dict[str, Any], ctx: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def stubborn(inputs: dict[str, Any], ctx: Any) -> None:
    """Ignores its timeout: writes its pid, then sleeps on."""
    with open(inputs["pidfile"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)


def polite(inputs: dict[str, Any], ctx: Any) -> str:
    """Writes its pid, then returns as soon as it is cancelled."""
    with open(inputs["pidfile"], "w") as f:
        f.write(str(os.getpid()))
    ctx.cancel_event.wait(120)
    return "stopped"


RUNNERS = {
    "pid": pid,
    "exits_on_first": exits_on_first,
    "killed": killed,
    "stubborn": stubborn,
    "polite": polite,
}
