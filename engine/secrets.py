"""Secrets: `{{ secrets.NAME }}` is the environment variable `ENGINE_SECRET_NAME` of the process
that runs the step, and its value is never written anywhere.

The orchestrating process does not know the values: it renders each reference as a placeholder,
which travels with the step's inputs (over a Celery broker too) and is replaced by the value only
where the attempt runs, just before its runner is called. There, everything the attempt gives
back (its result, its error, its log lines) has every value it was given masked as `***`.

Secret params (`engine.secret_params`) travel the same way, as placeholders of their own kind,
so that a param and a secret of one name are never confused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol

from engine.context import RUNNER_LOGGER

SECRET_ENV_PREFIX = "ENGINE_SECRET_"
MASK = "***"
_OPEN, _CLOSE = "\ue000", "\ue001"
"""Private-use characters: no user data or JSON escape makes them by accident."""
_PLACEHOLDER = re.compile(f"{_OPEN}([A-Za-z_][A-Za-z0-9_]*){_CLOSE}")
_PARAM_OPEN, _PARAM_CLOSE = "\ue002", "\ue003"
"""Secret params have their own pair: a param and a secret of one name are never confused."""
_PARAM_PLACEHOLDER = re.compile(f"{_PARAM_OPEN}([^\ue000-\ue003]+){_PARAM_CLOSE}")
_EITHER = re.compile(f"{_PLACEHOLDER.pattern}|{_PARAM_PLACEHOLDER.pattern}")
"""One pass over both, so that no revealed value is read as a placeholder."""
PLACEHOLDER_CHARS = "\ue000\ue001\ue002\ue003"
"""What no secret param's name may contain."""


def holds_placeholders(text: str) -> bool:
    """Whether `text` (JSON, say) holds a placeholder: if not, there is nothing to reveal."""
    return _OPEN in text or _PARAM_OPEN in text


def param_placeholder(name: str) -> str:
    """What the orchestrator's templates see of the secret param `name`."""
    return f"{_PARAM_OPEN}{name}{_PARAM_CLOSE}"


class MissingSecret(LookupError):
    """A step names a secret that the process running it does not have."""


class SecretRefs(dict[str, str]):
    """What templates see as `secrets`: each name is its placeholder."""

    def __missing__(self, name: str) -> str:
        return f"{_OPEN}{name}{_CLOSE}"


class Masker:
    """Replaces the secret values an attempt was given by `***` in what it gives back."""

    def __init__(self, values: set[str]) -> None:
        self._values = sorted(set(_forms(v for v in values if v)), key=len, reverse=True)

    def text(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, MASK)
        return text

    def data(self, value: Any) -> Any:
        """JSON data with every string masked, keys included."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.data(v) for v in value]
        return value


def _forms(values: Iterable[str]) -> Iterator[str]:
    """Each value as it may be written: itself, escaped as in JSON or a Python repr, and each
    line of a value of several lines (a log line holds one)."""
    for value in values:
        yield value
        yield json.dumps(value)[1:-1]
        yield json.dumps(value, ensure_ascii=False)[1:-1]
        yield repr(value)[1:-1]
        if "\n" in value:
            yield from (line for line in value.splitlines() if line.strip())


NO_SECRETS = Masker(set())

_masker: ContextVar[Masker] = ContextVar("engine_masker", default=NO_SECRETS)


class _MaskRecords(logging.Filter):
    """Masks each record a runner logs while its attempt runs, before any handler sees it: the
    step's log, and a process's own handlers too (a Celery worker's log, an embedding app's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        masker = _masker.get()
        if masker is not NO_SECRETS:
            record.msg, record.args = masker.text(record.getMessage()), None
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = masker.text(record.exc_text)
            if record.stack_info:
                record.stack_info = masker.text(record.stack_info)
        return True


_FILTER = _MaskRecords()


@contextlib.contextmanager
def masking(masker: Masker) -> Iterator[None]:
    """While a runner is called in this context, what it logs through `ctx.logger` is masked."""
    if masker is NO_SECRETS:
        yield
        return
    logger = logging.getLogger(RUNNER_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    token = _masker.set(masker)
    try:
        yield
    finally:
        _masker.reset(token)


class Revealing(Protocol):
    """The values of an attempt's secret params (`engine.secret_params.SecretParams`)."""

    values: dict[str, str]

    def missing(self, name: str) -> MissingSecret: ...


def reveal(value: Any, params: Revealing | None = None) -> tuple[Any, Masker]:
    """`value` (a step's inputs, the attempt's own copy: changed in place) with each
    placeholder replaced by its secret or secret param, and the masker of those secrets and of
    every secret param's value. MissingSecret names the first one this process lacks."""
    used: set[str] = set(params.values.values()) if params is not None else set()

    def secret(match: re.Match[str]) -> str:
        if match[2] is not None:
            if params is None:
                return match[0]
            found = params.values.get(match[2])
            if found is None:
                raise params.missing(match[2])
            return found
        name = match[1]
        found = os.environ.get(SECRET_ENV_PREFIX + name)
        if found is None:
            raise MissingSecret(
                f"secret {name!r} is not set: {SECRET_ENV_PREFIX}{name} is missing from the "
                "environment of the process running the step"
            )
        used.add(found)
        return found

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _EITHER.sub(secret, item) if _OPEN in item or _PARAM_OPEN in item else item
        if isinstance(item, dict):
            for key, inner in item.items():
                item[key] = walk(inner)
        elif isinstance(item, list):
            item[:] = [walk(v) for v in item]
        return item

    revealed = walk(value)
    return revealed, Masker(used) if used else NO_SECRETS
