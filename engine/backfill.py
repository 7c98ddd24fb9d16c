"""Backfill: fill a past range of cron ticks, in order, each tick's instance run once.

A backfill is done only when every tick of its range has an instance that succeeded, so it
never skips: a tick nobody claimed waits for any overlapping scheduled run to end and then runs;
a tick a scheduler skipped is taken over; a tick another process is running is waited for, and
run here if that process dies; a failed instance is reported, or resumed with `rerun_failed`. A
tick whose instance was pruned ran: it is reported `pruned`, never run again.
Every claim is a conditional write, so racing backfills and schedulers run each tick once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from engine.cron import CronSchedule
from engine.definition import LoadedDefinition
from engine.errors import InstanceTaken, LeaseLost, ResumeRefused, ScheduleError, TickTaken
from engine.execution import Cancellation, Listener
from engine.registry import JobRegistry
from engine.scheduler import process_name
from engine.service import BatchService
from engine.status import InstanceStatus, Trigger
from engine.store import InstanceView
from engine.store.ticks import PRUNED, TickView
from engine.store.types import utcnow

WAIT_SECONDS = 0.5
"""How often a waiting tick looks whether the run it waits for has ended."""


@dataclass(frozen=True)
class TickOutcome:
    """What became of one tick of the range."""

    tick: datetime
    status: str
    """The end status of the tick's instance; `not run` when the backfill stopped first;
    `pruned` when `engine runs prune` deleted its instance (how it ended is gone with it)."""
    how: str
    """`ran`, `took over` (a skipped tick), `rerun` (a failed one, resumed), `recovered` (its
    process had died), `waited` (another process ran it), `earlier` (it had ended before),
    `stopped` (by a signal, before it ran) or `lost` (this process stalled past its lease)."""
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


class Backfill:
    """Fills one definition's range; `stop.cancel(reason)` (a signal) ends it after the
    running instance is cancelled."""

    def __init__(
        self,
        service: BatchService,
        loaded: LoadedDefinition,
        registry: JobRegistry,
        rerun_failed: bool = False,
        listener: Listener | None = None,
        stop: Cancellation | None = None,
    ) -> None:
        self.service = service
        self.loaded = loaded
        self.registry = registry
        self.rerun_failed = rerun_failed
        self.listener = listener
        self.stop = stop or Cancellation()
        self.owner = process_name("backfill")
        self._running: Cancellation | None = None
        self.stop.subscribe(self._forward_stop)

    def run(
        self, start: datetime, end: datetime, report: Callable[[TickOutcome], None]
    ) -> list[TickOutcome]:
        """Fill [start, end] in order; the outcomes so far when stopped or a lease is lost."""
        outcomes: list[TickOutcome] = []
        for tick in ticks_in_range(self.loaded, start, end):
            outcome = self._fill(tick)
            outcomes.append(outcome)
            report(outcome)
            if outcome.how in ("stopped", "lost"):
                break
        return outcomes

    def _fill(self, tick: datetime) -> TickOutcome:
        """Bring one tick to an ended instance, whoever runs it."""
        waited = False  # whether another process ran it while this one looked
        while True:
            if self.stop.reason:
                return TickOutcome(tick, "not run", "stopped", None, self.stop.reason)
            claim = self.service.tick(self.loaded.name, tick)
            try:
                if claim is not None and claim.status == PRUNED:
                    return TickOutcome(tick, PRUNED, "earlier", None, "its instance was pruned")
                if claim is None or claim.instance_id is None:
                    return self._start(tick, claim)
                if claim.status in (InstanceStatus.pending, InstanceStatus.running):
                    if claim.orphaned:
                        return self._resume(claim, "recovered")
                    waited = True
                    time.sleep(WAIT_SECONDS)
                    continue
                failed = claim.status in (InstanceStatus.failed, InstanceStatus.cancelled)
                if failed and self.rerun_failed and not waited:
                    return self._resume(claim, "rerun")
                return _ended(claim, "waited" if waited else "earlier")
            except (TickTaken, InstanceTaken, ResumeRefused):
                waited = True  # another process got there first: look at what it does
                continue
            except LeaseLost as lost:
                instance = claim.instance_id if claim else None
                return TickOutcome(tick, "lost", "lost", instance, str(lost))

    def _start(self, tick: datetime, skipped: TickView | None) -> TickOutcome:
        """Run a tick nobody ran, once no overlapping scheduled run is live."""
        if not self._overlap_ended():
            return TickOutcome(tick, "not run", "stopped", None, self.stop.reason or "")
        prepared = self.service.prepare(self.loaded, {}, Trigger.backfill, tick)
        view = self._watched(
            lambda c: self.service.run(
                prepared,
                self.listener,
                c,
                tick_claimed_by=self.owner,
                over_skipped=skipped is not None,
            )
        )
        detail = f"skipped earlier: {skipped.skipped_reason}" if skipped else ""
        return _outcome(tick, view, "took over" if skipped else "ran", detail)

    def _resume(self, claim: TickView, how: str) -> TickOutcome:
        assert claim.instance_id is not None
        taken = self.service.take(claim.instance_id, self.registry)
        view = self._watched(lambda c: self.service.run_taken(taken, self.listener, c))
        return _outcome(claim.scheduled_for, view, how, f"was {claim.status}")

    def _watched(self, run: Callable[[Cancellation], InstanceView]) -> InstanceView:
        """Run one instance with its own cancellation, which the backfill's stop reaches: an
        `engine cancel` of that instance ends it, not the backfill."""
        self._running = Cancellation()
        if self.stop.reason:
            self._running.cancel(self.stop.reason)
        try:
            return run(self._running)
        finally:
            self._running = None

    def _forward_stop(self) -> None:
        running = self._running
        if running is not None and self.stop.reason:
            running.cancel(self.stop.reason)

    def _overlap_ended(self) -> bool:
        """Wait while another scheduled run of the definition is live (unless `overlap` is
        `allow`): a backfill's tick waits where a scheduler's would be skipped. False when
        stopped while waiting."""
        if self.loaded.definition.overlap == "allow":
            return True
        while any(not r.abandoned for r in self.service.scheduled_runs(self.loaded.name)):
            if self.stop.reason:
                return False
            time.sleep(WAIT_SECONDS)
        return not self.stop.reason


def _outcome(tick: datetime, view: InstanceView, how: str, detail: str) -> TickOutcome:
    error = view.error or ""
    return TickOutcome(tick, view.status, how, view.id, "; ".join(filter(None, (detail, error))))


def _ended(claim: TickView, how: str) -> TickOutcome:
    if claim.status == InstanceStatus.succeeded:
        detail = ""
    else:
        hint = "--rerun-failed resumes it" if how == "earlier" else ""
        detail = "; ".join(filter(None, (claim.error, hint)))
    return TickOutcome(claim.scheduled_for, claim.status or "", how, claim.instance_id, detail)
