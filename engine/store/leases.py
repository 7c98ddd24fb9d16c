"""Who runs an instance: taking, renewing and ending its lease, cancelling, and recovery.

Every change of hands is one conditional UPDATE, atomic on SQLite and PostgreSQL alike: of any
number of processes racing for an instance exactly one wins, and a write of a process that lost
the instance (the fence: status and `lease_owner`) changes nothing. A pending instance has a
lease too (an expiry, no owner), renewed while it waits for a slot, so that one whose creating
process died is told from one that is queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.engine import Connection

from engine.errors import InstanceNotFound, InstanceTaken, LeaseLost, ResumeRefused
from engine.status import ENDED, InstanceStatus
from engine.store.tables import instances, step_results
from engine.store.types import utcnow


@dataclass(frozen=True)
class Orphan:
    """An instance no live process holds: pending whose creator died, or running abandoned."""

    id: int
    status: str
    recoveries: int


def held_by(instance_id: int, owner: str, *statuses: str) -> Any:
    """The fence: the instance is in one of `statuses` and `owner` holds its lease."""
    return and_(
        instances.c.id == instance_id,
        instances.c.lease_owner == owner,
        instances.c.status.in_(statuses),
    )


def _expired(now: datetime) -> Any:
    return and_(instances.c.lease_expires_at.is_not(None), instances.c.lease_expires_at < now)


class InstanceLeases:
    """The lease of each instance, and the transitions that move it between processes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(self, instance_id: int, owner: str, expires: datetime) -> None:
        """Take a pending instance to run it; of several takers exactly one wins.

        Raises InstanceTaken for the others: another process runs it, or it was cancelled.
        """
        taken = self._update(
            and_(instances.c.id == instance_id, instances.c.status == "pending"),
            status="running",
            started_at=utcnow(),
            lease_owner=owner,
            lease_expires_at=expires,
        )
        if not taken:
            status = self._status(instance_id)
            raise InstanceTaken(f"instance {instance_id} is {status}: another process took it")

    def take(self, instance_id: int, owner: str, expires: datetime) -> None:
        """Take an instance to resume it (`engine resume`); exactly one of several wins.

        Takeable: pending, failed or cancelled instances, and running ones whose lease has
        expired (their process died). A person resuming starts the recovery count afresh.
        Raises ResumeRefused (or InstanceNotFound) for the losers.
        """
        takeable = or_(
            instances.c.status.in_(["pending", "failed", "cancelled"]),
            and_(instances.c.status == "running", _expired(utcnow())),
        )
        if self._update(
            and_(instances.c.id == instance_id, takeable),
            status="running",
            lease_owner=owner,
            lease_expires_at=expires,
            cancel_requested_at=None,
            finished_at=None,
            error=None,
            recoveries=0,
        ):
            return
        status = self._status(instance_id)
        if status == "succeeded":
            raise ResumeRefused(f"instance {instance_id} succeeded: nothing to resume")
        raise ResumeRefused(
            f"instance {instance_id} is {status} in a live process: it cannot be resumed twice"
        )

    def renew(self, instance_id: int, owner: str, expires: datetime) -> bool:
        """Extend `owner`'s lease; True when a cancel has been requested meanwhile.

        Raises LeaseLost when `owner` no longer holds the instance.
        """
        with self.engine.begin() as conn:
            row = conn.execute(
                update(instances)
                .where(held_by(instance_id, owner, "pending", "running"))
                .values(lease_expires_at=expires)
                .returning(instances.c.cancel_requested_at)
            ).first()
        if row is None:
            raise self.lost(instance_id, owner)
        return row.cancel_requested_at is not None

    def keep_pending(self, instance_ids: list[int], expires: datetime) -> None:
        """Renew the leases of pending instances waiting here for a slot, in one statement."""
        if instance_ids:
            self._update(
                and_(instances.c.id.in_(instance_ids), instances.c.status == "pending"),
                lease_expires_at=expires,
            )

    def finish(
        self, instance_id: int, owner: str, status: InstanceStatus, error: str | None
    ) -> None:
        """Record how an instance ended, if `owner` still holds it; else raise LeaseLost."""
        if not self._update(
            held_by(instance_id, owner, "running"),
            status=status.value,
            finished_at=utcnow(),
            error=error,
            lease_expires_at=None,
        ):
            raise self.lost(instance_id, owner)

    def release(self, instance_id: int, owner: str) -> None:
        """Give a taken instance back unrun: its lease expires now, any process may take it."""
        self._update(held_by(instance_id, owner, "running"), lease_expires_at=utcnow())

    def lost(self, instance_id: int, owner: str) -> LeaseLost:
        """The error for `owner` finding its instance taken: who has it now, or how it ended."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(instances.c.status, instances.c.lease_owner).where(
                    instances.c.id == instance_id
                )
            ).one()
        if row.status == "running":
            now = f"process {row.lease_owner} runs it now"
        else:
            now = f"it is {row.status} now"
        return LeaseLost(
            f"instance {instance_id}: this process ({owner}) lost its lease, {now}; "
            "it stopped and wrote nothing more"
        )

    def close_open_attempts(self, instance_id: int, owner: str, error: str) -> None:
        """End the attempts a dead process left running: they failed, with `error`.

        `owner` has just claimed the instance; LeaseLost if another process took it since.
        """
        with self.engine.begin() as conn:
            held = conn.execute(
                update(instances)
                .where(held_by(instance_id, owner, "running"))
                .values(lease_owner=owner)
            ).rowcount
            if held != 1:
                raise self.lost(instance_id, owner)
            _end_running_attempts(conn, instance_id, "failed", error)

    def request_cancel(self, instance_id: int) -> str:
        """Cancel an instance; return what was done, in words.

        A running instance is marked, and the process running it stops it at its next lease
        renewal. One that no process runs (pending, or abandoned) is cancelled here directly.
        Each is one conditional UPDATE, so a process taking the instance meanwhile cannot slip
        between reading its state and writing the cancel: the loser is tried again.
        """
        for _ in range(10):
            now = utcnow()
            live = and_(
                instances.c.status == "running",
                or_(instances.c.lease_expires_at.is_(None), instances.c.lease_expires_at >= now),
            )
            if self._update(and_(instances.c.id == instance_id, live), cancel_requested_at=now):
                return f"instance {instance_id}: cancel requested; the process running it stops it"
            unheld = or_(
                instances.c.status == "pending",
                and_(instances.c.status == "running", instances.c.lease_expires_at < now),
            )
            with self.engine.begin() as conn:
                cancelled = conn.execute(
                    update(instances)
                    .where(instances.c.id == instance_id, unheld)
                    .values(
                        status="cancelled",
                        finished_at=now,
                        lease_expires_at=None,
                        error="cancelled (no process was running it)",
                    )
                ).rowcount
                if cancelled:
                    _end_running_attempts(conn, instance_id, "cancelled", "cancelled")
                    return f"instance {instance_id} cancelled"
            status = self._status(instance_id)
            if status in ENDED:
                return f"instance {instance_id} already ended {status}: nothing to cancel"
        raise ResumeRefused(f"instance {instance_id} kept changing hands: try the cancel again")

    # -- recovery ---------------------------------------------------------------------------

    def orphans(self, limit: int) -> list[Orphan]:
        """Instances whose lease expired, oldest first: what recovery adopts."""
        query = (
            select(instances.c.id, instances.c.status, instances.c.recoveries)
            .where(instances.c.status.in_(["pending", "running"]), _expired(utcnow()))
            .order_by(instances.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [Orphan(r.id, r.status, r.recoveries) for r in conn.execute(query)]

    def adopt_pending(self, instance_id: int, expires: datetime) -> bool:
        """Take over waiting for an orphaned pending instance; False when another did first."""
        return self._update(
            and_(
                instances.c.id == instance_id,
                instances.c.status == "pending",
                _expired(utcnow()),
            ),
            lease_expires_at=expires,
        )

    def adopt(self, instance_id: int, owner: str, expires: datetime, max_recoveries: int) -> bool:
        """Take an abandoned instance to resume it, counting the recovery; False when another
        process did first or it has been recovered `max_recoveries` times already."""
        return self._update(
            and_(
                instances.c.id == instance_id,
                instances.c.status == "running",
                _expired(utcnow()),
                instances.c.recoveries < max_recoveries,
            ),
            lease_owner=owner,
            lease_expires_at=expires,
            cancel_requested_at=None,
            recoveries=instances.c.recoveries + 1,
        )

    def give_up(self, instance_id: int, max_recoveries: int) -> bool:
        """Fail an abandoned instance recovered `max_recoveries` times (its runner may be what
        kills its process), saying so; False when it is not, or no longer, such an instance."""
        now = utcnow()
        error = (
            f"abandoned again after {max_recoveries} recoveries (ENGINE_MAX_RECOVERIES): "
            f"not adopted again; `engine resume {instance_id}` runs it once more"
        )
        return self._fail_orphan(
            instance_id,
            now,
            error,
            instances.c.status == "running",
            instances.c.recoveries >= max_recoveries,
        )

    def fail_orphan(self, instance_id: int, error: str) -> bool:
        """Fail an orphan (pending or abandoned) that no process can run, saying why; False
        when it is not, or no longer, an orphan."""
        now = utcnow()
        return self._fail_orphan(
            instance_id, now, error, instances.c.status.in_(["pending", "running"])
        )

    def _fail_orphan(self, instance_id: int, now: datetime, error: str, *where: Any) -> bool:
        """Fail the instance, if it matches `where` and its lease has expired, with its running
        attempts; False when it did not match."""
        with self.engine.begin() as conn:
            failed = conn.execute(
                update(instances)
                .where(instances.c.id == instance_id, _expired(now), *where)
                .values(status="failed", finished_at=now, lease_expires_at=None, error=error)
            ).rowcount
            if failed:
                _end_running_attempts(
                    conn, instance_id, "failed", "abandoned: the process running it stopped"
                )
        return bool(failed)

    def _update(self, where: Any, **values: Any) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(update(instances).where(where).values(values)).rowcount == 1

    def _status(self, instance_id: int) -> str:
        with self.engine.connect() as conn:
            return instance_status(conn, instance_id)


def instance_status(conn: Connection, instance_id: int) -> str:
    """The instance's status; InstanceNotFound for an unknown id."""
    status = conn.execute(select(instances.c.status).where(instances.c.id == instance_id)).scalar()
    if status is None:
        raise InstanceNotFound(f"no instance with id {instance_id}")
    return str(status)


def _end_running_attempts(conn: Connection, instance_id: int, status: str, error: str) -> None:
    conn.execute(
        update(step_results)
        .where(
            step_results.c.batch_instance_id == instance_id,
            step_results.c.status == "running",
        )
        .values(status=status, error=error, finished_at=utcnow())
    )
