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
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

_EPSILON = timedelta(microseconds=1)


class CronSchedule:
    """The ticks of one cron expression in one time zone."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        self.expression = expression
        self.zone = ZoneInfo(timezone)
        hours = expression.split()[1]
        self._fixed_hours = hours != "*" and not hours.startswith("*/")
        """Hours named: a repeated wall time fires once (Vixie cron's rule)."""

    def after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment`."""
        return next(self.following(moment))

    def before(self, moment: datetime) -> datetime | None:
        """The last tick at or before `moment`, None when the expression never fired."""
        it = croniter(self.expression, moment.astimezone(self.zone) + _EPSILON)
        while True:
            try:
                local = it.get_prev(datetime)
            except (StopIteration, ValueError):  # pragma: no cover - croniter's floor
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
        """The ticks strictly after `moment`, endlessly."""
        it = croniter(self.expression, moment.astimezone(self.zone))
        while True:
            tick = self._tick(it.get_next(datetime))
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
