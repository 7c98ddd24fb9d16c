"""Options shared by several commands, injected by one decorator each."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import click

from engine.config import DATABASE_ENV, DEFAULT_DATABASE_URL

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Config:
    """What `--db` and `--runners` chose, with the store and registry built on first use."""

    db: str
    runners: tuple[str, ...] = ()
    _store: Any = field(default=None, repr=False)

    def store(self) -> Any:
        if self._store is None:
            from engine.store import Store

            self._store = Store(self.db)
        return self._store

    def registry(self) -> Any:
        from engine.registry import discover

        return discover(self.runners)


class _InstanceId(click.ParamType[int]):
    """An instance id: an integer (else a usage error); one no database can hold (below 1 or
    beyond BIGINT) is an unknown id, as any other that does not exist (exit 1)."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        number = value if isinstance(value, int) else click.INT.convert(value, param, ctx)
        if not 1 <= number < 2**63:
            from engine.errors import InstanceNotFound

            raise InstanceNotFound(f"no instance with id {number}")
        return int(number)


INSTANCE_ID = _InstanceId()


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_LONGEST = timedelta(days=36_500)


class _Duration(click.ParamType[timedelta]):
    """A span of time: a whole number and a unit, `30d`, `12h`, `90m` or `3600s`; anything else,
    zero, or more than 100 years is a usage error (exit 2)."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        found = re.fullmatch(r"(\d{1,9})([smhd])", str(value).strip())
        if found is None:
            self.fail(
                f"{value!r} is not a duration: a whole number and a unit, s, m, h or d "
                "(30d, 12h, 90m, 3600s)",
                param,
                ctx,
            )
        span = timedelta(**{_UNITS[found[2]]: int(found[1])})
        if not timedelta(0) < span <= _LONGEST:
            self.fail(f"{value!r} must be more than 0 and at most 36500d", param, ctx)
        return span


DURATION = _Duration()

runners_option = click.option(
    "--runners",
    "runners",
    multiple=True,
    metavar="MODULE|PATH",
    help="Extra runner modules or folders (also $ENGINE_RUNNERS, comma-separated).",
)


def pass_config(fn: F) -> F:
    """Add `--db` and `--runners` and pass the command a `Config` as `config`."""

    @click.option(
        "--db",
        envvar=DATABASE_ENV,
        default=DEFAULT_DATABASE_URL,
        show_default=True,
        help=f"Database URL (or ${DATABASE_ENV}).",
    )
    @runners_option
    @functools.wraps(fn)
    def wrapper(*args: Any, db: str, runners: tuple[str, ...], **kwargs: Any) -> Any:
        return fn(*args, config=Config(db, runners), **kwargs)

    return wrapper  # type: ignore[return-value]


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON on stdout and nothing else there."
)


def background_options(fn: F) -> F:
    """`--max-instances`, `--grace`, `--no-recover` and `--misfire-grace`, for the long-running
    commands (`schedule`, `serve`), which run instances and the cron scheduler."""
    fn = click.option(
        "--misfire-grace",
        type=click.FloatRange(0),
        default=60.0,
        show_default=True,
        help="Seconds a tick may be seen late and still be on time; older ones were "
        "missed and follow `catchup`.",
    )(fn)
    fn = click.option(
        "--no-recover",
        "no_recover",
        is_flag=True,
        help="Do not adopt instances whose process died (see docs/operations.md, Recovery).",
    )(fn)
    fn = click.option(
        "--grace",
        type=click.FloatRange(0),
        default=30.0,
        show_default=True,
        help="On SIGTERM, seconds running instances get to finish before they are cancelled "
        "(resumable).",
    )(fn)
    return click.option(
        "--max-instances",
        type=click.IntRange(1, 256),
        default=4,
        show_default=True,
        help="Instances run at once; the rest wait, pending.",
    )(fn)
