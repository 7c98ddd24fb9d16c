"""Configuration by environment (DESIGN section 4): the variable names and their defaults.

Kept free of heavy imports so that `engine --help` and `engine validate` start fast.
"""

from __future__ import annotations

import math
import os

from engine.errors import ConfigError

DATABASE_ENV = "ENGINE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///engine.db"
"""A file in the working directory."""
RUNNERS_ENV = "ENGINE_RUNNERS"
"""Extra runner modules or folders, comma-separated."""
LEASE_ENV = "ENGINE_LEASE_SECONDS"
"""How long a running instance's lease lasts without renewal; default 30 (seconds)."""
DEFAULT_LEASE_SECONDS = 30.0
DISPATCHER_ENV = "ENGINE_DISPATCHER"
"""`direct` (the default), a name from `engine.dispatch.DISPATCHERS`, or `module:Class`."""
BROKER_URL_ENV = "ENGINE_BROKER_URL"
"""The Celery broker of `ENGINE_DISPATCHER=celery` and `engine worker`: `redis://…` or `amqp://…`."""
RESULT_BACKEND_ENV = "ENGINE_RESULT_BACKEND"
"""Where workers put outcomes; default: the broker itself for `redis://`, `rpc://` for `amqp://`."""
WORKER_LOST_ENV = "ENGINE_WORKER_LOST_SECONDS"
"""How long a started attempt may go without a worker heartbeat before it fails as lost."""
DEFAULT_WORKER_LOST_SECONDS = 30.0
API_TOKEN_ENV = "ENGINE_API_TOKEN"
"""The bearer token every HTTP route but `/healthz` requires; needed to listen beyond loopback."""
MAX_RECOVERIES_ENV = "ENGINE_MAX_RECOVERIES"
"""How often recovery adopts one instance after its process died before failing it instead."""
DEFAULT_MAX_RECOVERIES = 3


def env_number(name: str, default: float, minimum: float, integer: bool = False) -> float:
    """The number in environment variable `name` (unset or empty: `default`); ConfigError,
    naming the variable, for anything else than a finite number of at least `minimum`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name}={raw!r}: must be {kind} of at least {minimum:g}")
    return value
