"""The cron scheduler: fires each tick of each definition once, however many schedulers run.

Every scheduler computes the due ticks itself and claims each one in the database (a row unique
per definition and tick, see `store/ticks.py`); the one whose claim lands runs the tick, the
others move on. Correctness needs no lock service and no elected leader, so schedulers may be
started anywhere for availability.

Where a starting scheduler takes over is the latest tick any scheduler claimed. Ticks older than
`misfire_grace` were missed (no scheduler ran) and follow the definition's `catchup`:
`none` records the latest missed tick as skipped, `latest` runs it, `all` runs every one. A tick
that comes while the definition's previous scheduled run still runs follows `overlap`: `skip`
records it as skipped with the reason, `queue` creates its instance pending, to be started by
whichever scheduler sees the previous one end, and `allow` runs it at once.

Nothing one definition does stops the others: a definition whose round fails, for any reason,
is logged when its error starts or changes and tried again next round.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from engine import metrics
from engine.background import BackgroundRunner
from engine.cron import CronSchedule
from engine.definition import LoadedDefinition
from engine.errors import EngineError, ParamsError, ScheduleError, TickTaken
from engine.health import SchedulerHealth
from engine.registry import JobRegistry
from engine.service import BatchService, PreparedRun
from engine.status import InstanceStatus, Trigger
from engine.store.ticks import ActiveRun
from engine.store.types import utcnow

log = logging.getLogger("engine.scheduler")
_TINY = timedelta(microseconds=1)

Launch = Callable[[PreparedRun, int], None]
"""Runs a created (pending) instance in the background."""

MAX_CATCHUP_PER_ROUND = 1000
"""With `catchup: all`, ticks claimed per definition per round, so that a long backlog does
not stop the other definitions or a shutdown."""
IDLE_SECONDS = 5.0
"""Longest wait between rounds: how soon a queued tick starts after its predecessor ended in
another process."""
MAX_BACKOFF_SECONDS = 30.0
"""Longest wait after a round in which every definition failed (the database is likely down)."""


def process_name(role: str) -> str:
    """Who claimed a tick: the role, host, pid and a nonce."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def schedulable(definitions: Iterable[LoadedDefinition]) -> list[LoadedDefinition]:
    """The definitions with a cron. Refuses (ParamsError) one whose params cannot be resolved
    without input, since a tick gives none, and (ScheduleError) a list without any cron."""
    scheduled = [loaded for loaded in definitions if loaded.definition.cron]
    problems = []
    for loaded in scheduled:
        try:
            BatchService.prepare(loaded, {})
        except ParamsError as error:
            problems += [f"{loaded.file}: a cron run gets no params: {e}" for e in error.errors]
    if problems:
        raise ParamsError(problems)
    if not scheduled:
        raise ScheduleError("no definition has a cron")
    return scheduled


class Scheduler:
    """Fires the cron ticks of definitions through one `BatchService`.

    Args:
        definitions: the definitions to schedule; those without `cron` are ignored.
        launch: runs a created instance in the background (`BackgroundRunner.launch`); a
            queued instance may be launched again each round until it starts.
        clock: the current time (UTC, aware); tests pass a fake one and call `poll`.
        misfire_grace: how late (seconds) a tick may be seen and still count as on time.
        health: where each round's outcome is reported (`/healthz` reads it).
    """

    def __init__(
        self,
        service: BatchService,
        definitions: Iterable[LoadedDefinition],
        registry: JobRegistry,
        launch: Launch,
        clock: Callable[[], datetime] = utcnow,
        misfire_grace: float = 60.0,
        health: SchedulerHealth | None = None,
    ) -> None:
        self.service = service
        self.registry = registry
        self.schedules = [
            (loaded, CronSchedule(loaded.definition.cron, loaded.definition.timezone))
            for loaded in definitions
            if loaded.definition.cron
        ]
        self.owner = process_name("scheduler")
        self.clock = clock
        self.grace = timedelta(seconds=misfire_grace)
        self.launch = launch
        self.wake = threading.Event()
        """Set to start a round early (an instance of ours ended: a queued tick may start)."""
        self.health = health or SchedulerHealth()
        self._warned: set[int] = set()
        self._announced: set[int] = set()
        self._failing: dict[str, str] = {}
        """The error of each definition whose last round failed, as logged."""

    def run(self, stop: threading.Event) -> None:
        """Run rounds until `stop` is set. Stopping the instances launched is the launcher's
        owner's business."""
        names = ", ".join(
            f"{loaded.name} ({loaded.definition.cron})" for loaded, _ in self.schedules
        )
        log.info("scheduler %s started for %s", self.owner, names or "no cron definitions")
        backoff = 1.0
        while not stop.is_set():
            try:
                due = self.poll(stop)
                backoff = 1.0
            except Exception as exc:  # the loop outlives any error
                _log_failure(exc, "round failed, retrying in %.0f s", backoff)
                due = self.clock() + timedelta(seconds=backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            self._sleep_until(due, stop)
        log.info("scheduler stopping: no new ticks are claimed")

    def _sleep_until(self, due: datetime, stop: threading.Event) -> None:
        """Wait for `due` (at most IDLE_SECONDS), waking early on `stop` or `wake`."""
        deadline = time.monotonic() + min((due - self.clock()).total_seconds(), IDLE_SECONDS)
        while not stop.is_set() and not self.wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            stop.wait(min(left, 0.1))
        self.wake.clear()

    def poll(self, stop: threading.Event | None = None) -> datetime:
        """One round: fire every due tick, start queued instances whose turn came.

        Returns when the next tick is due. A definition whose round fails, whatever the error,
        is skipped until the next round; the others go on.

        Raises:
            ScheduleError: every definition failed (likely the database): the caller backs off.
        """
        now = self.clock()
        nexts: list[datetime] = []
        failed: dict[str, Exception] = {}
        for loaded, schedule in self.schedules:
            if stop is not None and stop.is_set():
                return now
            try:
                for tick in self._due(loaded, schedule, now):
                    if stop is not None and stop.is_set():
                        break
                    self.fire(loaded, tick, Trigger.cron)
                self._start_queued(loaded)
                following = schedule.after(now)
            except Exception as exc:  # one definition's failure is not the others'
                failed[loaded.name] = exc
                continue
            if following is not None:
                nexts.append(following)
        self._report(failed)
        if failed and len(failed) == len(self.schedules):
            last = _first_line(next(reversed(failed.values())))
            raise ScheduleError(f"every definition failed, the last with: {last}")
        return min(nexts, default=now + timedelta(seconds=IDLE_SECONDS))

    def _report(self, failed: dict[str, Exception]) -> None:
        """Log a definition's failure when it starts or its error changes, and its recovery;
        then tell `health`."""
        errors = {name: f"{type(e).__name__}: {_first_line(e)}" for name, e in failed.items()}
        for name, exc in failed.items():
            if self._failing.get(name) != errors[name]:
                _log_failure(exc, "%s: round failed, retried each round", name)
        for name in self._failing.keys() - errors.keys():
            log.info("%s: round succeeded again", name)
        self._failing = errors
        self.health.round_done(errors)

    def _due(
        self, loaded: LoadedDefinition, schedule: CronSchedule, now: datetime
    ) -> Iterable[datetime]:
        """The ticks to claim now, after the catch-up policy."""
        on_time_from = now - self.grace
        last = self.service.last_tick(loaded.name)
        if last is None:  # never scheduled: the latest tick within the grace, if any, is due
            latest = schedule.before(now)
            last = latest - _TINY if latest is not None and latest >= on_time_from else now
        missed = schedule.before(on_time_from - _TINY)
        if missed is None or missed <= last:
            return schedule.between(max(last, on_time_from) + _TINY, now)
        catchup = loaded.definition.catchup
        if catchup == "all":
            ticks = schedule.between(last + _TINY, now)
            return itertools.islice(ticks, MAX_CATCHUP_PER_ROUND)
        log.info(
            "%s: ticks up to %s were missed while no scheduler ran (catchup: %s)",
            loaded.name,
            missed.isoformat(),
            catchup,
        )
        on_time = schedule.between(on_time_from, now)
        if catchup == "latest":
            return itertools.chain([missed], on_time)
        why = "missed while no scheduler ran (catchup: none)"
        self._skip(loaded, missed, Trigger.cron, "missed", why)
        return on_time

    def fire(self, loaded: LoadedDefinition, tick: datetime, trigger: Trigger) -> int | None:
        """Claim `tick` and act on it by the overlap policy; the instance id when one was
        created by this claim, None when skipped or claimed elsewhere."""
        active = self.live_runs(loaded.name)
        overlap = loaded.definition.overlap
        if active and overlap == "skip":
            run = active[0]
            why = f"overlap: instance {run.id} is still {run.status}"
            self._skip(loaded, tick, trigger, "overlap", why)
            return None
        try:
            prepared = self.service.prepare(loaded, {}, trigger, tick)
            instance_id = self.service.start(prepared, tick_claimed_by=self.owner)
        except TickTaken:
            return None
        except EngineError as exc:  # the params cannot be resolved for this tick
            self._skip(loaded, tick, trigger, "unstartable", f"cannot start: {exc}")
            return None
        metrics.recorder().tick_claimed(loaded.name)
        if active and overlap == "queue":
            log.info(
                "%s tick %s: instance %d queued behind instance %d",
                loaded.name,
                tick.isoformat(),
                instance_id,
                active[-1].id,
            )
            return instance_id
        log.info("%s tick %s: instance %d started", loaded.name, tick.isoformat(), instance_id)
        self.launch(prepared, instance_id)
        return instance_id

    def live_runs(self, name: str) -> list[ActiveRun]:
        """Scheduled instances of `name` that a live process runs or that wait their turn."""
        live = []
        for run in self.service.scheduled_runs(name):
            if run.abandoned:
                if run.id not in self._warned:
                    self._warned.add(run.id)
                    log.warning(
                        "%s: instance %d was abandoned by its process; it blocks no "
                        "tick (resume it with `engine resume %d`)",
                        name,
                        run.id,
                        run.id,
                    )
                continue
            live.append(run)
        return live

    def _skip(
        self,
        loaded: LoadedDefinition,
        tick: datetime,
        trigger: Trigger,
        reason: metrics.SkipReason,
        why: str,
    ) -> None:
        """Record the tick as skipped, `why` in words; `reason` is the word metrics count."""
        try:
            self.service.skip_tick(loaded.name, tick, trigger, self.owner, why)
        except TickTaken:
            return
        metrics.recorder().tick_skipped(loaded.name, reason)
        log.warning("%s tick %s skipped: %s", loaded.name, tick.isoformat(), why)

    def _start_queued(self, loaded: LoadedDefinition) -> None:
        """Start the oldest pending scheduled instance once none runs (all of them with
        `overlap: allow`). Pending ones are queued ticks, or ticks whose scheduler died between
        creating and starting them; whoever takes one first runs it."""
        active = self.live_runs(loaded.name)
        pending = [r for r in active if r.status == InstanceStatus.pending]
        if not pending:
            return
        if loaded.definition.overlap != "allow":
            if len(pending) < len(active):
                return
            pending = pending[:1]
        for run in pending:
            if run.id not in self._announced:
                self._announced.add(run.id)
                log.info("%s: starting queued instance %d", loaded.name, run.id)
            self.launch(self.service.stored_run(run.id, self.registry), run.id)


def _log_failure(exc: Exception, message: str, *args: object) -> None:
    """Log `message` and the error's first line; the whole traceback when the error is neither
    the database's nor one the engine raises on purpose, since that is a bug to report."""
    expected = isinstance(exc, (SQLAlchemyError, EngineError))
    level = logging.WARNING if expected else logging.ERROR
    log.log(level, message + ": %s", *args, _first_line(exc), exc_info=None if expected else exc)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def scheduling_into(
    runner: BackgroundRunner,
    definitions: Iterable[LoadedDefinition],
    registry: JobRegistry,
    misfire_grace: float,
    health: SchedulerHealth | None = None,
) -> Scheduler:
    """The scheduler of a long-running process: it launches into `runner`'s slots, and wakes as
    soon as one of them frees (a queued tick may start)."""
    scheduler = Scheduler(
        runner.service,
        definitions,
        registry,
        runner.launch,
        misfire_grace=misfire_grace,
        health=health,
    )
    runner.on_end = scheduler.wake.set
    return scheduler
