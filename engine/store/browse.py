"""Reads for browsing history (the web UI): pages of instances, steps, attempts and items, and
what changed since a cursor.

Nothing here loads a whole big instance: a 10,000-step run is read as one small row per step
(no results), and a mapped step's 100,000 items only a page at a time. The change cursor is a
timestamp the database holds (the latest `created_at`, `started_at` or `finished_at` a reader
saw), never the reader's clock. A writer computes its timestamps before its transaction
commits, so a row may become visible after a later one: a reader reads again from a little
before a new cursor (`OVERLAP`), once, and may see a row twice, never miss one committed within
the overlap. Once nothing newer came (the cursor "settled"), it reads from the cursor itself, so
that a quiet run sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select

from engine.errors import InstanceNotFound
from engine.store.store import _instance_query, _view, last_item_attempt
from engine.store.tables import instances, step_results
from engine.store.views import InstanceView, StepAttemptView

OVERLAP = timedelta(seconds=2)
"""How far before the cursor a change read starts again."""
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
"""The cursor of a reader that has seen no timestamp yet: every change is after it."""


@dataclass(frozen=True, slots=True)
class StepRow:
    """One attempt of a step's own row (not an item's), without its result or error; a plain
    dataclass, as a 10,000-step run reads 10,000 of them per page."""

    step: str
    attempt: int
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    changed_at: datetime
    """The latest of the row's timestamps: what a change cursor is compared with."""


def latest(times: list[datetime | None]) -> datetime | None:
    """The latest of `times` that are set: the next change cursor."""
    known = [t for t in times if t is not None]
    return max(known) if known else None


class Browse:
    """Queries of the web UI, on SQLite and PostgreSQL alike."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def instance(self, instance_id: int) -> InstanceView:
        """One instance without its attempts; InstanceNotFound for an unknown id."""
        with self.engine.connect() as conn:
            row = conn.execute(_instance_query().where(instances.c.id == instance_id)).first()
        if row is None:
            raise InstanceNotFound(f"no instance with id {instance_id}")
        return _view(row, None)

    def instances(
        self,
        definition: str | None,
        status: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[InstanceView], int]:
        """A page of instances, newest first, and how many match the filters in all."""
        filters = _instance_filters(definition, status)
        query = _instance_query().where(*filters).order_by(instances.c.id.desc())
        total = select(func.count()).select_from(instances).where(*filters)
        with self.engine.connect() as conn:
            rows = conn.execute(query.offset(offset).limit(limit)).all()
            count = int(conn.execute(total).scalar_one())
        return [_view(row, None) for row in rows], count

    def instances_among(self, ids: list[int]) -> list[InstanceView]:
        """The instances of `ids` (unknown ones left out), newest first."""
        query = _instance_query().where(instances.c.id.in_(ids)).order_by(instances.c.id.desc())
        with self.engine.connect() as conn:
            return [_view(row, None) for row in conn.execute(query)]

    def latest_change(self) -> datetime | None:
        """The latest time any instance was created, started or ended: where a reader of
        `instances_changed` starts."""
        query = select(
            func.max(instances.c.created_at),
            func.max(instances.c.started_at),
            func.max(instances.c.finished_at),
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).one()
        return latest(list(row))

    def instances_changed(
        self,
        since: datetime,
        definition: str | None,
        status: str | None,
        limit: int,
        settled: bool = False,
    ) -> tuple[list[InstanceView], datetime | None]:
        """Instances created, started or ended after `since` (less `OVERLAP` unless
        `settled`), newest first, and the latest such timestamp seen."""
        after = since if settled else since - OVERLAP
        changed = or_(
            instances.c.created_at > after,
            instances.c.started_at > after,
            instances.c.finished_at > after,
        )
        query = (
            _instance_query()
            .where(changed, *_instance_filters(definition, status))
            .order_by(instances.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        cursor = latest([t for r in rows for t in (r.created_at, r.started_at, r.finished_at)])
        return [_view(row, None) for row in rows], cursor

    def step_rows(
        self, instance_id: int, since: datetime | None = None, settled: bool = False
    ) -> list[StepRow]:
        """The steps' own rows, in attempt order (a step's last row is its state); with
        `since`, only those that changed after it (less `OVERLAP` unless `settled`)."""
        query = select(*_STEP_ROW).where(
            step_results.c.batch_instance_id == instance_id, step_results.c.item_key.is_(None)
        )
        if since is not None:
            after = since if settled else since - OVERLAP
            query = query.where(
                or_(
                    step_results.c.created_at > after,
                    step_results.c.started_at > after,
                    step_results.c.finished_at > after,
                )
            )
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(step_results.c.attempt, step_results.c.id)).all()
        return [_step_row(row) for row in rows]

    def attempts(self, instance_id: int, offset: int, limit: int) -> tuple[list[StepRow], int]:
        """A page of the steps' own attempts in the order they started (a timeline's rows),
        and how many there are in all."""
        own = and_(
            step_results.c.batch_instance_id == instance_id, step_results.c.item_key.is_(None)
        )
        query = (
            select(*_STEP_ROW).where(own).order_by(step_results.c.id).offset(offset).limit(limit)
        )
        total = select(func.count()).select_from(step_results).where(own)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            count = int(conn.execute(total).scalar_one())
        return [_step_row(row) for row in rows], count

    def step_attempts(
        self, instance_id: int, step: str, item: str | None = None, last: int = 100
    ) -> list[StepAttemptView]:
        """The `last` attempts of one step's own row, or of one of its items, with results and
        errors, in attempt order (a step may make up to 1,000 attempts)."""
        key = step_results.c.item_key
        query = (
            select(step_results)
            .where(
                step_results.c.batch_instance_id == instance_id,
                step_results.c.step_key == step,
                key.is_(None) if item is None else key == item,
            )
            .order_by(step_results.c.attempt.desc())
            .limit(last)
        )
        with self.engine.connect() as conn:
            return [StepAttemptView.from_row(row) for row in conn.execute(query)][::-1]

    def items(
        self, instance_id: int, step: str, status: str | None, offset: int, limit: int
    ) -> list[StepAttemptView]:
        """A page of a mapped step's items, each at its last attempt, in the order they were
        first written, filtered by that attempt's status."""
        query = select(step_results).where(
            step_results.c.batch_instance_id == instance_id,
            step_results.c.step_key == step,
            step_results.c.item_key.is_not(None),
            last_item_attempt(),
        )
        if status:
            query = query.where(step_results.c.status == status)
        query = query.order_by(step_results.c.id).offset(offset).limit(limit)
        with self.engine.connect() as conn:
            return [StepAttemptView.from_row(row) for row in conn.execute(query)]


_STEP_ROW = (
    step_results.c.step_key,
    step_results.c.attempt,
    step_results.c.status,
    step_results.c.started_at,
    step_results.c.finished_at,
    step_results.c.created_at,
)
"""The columns of a `StepRow`."""


def _instance_filters(definition: str | None, status: str | None) -> list[Any]:
    filters = []
    if definition:
        filters.append(instances.c.definition_name == definition)
    if status:
        filters.append(instances.c.status == status)
    return filters


def _step_row(row: Any) -> StepRow:
    changed = latest([row.created_at, row.started_at, row.finished_at])
    assert changed is not None, "created_at is never null"
    return StepRow(
        step=row.step_key,
        attempt=row.attempt,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        changed_at=changed,
    )
