"""Recovery: the long-running processes (`engine serve`, `engine schedule`) adopt the instances
no live process holds any more, so that a crash strands nothing.

An instance is an orphan once its lease expired: a running one whose process died or stalled
(it is claimed as `engine resume` claims it, and resumed: what succeeded is kept), or a pending
one whose creating process died before starting it (it is started). Each process looks every
quarter lease (between 0.5 and 5 seconds) and takes only as many orphans as it has free slots,
so that replicas share them; the adoption is one conditional UPDATE, so each orphan is taken by
exactly one. An instance abandoned more than `ENGINE_MAX_RECOVERIES` times is failed instead:
its runner may be what kills the process, and adopting it again would crash-loop the cluster.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from engine import metrics
from engine.background import BackgroundRunner
from engine.config import MAX_RECOVERIES_ENV, number
from engine.errors import EngineError
from engine.lease import lease_seconds
from engine.periodic import Periodic
from engine.registry import JobRegistry
from engine.secret_params import SecretParamsLost
from engine.store.leases import Orphan

log = logging.getLogger(__name__)


class Recovery(Periodic):
    """A thread adopting orphaned instances into `runner`'s free slots until stopped."""

    def __init__(self, runner: BackgroundRunner, registry: JobRegistry) -> None:
        super().__init__("engine-recovery", min(max(lease_seconds() / 4, 0.5), 5.0))
        self.runner = runner
        self.registry = registry
        self.max_recoveries = int(number(MAX_RECOVERIES_ENV))
        self._unrunnable: set[int] = set()
        """Orphans this process cannot load (a runner it lacks): warned about once."""

    def tick(self) -> None:
        self.adopt_orphans()

    def adopt_orphans(self) -> int:
        """Adopt as many orphans as there are free slots; return how many were adopted."""
        free = self.runner.free_slots()
        if not free:
            return 0
        store = self.runner.service.store
        adopted = 0
        # More candidates than slots: a replica racing for the first ones takes later ones.
        for orphan in store.leases.orphans(4 * free + len(self._unrunnable)):
            if adopted == free or self.stopping:
                break
            if orphan.id in self._unrunnable or self.runner.holds(orphan.id):
                continue
            if orphan.status == "running" and orphan.recoveries >= self.max_recoveries:
                if store.leases.give_up(orphan.id, self.max_recoveries):
                    metrics.recorder().recovery("given_up")
                    log.error(
                        "instance %d abandoned again after %d recoveries: failed, not adopted",
                        orphan.id,
                        self.max_recoveries,
                    )
                continue
            adopted += self._adopt(orphan)
        return adopted

    def _adopt(self, orphan: Orphan) -> int:
        service = self.runner.service
        try:
            if orphan.status == "pending":
                prepared = service.adopt_pending(orphan.id, self.registry)
                if prepared is None:
                    return 0
                log.warning(
                    "recovery: starting instance %d, whose creating process died", orphan.id
                )
                self.runner.launch(prepared, orphan.id)
                metrics.recorder().recovery("started")
                return 1
            taken = service.adopt(orphan.id, self.registry, self.max_recoveries)
        except SecretParamsLost as exc:
            if exc.kept:  # sealed with a key this process lacks: one that has it may adopt it
                self._unrunnable.add(orphan.id)
                log.warning("recovery: instance %d cannot run here: %s", orphan.id, exc)
            elif service.store.leases.fail_orphan(orphan.id, f"not recovered: {exc}"):
                metrics.recorder().recovery("given_up")
                log.error("recovery: instance %d failed, not adopted: %s", orphan.id, exc)
            return 0
        except EngineError as exc:
            self._unrunnable.add(orphan.id)
            log.warning("recovery: instance %d cannot run here, left to others: %s", orphan.id, exc)
            return 0
        if taken is None:
            return 0
        log.warning(
            "recovery: resuming instance %d, whose process stopped (recovery %d of %d)",
            orphan.id,
            orphan.recoveries + 1,
            self.max_recoveries,
        )
        self.runner.launch_taken(taken)
        metrics.recorder().recovery("resumed")
        return 1


@contextlib.contextmanager
def recovering(runner: BackgroundRunner, registry: JobRegistry, enabled: bool) -> Iterator[None]:
    """Adopt orphans into `runner` while the block runs, unless disabled (`--no-recover`)."""
    if not enabled:
        yield
        return
    with Recovery(runner, registry):
        yield
