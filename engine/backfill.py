"""Backfill: run every cron tick of a past range, in order, each at most once.

Each tick is claimed like a scheduler's, so a tick that already ran (by a scheduler, an earlier
backfill, or a racing one) is reported, not run again. The definition's `overlap` applies
against scheduled runs of other processes: `skip` records the tick as skipped, `queue` waits
for them to end, `allow` runs beside them. The backfill's own ticks run one after another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from engine.cron import CronSchedule
from engine.definition import LoadedDefinition
from engine.errors import ScheduleError, TickTaken
from engine.execution import Cancellation, Listener
from engine.scheduler import process_name
from engine.service import BatchService
from engine.status import InstanceStatus, Trigger
from engine.store.ticks import TickView
from engine.store.types import utcnow

WAIT_SECONDS = 0.5
"""How often a queued tick looks whether the runs ahead of it have ended."""


@dataclass(frozen=True)
class TickOutcome:
    """What became of one tick of the range."""

    tick: datetime
    status: str
    """The instance's end status, `skipped`, or `claimed` when it had run before."""
    instance_id: int | None
    detail: str = ""


def ticks_in_range(loaded: LoadedDefinition, start: datetime, end: datetime) -> Iterator[datetime]:
    """The ticks of `loaded`'s cron in [start, end]; ScheduleError for an unusable range."""
    definition = loaded.definition
    if not definition.cron:
        raise ScheduleError(f"{loaded.name} has no cron: there are no ticks to backfill")
    if start > end:
        raise ScheduleError(f"--start {start.isoformat()} is after --end {end.isoformat()}")
    if end > utcnow():
        raise ScheduleError(
            f"--end {end.isoformat()} is in the future: backfill runs past ticks only "
            "(the scheduler runs the ones to come)"
        )
    return CronSchedule(definition.cron, definition.timezone).between(start, end)


def backfill(
    service: BatchService,
    loaded: LoadedDefinition,
    start: datetime,
    end: datetime,
    report: Callable[[TickOutcome], None],
    listener: Listener | None = None,
    cancellation: Cancellation | None = None,
) -> list[TickOutcome]:
    """Run the ticks in [start, end] in order; stop early when `cancellation` is cancelled."""
    owner = process_name("backfill")
    ticks = service.store.ticks
    outcomes: list[TickOutcome] = []

    def done(outcome: TickOutcome) -> None:
        outcomes.append(outcome)
        report(outcome)

    for tick in ticks_in_range(loaded, start, end):
        if cancellation is not None and cancellation.reason:
            break
        if (claim := ticks.find(loaded.name, tick)) is not None:
            done(_earlier(claim))
            continue
        reason = _overlap_wait(service, loaded, cancellation)
        if reason is not None:
            try:
                ticks.skip(loaded.name, tick, Trigger.backfill.value, owner, reason)
                done(TickOutcome(tick, "skipped", None, reason))
            except TickTaken:
                done(_earlier(_claim_of(service, loaded.name, tick)))
            continue
        prepared = service.prepare(loaded, {}, Trigger.backfill, tick)
        try:
            instance_id = service.start(prepared, tick_claimed_by=owner)
        except TickTaken:
            done(_earlier(_claim_of(service, loaded.name, tick)))
            continue
        view = service.execute(prepared, instance_id, listener, cancellation)
        done(TickOutcome(tick, view.status, instance_id, view.error or ""))
    return outcomes


def _overlap_wait(
    service: BatchService, loaded: LoadedDefinition, cancellation: Cancellation | None
) -> str | None:
    """Apply `overlap` against other scheduled runs: the reason to skip, or None to run."""
    overlap = loaded.definition.overlap
    while overlap != "allow":
        live = [r for r in service.store.ticks.active(loaded.name) if not r.abandoned]
        if not live:
            return None
        if overlap == "skip":
            return f"overlap: instance {live[0].id} is still {live[0].status}"
        if cancellation is not None and cancellation.reason:
            return f"not run: {cancellation.reason}"
        time.sleep(WAIT_SECONDS)
    return None


def _claim_of(service: BatchService, name: str, tick: datetime) -> TickView:
    claim = service.store.ticks.find(name, tick)
    assert claim is not None, "a claimed tick's row is never deleted"
    return claim


def _earlier(claim: TickView) -> TickOutcome:
    """The outcome of a tick someone else claimed."""
    tick = claim.scheduled_for
    if claim.instance_id is None:
        return TickOutcome(tick, "claimed", None, f"skipped earlier: {claim.skipped_reason}")
    verb = "claimed" if claim.status in (InstanceStatus.pending, InstanceStatus.running) else "ran"
    return TickOutcome(
        tick,
        "claimed",
        claim.instance_id,
        f"already {verb}: instance {claim.instance_id} is {claim.status}",
    )
