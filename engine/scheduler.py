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
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from engine.cron import CronSchedule
from engine.definition import LoadedDefinition
from engine.errors import EngineError, ResumeRefused, TickTaken
from engine.executor import Cancellation
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


def process_name(role: str) -> str:
    """Who claimed a tick: the role, host, pid and a nonce."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Scheduler:
    """Fires the cron ticks of definitions through one `BatchService`.

    Args:
        definitions: the definitions to schedule; those without `cron` are ignored.
        launch: runs a created instance in the background; by default a thread each, which
            `run` stops on its way out.
        clock: the current time (UTC, aware); tests pass a fake one and call `poll`.
        misfire_grace: how late (seconds) a tick may be seen and still count as on time.
    """

    def __init__(
        self,
        service: BatchService,
        definitions: Iterable[LoadedDefinition],
        registry: JobRegistry,
        launch: Launch | None = None,
        clock: Callable[[], datetime] = utcnow,
        misfire_grace: float = 60.0,
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
        self.threads = ThreadLauncher(service) if launch is None else None
        self.launch: Launch = launch or self.threads  # type: ignore[assignment]
        self.wake = threading.Event()
        """Set to start a round early (an instance of ours ended: a queued tick may start)."""
        if self.threads:
            self.threads.on_end = self.wake.set
        self._warned: set[int] = set()

    def upcoming(self, count: int) -> dict[str, list[datetime]]:
        """The next `count` ticks of each definition, for `engine schedule --list`."""
        now = self.clock()
        return {
            loaded.name: list(itertools.islice(schedule.following(now), count))
            for loaded, schedule in self.schedules
        }

    def run(self, stop: threading.Event, stop_grace: float = 30.0) -> None:
        """Run rounds until `stop` is set; then let our instances finish within `stop_grace`
        seconds and cancel the rest (they stay resumable with `engine resume`)."""
        names = ", ".join(
            f"{loaded.name} ({loaded.definition.cron})" for loaded, _ in self.schedules
        )
        log.info("scheduler %s started for %s", self.owner, names or "no cron definitions")
        backoff = 1.0
        while not stop.is_set():
            try:
                due = self.poll(stop)
                backoff = 1.0
            except (SQLAlchemyError, EngineError) as exc:
                log.warning("round failed, retrying in %.0f s: %s", backoff, _first_line(exc))
                due, backoff = self.clock() + timedelta(seconds=backoff), min(backoff * 2, 30.0)
            self._sleep_until(due, stop)
        log.info("scheduler stopping: no new ticks are claimed")
        if self.threads:
            self.threads.stop(stop_grace)

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

        Returns when the next tick is due. A definition whose round fails is logged and tried
        again next round; the others go on.
        """
        now = self.clock()
        failed: list[Exception] = []
        for loaded, schedule in self.schedules:
            if stop is not None and stop.is_set():
                break
            try:
                for tick in self._due(loaded, schedule, now):
                    if stop is not None and stop.is_set():
                        break
                    self.fire(loaded, tick, Trigger.cron)
                self._start_queued(loaded)
            except (SQLAlchemyError, EngineError) as exc:
                log.warning("%s: round failed: %s", loaded.name, _first_line(exc))
                failed.append(exc)
        if failed and len(failed) == len(self.schedules):
            raise failed[-1]  # likely the database: the caller backs off
        nexts = [schedule.after(now) for _, schedule in self.schedules]
        return min(nexts, default=now + timedelta(seconds=IDLE_SECONDS))

    def _due(
        self, loaded: LoadedDefinition, schedule: CronSchedule, now: datetime
    ) -> Iterable[datetime]:
        """The ticks to claim now, after the catch-up policy."""
        on_time_from = now - self.grace
        last = self.service.store.ticks.last(loaded.name)
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
        self._skip(loaded, missed, Trigger.cron, "missed while no scheduler ran (catchup: none)")
        return on_time

    def fire(self, loaded: LoadedDefinition, tick: datetime, trigger: Trigger) -> int | None:
        """Claim `tick` and act on it by the overlap policy; the instance id when one was
        created by this claim, None when skipped or claimed elsewhere."""
        active = self.live_runs(loaded.name)
        overlap = loaded.definition.overlap
        if active and overlap == "skip":
            run = active[0]
            self._skip(loaded, tick, trigger, f"overlap: instance {run.id} is still {run.status}")
            return None
        try:
            prepared = self.service.prepare(loaded, {}, trigger, tick)
            instance_id = self.service.start(prepared, tick_claimed_by=self.owner)
        except TickTaken:
            return None
        except EngineError as exc:  # the params cannot be resolved for this tick
            self._skip(loaded, tick, trigger, f"cannot start: {exc}")
            return None
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
        for run in self.service.store.ticks.active(name):
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

    def _skip(self, loaded: LoadedDefinition, tick: datetime, trigger: Trigger, why: str) -> None:
        try:
            self.service.store.ticks.skip(loaded.name, tick, trigger.value, self.owner, why)
        except TickTaken:
            return
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
            if self.threads and run.id in self.threads.running:
                continue
            log.info("%s: starting queued instance %d", loaded.name, run.id)
            self.launch(self.service.stored_run(run.id, self.registry), run.id)


class ThreadLauncher:
    """Runs each instance in a thread of its own, and stops them on the way out."""

    def __init__(self, service: BatchService) -> None:
        self.service = service
        self.running: dict[int, Cancellation] = {}
        self.on_end: Callable[[], None] = lambda: None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __call__(self, prepared: PreparedRun, instance_id: int) -> None:
        cancellation = Cancellation()
        with self._lock:
            self.running[instance_id] = cancellation
            self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(
                target=self._run,
                args=(prepared, instance_id, cancellation),
                name=f"instance-{instance_id}",
                daemon=True,
            )
            self._threads.append(thread)
        thread.start()

    def _run(self, prepared: PreparedRun, instance_id: int, cancellation: Cancellation) -> None:
        try:
            view = self.service.execute(prepared, instance_id, cancellation=cancellation)
            level = logging.INFO if view.status == "succeeded" else logging.WARNING
            log.log(
                level,
                "%s instance %d %s%s",
                view.definition,
                instance_id,
                view.status,
                f": {view.error}" if view.error else "",
            )
        except ResumeRefused as exc:  # another scheduler started this queued instance first
            log.debug("%s", exc)
        except Exception:  # a broken store or executor must not stop the scheduler
            log.exception("instance %d: the engine failed", instance_id)
        finally:
            with self._lock:
                self.running.pop(instance_id, None)
            self.on_end()

    def stop(self, grace: float) -> None:
        """Wait up to `grace` seconds for running instances; cancel those still running."""
        deadline = utcnow() + timedelta(seconds=grace)
        for thread in self._alive():
            thread.join(max((deadline - utcnow()).total_seconds(), 0.0))
        with self._lock:
            left = dict(self.running)
        for instance_id, cancellation in left.items():
            cancellation.cancel(f"the scheduler stopped; resume with `engine resume {instance_id}`")
        for thread in self._alive():
            thread.join(10.0)

    def _alive(self) -> Sequence[threading.Thread]:
        with self._lock:
            return [t for t in self._threads if t.is_alive()]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
