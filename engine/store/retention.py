"""Retention: deleting ended instances that finished before a cutoff, with their attempts and
log lines.

Instances go in batches, each its own short transaction, so that no lock is held for long and
the executors, schedulers and servers writing other instances meanwhile only ever wait for one
batch. Only ended instances go; one that is pending or running stays, however old. The
definition versions they ran stay too: other instances share them.

A pruned instance's tick row stays, its `instance_id` set to NULL (and no `skipped_reason`: a
pruned tick, not a skipped one). The tick's unique row is what stops any scheduler or backfill
from claiming it again, and the latest tick row is where a starting scheduler takes over:
deleting old tick rows would move that point back (with `catchup: all`, every pruned tick would
run again) and make a backfill of the range run ticks that did run. A tick row is small; the
instance, attempts and log lines it pointed at are what grow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, update

from engine.status import ENDED
from engine.store.tables import instances, step_logs, step_results, ticks

BATCH_SIZE = 500
"""Instances deleted per transaction."""


@dataclass(frozen=True)
class PruneCounts:
    """What a prune deleted (or, in a dry run, would delete)."""

    instances: int = 0
    attempts: int = 0
    """Step attempt rows, those of mapped items included."""
    log_lines: int = 0

    def __add__(self, other: PruneCounts) -> PruneCounts:
        return PruneCounts(
            self.instances + other.instances,
            self.attempts + other.attempts,
            self.log_lines + other.log_lines,
        )


def _prunable(before: datetime, definition: str | None) -> Any:
    """The instances a prune deletes: ended, and finished before `before`."""
    condition = instances.c.status.in_([s.value for s in ENDED]) & (
        instances.c.finished_at < before
    )
    if definition is not None:
        condition &= instances.c.definition_name == definition
    return condition


class Retention:
    """Deletes old instances and everything that hangs off them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def count(self, before: datetime, definition: str | None = None) -> PruneCounts:
        """What `prune(before, definition)` would delete now; deletes nothing."""
        chosen = select(instances.c.id).where(_prunable(before, definition))
        with self.engine.connect() as conn:
            return PruneCounts(
                _count(conn, instances, instances.c.id.in_(chosen)),
                _count(conn, step_results, step_results.c.batch_instance_id.in_(chosen)),
                _count(conn, step_logs, step_logs.c.batch_instance_id.in_(chosen)),
            )

    def prune(
        self, before: datetime, definition: str | None = None, batch_size: int = BATCH_SIZE
    ) -> PruneCounts:
        """Delete the ended instances of `definition` (all, when None) that finished before
        `before`, `batch_size` per transaction, until none is left."""
        total = PruneCounts()
        while True:
            with self.engine.begin() as conn:
                done = _prune_batch(conn, _prunable(before, definition), batch_size)
            total += done
            if done.instances == 0:
                return total


def _prune_batch(conn: Connection, prunable: Any, limit: int) -> PruneCounts:
    """Delete up to `limit` prunable instances, children first, in the caller's transaction."""
    # Unordered: any `limit` of them, found in the (status, finished_at) index; an order would
    # sort every prunable instance in each batch.
    chosen = select(instances.c.id).where(prunable).limit(limit).with_for_update(skip_locked=True)
    # A write that changes nothing, first in the transaction: it takes the database's write lock
    # on SQLite (whose driver runs a SELECT outside the transaction) and the rows' locks on
    # PostgreSQL (skipping rows another prune holds), so that the instances chosen are still
    # ended when deleted: a racing `engine resume` either takes one before, or finds it gone.
    ids = list(
        conn.execute(
            update(instances)
            .where(instances.c.id.in_(chosen))
            .values(status=instances.c.status)
            .returning(instances.c.id)
        ).scalars()
    )
    if not ids:
        return PruneCounts()
    log_lines = conn.execute(delete(step_logs).where(step_logs.c.batch_instance_id.in_(ids)))
    attempts = conn.execute(delete(step_results).where(step_results.c.batch_instance_id.in_(ids)))
    conn.execute(update(ticks).where(ticks.c.instance_id.in_(ids)).values(instance_id=None))
    conn.execute(delete(instances).where(instances.c.id.in_(ids)))
    return PruneCounts(len(ids), attempts.rowcount, log_lines.rowcount)


def _count(conn: Connection, table: Any, where: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(where)).scalar_one())
