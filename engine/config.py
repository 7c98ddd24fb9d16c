"""Configuration by environment (DESIGN section 4): the variable names and their defaults.

Kept free of heavy imports so that `engine --help` and `engine validate` start fast.
"""

from __future__ import annotations

import base64
import binascii
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
"""A name from DISPATCHERS (default: `direct`; `process` for serve and schedule), or
`module:Class`."""
DISPATCHERS = {
    "direct": "engine.dispatch.direct:DirectDispatcher",
    "process": "engine.dispatch.process:ProcessDispatcher",
    "celery": "engine.dispatch.celery:CeleryDispatcher",
}
"""Short names; anything else is read as `package.module:Class`."""
BROKER_URL_ENV = "ENGINE_BROKER_URL"
"""The Celery broker of `ENGINE_DISPATCHER=celery` and `engine worker`: `redis://…` or `amqp://…`."""
RESULT_BACKEND_ENV = "ENGINE_RESULT_BACKEND"
"""Where workers put outcomes; default: the broker itself for `redis://`, `rpc://` for `amqp://`."""
WORKER_LOST_ENV = "ENGINE_WORKER_LOST_SECONDS"
"""How long a started attempt may go without a worker heartbeat before it fails as lost."""
DEFAULT_WORKER_LOST_SECONDS = 30.0
API_TOKEN_ENV = "ENGINE_API_TOKEN"
"""The bearer token every HTTP route but `/healthz` requires; needed to listen beyond loopback."""
API_TRACEBACKS_ENV = "ENGINE_API_TRACEBACKS"
"""`1` or `true`: the HTTP API shows step errors with their tracebacks (default: without, as
they name the server's files)."""
MAX_RECOVERIES_ENV = "ENGINE_MAX_RECOVERIES"
"""How often recovery adopts one instance after its process died before failing it instead."""
DEFAULT_MAX_RECOVERIES = 3


MAX_RESULT_BYTES_ENV = "ENGINE_MAX_RESULT_BYTES"
"""The largest result a step may return, in bytes of JSON; a larger one fails its attempt."""
DEFAULT_MAX_RESULT_BYTES = 4 * 1024 * 1024
HIGHEST_MAX_RESULT_BYTES = 256 * 1024 * 1024
"""Well inside what one value may be in SQLite (1e9 bytes) and PostgreSQL (1 GB), with room for
the copies a result goes through on its way there."""


PARAMS_KEY_ENV = "ENGINE_PARAMS_KEY"
"""The Fernet key that seals secret params in the database and on a Celery broker, so that a
resume, a recovery and a worker can read them; several, comma-separated, while rotating: the
first seals, any unseals. Not under ENGINE_SECRET_: that prefix is the `secrets` namespace."""
PARAMS_KEY_HINT = (
    "make one with: python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'"
)


LOG_LIMIT_ENV = "ENGINE_LOG_LIMIT"
"""The most of one attempt's log kept, in bytes of text; beyond it, lines are counted, not kept."""
DEFAULT_LOG_LIMIT = 1024 * 1024


def env_number(
    name: str,
    default: float,
    minimum: float,
    integer: bool = False,
    maximum: float = math.inf,
) -> float:
    """The number in environment variable `name` (unset or empty: `default`); ConfigError,
    naming the variable, for anything else than a finite number from `minimum` to `maximum`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not minimum <= value <= maximum:
        kind = "a whole number" if integer else "a number"
        least = f"{minimum:g}"
        bounds = f"of at least {least}" if maximum == math.inf else f"from {least} to {maximum:.0f}"
        raise ConfigError(f"{name}={raw!r}: must be {kind} {bounds}")
    return value


NUMBERS: dict[str, tuple[float, float, bool, float]] = {
    LEASE_ENV: (DEFAULT_LEASE_SECONDS, 0.1, False, math.inf),
    WORKER_LOST_ENV: (DEFAULT_WORKER_LOST_SECONDS, 1.0, False, math.inf),
    MAX_RECOVERIES_ENV: (DEFAULT_MAX_RECOVERIES, 0, True, math.inf),
    MAX_RESULT_BYTES_ENV: (DEFAULT_MAX_RESULT_BYTES, 1, True, HIGHEST_MAX_RESULT_BYTES),
    LOG_LIMIT_ENV: (DEFAULT_LOG_LIMIT, 0, True, math.inf),
}
"""The numeric variables: (default, minimum, whole number, maximum)."""


_numbers: dict[tuple[str, str], float] = {}


def number(name: str) -> float:
    """The value of the numeric variable `name` (one of NUMBERS); ConfigError when unusable.

    Parsed once per value the variable takes: every attempt reads some of them.
    """
    key = (name, os.environ.get(name, ""))
    found = _numbers.get(key)
    if found is None:
        found = _numbers[key] = env_number(name, *NUMBERS[name])
    return found


_SWITCH = {"": False, "0": False, "false": False, "1": True, "true": True}


def switch(name: str) -> bool:
    """The on/off variable `name`: `1` or `true` is on; unset, empty, `0` or `false` off (any
    case); ConfigError, naming the variable, for anything else."""
    raw = os.environ.get(name, "").strip()
    value = _SWITCH.get(raw.lower())
    if value is None:
        raise ConfigError(f"{name}={raw!r}: must be 0, 1, true or false")
    return value


def params_keys() -> list[bytes]:
    """The keys in ENGINE_PARAMS_KEY (none when unset or empty), the sealing one first.

    ConfigError for anything but 32 url-safe base64-encoded bytes each, without echoing what
    was given: it is a key.
    """
    raw = os.environ.get(PARAMS_KEY_ENV, "").strip()
    keys = [key.strip().encode() for key in raw.split(",")] if raw else []
    for i, key in enumerate(keys):
        try:
            usable = len(base64.urlsafe_b64decode(key)) == 32 and len(key) == 44
        except (ValueError, binascii.Error):
            usable = False
        if not usable:
            which = f"key {i + 1} of {len(keys)}" if len(keys) > 1 else "the value"
            raise ConfigError(
                f"{PARAMS_KEY_ENV}: {which} is not a Fernet key (32 url-safe base64-encoded "
                f"bytes, comma-separated when several); {PARAMS_KEY_HINT}"
            )
    return keys


def check_environment() -> None:
    """Refuse unusable `ENGINE_*` values before a command does anything (ConfigError)."""
    for name in NUMBERS:
        number(name)
    switch(API_TRACEBACKS_ENV)
    params_keys()
    dispatcher = os.environ.get(DISPATCHER_ENV, "").strip()
    if dispatcher and dispatcher not in DISPATCHERS and ":" not in dispatcher:
        raise ConfigError(
            f"{DISPATCHER_ENV}={dispatcher!r}: must be one of {', '.join(DISPATCHERS)}, "
            "or package.module:Class"
        )
