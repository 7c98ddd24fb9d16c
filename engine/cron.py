"""Cron arithmetic: a definition's ticks, as UTC instants, in its IANA time zone.

croniter computes the wall-clock times; this module settles what they mean across daylight
saving changes, as Vixie cron does:

- A wall time that a spring-forward gap skips fires at the first instant after the gap (02:30
  on a night that jumps from 02:00 to 03:00 fires at 03:00), so a daily run is never lost.
- A wall time that a fall-back repeats fires once, at its first occurrence, when the expression
  names its hours (`30 1 * * *`); an expression that runs every hour (`*/15 * * * *`) fires in
  both repeated hours, since it means elapsed time.

Ticks are UTC instants: that is what a tick claim is unique on, and what `run.scheduled_for`
carries (with the zone's offset) into templates.

Shorthands (`@daily`, ...) are expanded to their five fields before anything reads the fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

_EPSILON = timedelta(microseconds=1)

SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""croniter's shorthands, in its own five-field form (read case-insensitively, as croniter does)."""

_REFERENCE = datetime(2000, 1, 1)
"""Where the search for a first tick starts. croniter looks 50 years ahead, more than the
28-year cycle in which every day of the month falls on every weekday of every month."""


def expand(expression: str) -> str:
    """The five fields of a shorthand; any other expression unchanged."""
    return SHORTHANDS.get(expression.strip().lower(), expression)


def problem(expression: str) -> str | None:
    """Why `expression` cannot be scheduled, or None when it can.

    An expression that no calendar date matches (`0 0 30 2 *`: 30 February) is refused here,
    since croniter only finds that out when asked for a tick. The year field, if any, is left
    out of that check: whether a year is still to come depends on when one asks, and a stored
    definition must load the same any day; a schedule whose years are past just has no tick.
    """
    fields = expand(expression)
    if not croniter.is_valid(fields):
        return f"invalid cron expression {expression!r}"
    try:
        croniter(" ".join(fields.split()[:6]), _REFERENCE).get_next(datetime)
    except CroniterBadDateError:
        return f"cron expression {expression!r} never fires: no calendar date matches it"
    return None


class CronSchedule:
    """The ticks of one cron expression in one time zone."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        self.expression = expand(expression)
        self.zone = ZoneInfo(timezone)
        hours = self.expression.split()[1]
        self._fixed_hours = hours != "*" and not hours.startswith("*/")
        """Hours named: a repeated wall time fires once (Vixie cron's rule)."""

    def after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after `moment`, None when the expression never fires again."""
        return next(self.following(moment), None)

    def before(self, moment: datetime) -> datetime | None:
        """The last tick at or before `moment`, None when the expression never fired."""
        it = croniter(self.expression, moment.astimezone(self.zone) + _EPSILON)
        while True:
            try:
                local = it.get_prev(datetime)
            except CroniterBadDateError:  # croniter's floor, or years that never came
                return None
            tick = self._tick(local)
            if tick is not None:
                return tick

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Every tick in [start, end], in order."""
        for tick in self.following(start - _EPSILON):
            if tick > end:
                return
            yield tick

    def following(self, moment: datetime) -> Iterator[datetime]:
        """The ticks strictly after `moment`, until the expression's years (if named) are past."""
        it = croniter(self.expression, moment.astimezone(self.zone))
        while True:
            try:
                local = it.get_next(datetime)
            except CroniterBadDateError:
                return
            tick = self._tick(local)
            if tick is not None and tick > moment:
                yield tick

    def _tick(self, local: datetime) -> datetime | None:
        """The UTC instant of a local tick; None for the second occurrence of a repeated wall
        time when the hours are fixed."""
        tick = local.astimezone(UTC)
        if self._fixed_hours:
            wall = tick.astimezone(self.zone).replace(tzinfo=None)
            first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
            if first != tick:
                return None
        return tick
