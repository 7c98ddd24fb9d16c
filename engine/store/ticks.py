"""Tick claims (`batch_tick`): the row whose uniqueness makes each cron tick run once.

A claim is an INSERT that fails on the unique (definition, tick) pair when any other scheduler
or backfill got there first: no lock service, no elected leader, on SQLite and PostgreSQL
alike. A tick that fires is claimed in the same transaction that creates its instance, so a
crash leaves either both or neither.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from engine.errors import TickTaken
from engine.status import InstanceStatus, Trigger
from engine.store.tables import instances, ticks
from engine.store.types import utcnow
from engine.store.views import Timestamp, is_abandoned, is_orphaned

PRUNED = "pruned"
"""The status of a tick whose instance was pruned: it ran, and its history is gone."""
SCHEDULED = (Trigger.cron.value, Trigger.backfill.value)
"""The triggers whose instances the overlap policy looks at."""


class TickView(BaseModel):
    """One claimed tick: the instance it started, or why it was skipped."""

    model_config = ConfigDict(frozen=True)

    definition: str
    scheduled_for: Timestamp
    trigger: str
    instance_id: int | None
    status: str | None
    """The instance's status; None for a skipped tick; `pruned` for one that ran an instance
    `engine runs prune` has since deleted."""
    error: str | None
    orphaned: bool
    """Pending or running, but no live process holds its lease: nobody runs it."""
    skipped_reason: str | None
    claimed_by: str
    claimed_at: Timestamp


class ActiveRun(BaseModel):
    """A scheduled instance that has not ended, as the overlap policy sees it."""

    model_config = ConfigDict(frozen=True)

    id: int
    status: str
    abandoned: bool
    """Running, but its process stopped renewing the lease: it blocks nothing."""


def insert_claim(
    conn: Connection,
    name: str,
    at: datetime,
    trigger: str,
    claimed_by: str,
    instance_id: int | None = None,
    skipped_reason: str | None = None,
    over_skipped: bool = False,
) -> None:
    """Claim a tick inside the caller's transaction; raises IntegrityError when taken.

    With `over_skipped`, the tick was recorded skipped and `instance_id` now fills it (a
    backfill): one conditional update, so of racing takers one wins and the others get
    TickTaken (as does a pruned tick: it ran). The row keeps who claimed it first.
    """
    if over_skipped:
        filled = conn.execute(
            update(ticks)
            .where(
                ticks.c.definition_name == name,
                ticks.c.scheduled_for == at,
                ticks.c.instance_id.is_(None),
                ticks.c.skipped_reason.is_not(None),
            )
            .values(instance_id=instance_id, skipped_reason=None)
        ).rowcount
        if filled != 1:
            raise TickTaken(f"{name} tick {at.isoformat()} is already filled")
        return
    conn.execute(
        insert(ticks).values(
            definition_name=name,
            scheduled_for=at,
            trigger=trigger,
            instance_id=instance_id,
            skipped_reason=skipped_reason,
            claimed_by=claimed_by,
            created_at=utcnow(),
        )
    )


class TickClaims:
    """Queries and claims on `batch_tick`, and the scheduled instances overlap looks at."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def skip(self, name: str, at: datetime, trigger: str, claimed_by: str, reason: str) -> None:
        """Record a tick as skipped, with its reason; raises TickTaken when already claimed."""
        try:
            with self.engine.begin() as conn:
                insert_claim(conn, name, at, trigger, claimed_by, skipped_reason=reason)
        except IntegrityError:
            raise TickTaken(f"{name} tick {at.isoformat()} is already claimed") from None

    def last(self, name: str, trigger: str = Trigger.cron.value) -> datetime | None:
        """The latest tick claimed by `trigger`: where a starting scheduler takes over."""
        query = (
            select(ticks.c.scheduled_for)
            .where(ticks.c.definition_name == name, ticks.c.trigger == trigger)
            .order_by(ticks.c.scheduled_for.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            found: datetime | None = conn.execute(query).scalar()
        return found

    def find(self, name: str, at: datetime) -> TickView | None:
        rows = self._views(
            _tick_query().where(ticks.c.definition_name == name, ticks.c.scheduled_for == at)
        )
        return rows[0] if rows else None

    def recent(self, name: str | None = None, limit: int = 20) -> list[TickView]:
        """Claimed ticks, latest first."""
        query = _tick_query().order_by(ticks.c.scheduled_for.desc(), ticks.c.id.desc())
        if name:
            query = query.where(ticks.c.definition_name == name)
        return self._views(query.limit(limit))

    def active(self, name: str) -> list[ActiveRun]:
        """Scheduled instances of `name` that have not ended, oldest first."""
        query = (
            select(instances.c.id, instances.c.status, instances.c.lease_expires_at)
            .where(
                instances.c.definition_name == name,
                instances.c.trigger.in_(SCHEDULED),
                instances.c.status.in_(
                    [InstanceStatus.pending.value, InstanceStatus.running.value]
                ),
            )
            .order_by(instances.c.id)
        )
        now = utcnow()
        with self.engine.connect() as conn:
            return [
                ActiveRun(
                    id=row.id,
                    status=row.status,
                    abandoned=is_abandoned(row.status, row.lease_expires_at, now),
                )
                for row in conn.execute(query)
            ]

    def _views(self, query: Any) -> list[TickView]:
        now = utcnow()
        with self.engine.connect() as conn:
            return [
                TickView(
                    definition=row.definition_name,
                    scheduled_for=row.scheduled_for,
                    trigger=row.trigger,
                    instance_id=row.instance_id,
                    status=row.status or _pruned(row),
                    error=row.error,
                    orphaned=is_orphaned(row.status, row.lease_expires_at, now),
                    skipped_reason=row.skipped_reason,
                    claimed_by=row.claimed_by,
                    claimed_at=row.created_at,
                )
                for row in conn.execute(query)
            ]


def _tick_query() -> Any:
    return select(
        ticks, instances.c.status, instances.c.error, instances.c.lease_expires_at
    ).outerjoin(instances, instances.c.id == ticks.c.instance_id)


def _pruned(row: Any) -> str | None:
    """PRUNED for a claim with neither an instance nor a skip reason: a claim always has one
    or the other until pruning nulls its instance."""
    return PRUNED if row.instance_id is None and row.skipped_reason is None else None
