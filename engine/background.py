"""Instances run in the background of a long-lived process (`engine serve`, `engine schedule`),
a bounded number at once. The HTTP API and the scheduler hand a created or taken instance over
and return at once; the rest wait in order, `pending` in the database, until a slot frees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.errors import InstanceTaken, LeaseLost
from engine.execution import Cancellation
from engine.lease import Lease, lease_expiry
from engine.service import BatchService, PreparedRun, Taken
from engine.store import InstanceView

log = logging.getLogger(__name__)


@dataclass
class _Job:
    instance_id: int
    run: Callable[[Cancellation], InstanceView]
    lease: Lease | None = None
    """A claimed (resumed) instance's lease, renewed while it waits for a slot."""
    cancellation: Cancellation = field(default_factory=Cancellation)


class BackgroundRunner:
    """A pool of `max_instances` threads, each running one instance at a time to its end."""

    def __init__(self, service: BatchService, max_instances: int = 4) -> None:
        if max_instances < 1:
            raise ValueError("max_instances must be at least 1")
        self.service = service
        self.max_instances = max_instances
        self._lock = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._running: dict[int, _Job] = {}
        self._closed = False
        self.on_end: Callable[[], None] = lambda: None
        """Called after each instance ends (the scheduler's wake-up: a queued tick may start)."""
        self._threads = [
            threading.Thread(target=self._work, name=f"engine-instance-{n}", daemon=True)
            for n in range(max_instances)
        ]
        self._threads.append(
            threading.Thread(target=self._keep_leases, name="engine-leases", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    def launch(self, prepared: PreparedRun, instance_id: int) -> None:
        """Run a created (pending) instance when a slot is free; returns at once.

        The scheduler's `launch`. An instance already waiting or running here is not taken
        twice (the scheduler launches a queued tick again each round until it starts).
        """
        self._submit(
            _Job(instance_id, lambda c: self.service.execute(prepared, instance_id, None, c))
        )

    def launch_taken(self, taken: Taken) -> None:
        """Resume a taken instance when a slot is free; its lease is renewed meanwhile."""
        self._submit(
            _Job(
                taken.instance_id,
                lambda c: self.service.run_taken(taken, None, c),
                lease=taken.lease,
            )
        )

    def cancel(self, instance_id: int) -> None:
        """Stop an instance of this process, after `service.cancel`: a running one stops
        at once, a waiting one leaves the queue (a claimed one is then cancelled in the store)."""
        with self._lock:
            job = self._running.get(instance_id)
            if job is not None:
                job.cancellation.cancel("cancelled by engine cancel")
                return
            waiting = [j for j in self._queue if j.instance_id == instance_id]
            for job in waiting:
                self._queue.remove(job)
        for job in waiting:
            if job.lease is not None:
                self._release(job)
                self.service.cancel(instance_id)

    def holds(self, instance_id: int) -> bool:
        """Whether the instance runs or waits here."""
        with self._lock:
            return instance_id in self._running or any(
                j.instance_id == instance_id for j in self._queue
            )

    def free_slots(self) -> int:
        """How many more instances would start at once; 0 once stopping."""
        with self._lock:
            if self._closed:
                return 0
            return max(0, self.max_instances - len(self._running) - len(self._queue))

    def counts(self) -> tuple[int, int]:
        """(running, waiting) instances."""
        with self._lock:
            return len(self._running), len(self._queue)

    def drain(self, timeout: float) -> bool:
        """Wait until nothing runs or waits; False on timeout. For tests and shutdown."""
        with self._lock:
            return self._lock.wait_for(lambda: not (self._queue or self._running), timeout)

    def stop(self, grace: float) -> None:
        """Take nothing more; let running instances finish within `grace` seconds.

        Waiting instances are left resumable: created ones stay `pending`, claimed ones have
        their lease released at once. Instances still running after the grace period are
        cancelled, as `engine run` does on SIGTERM, and end `cancelled`: `engine resume` runs
        again what did not succeed.
        """
        with self._lock:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            self._lock.notify_all()
        for job in waiting:
            self._release(job)
        if waiting:
            log.warning("left %d waiting instance(s) to `engine resume`", len(waiting))
        with self._lock:
            if not self._lock.wait_for(lambda: not self._running, grace):
                ids = sorted(self._running)
                log.warning("grace period over: cancelling instance(s) %s", ids)
                for job in self._running.values():
                    job.cancellation.cancel(
                        f"stopped: not finished within {grace:g}s of shutdown; "
                        f"`engine resume {job.instance_id}` runs the rest"
                    )
                self._lock.wait_for(lambda: not self._running, 10.0)

    def _submit(self, job: _Job) -> None:
        with self._lock:
            if job.instance_id in self._running or any(
                j.instance_id == job.instance_id for j in self._queue
            ):
                return
            if not self._closed:
                self._queue.append(job)
                self._lock.notify()
                return
        log.warning("stopping: instance %d left for `engine resume`", job.instance_id)
        self._release(job)

    def _release(self, job: _Job) -> None:
        """Hand a waiting instance back: a claimed one's lease expires now, so any process
        may resume it; a created one stays pending, for another server to start once its
        pending lease expires."""
        if job.lease is not None:
            self.service.store.leases.release(job.instance_id, job.lease.owner)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                job = self._queue.popleft()
                self._running[job.instance_id] = job
            try:
                view = job.run(job.cancellation)
                log.log(
                    logging.INFO if view.status == "succeeded" else logging.WARNING,
                    "%s instance %d %s%s",
                    view.definition,
                    view.id,
                    view.status,
                    f": {view.error}" if view.error else "",
                )
            except InstanceTaken as taken:  # cancelled while waiting, or taken elsewhere
                log.info("%s", taken)
            except Exception:
                log.exception("instance %d: the engine failed", job.instance_id)
            finally:
                with self._lock:
                    del self._running[job.instance_id]
                    self._lock.notify_all()
                self.on_end()

    def _keep_leases(self) -> None:
        """Renew the leases of the instances waiting here for a slot (so that recovery
        elsewhere leaves them alone), and drop the claimed ones that `engine cancel` asked to
        stop meanwhile."""
        while True:
            with self._lock:
                if self._closed:
                    return
                waiting = list(self._queue)
            try:
                self._renew(waiting)
            except Exception as exc:  # the database is unreachable: try again next round
                log.warning("renewing the leases of waiting instances failed: %s", exc)
            time.sleep(0.5)

    def _renew(self, waiting: list[_Job]) -> None:
        created = [j.instance_id for j in waiting if j.lease is None]
        self.service.store.leases.keep_pending(created, lease_expiry())
        for job in waiting:
            if job.lease is None:
                continue
            try:
                cancel = job.lease.beat()
            except LeaseLost as lost:
                log.warning("%s", lost)
                with self._lock:
                    if job in self._queue:
                        self._queue.remove(job)
                continue
            if cancel:
                self.cancel(job.instance_id)
