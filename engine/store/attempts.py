"""The executor's hot path: writing step attempts, one transaction per executor round.

The statements are SQLAlchemy Core over the SQLModel table, compiled once per dialect and then run
on the DB-API cursor with SQLAlchemy's own bind processors (UTC timestamps, JSON), without its
per-call machinery, which costs more than SQLite's commit itself. One transaction both opens the
attempts about to start and completes those that ended, so a result is durable before any step
that depends on it starts, at one commit per round where a naive loop pays two per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from engine.errors import StoreError
from engine.store.tables import instances, step_logs, step_results
from engine.store.types import utcnow


@dataclass(frozen=True)
class AttemptStart:
    """A row to insert: an attempt starting, or a step settled without a runner (skipped, or
    failed on its condition or inputs), which starts and ends at once."""

    step: str
    attempt: int
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    result: Any = None
    error: str | None = None
    item: str | None = None
    """The item's key, for an attempt of one item of a mapped step."""


@dataclass(frozen=True)
class AttemptEnd:
    """A started attempt's end, to write into its row."""

    step: str
    attempt: int
    status: str
    finished_at: datetime
    result: Any = None
    error: str | None = None
    item: str | None = None


@dataclass(frozen=True)
class AttemptLine:
    """A log line of an attempt, to insert."""

    step: str
    item: str | None
    attempt: int
    at: datetime
    level: str
    stream: str
    message: str


_insert_line = insert(step_logs).values(
    batch_instance_id=bindparam("instance_id"),
    step_key=bindparam("step"),
    item_key=bindparam("item"),
    attempt=bindparam("attempt"),
    at=bindparam("at"),
    level=bindparam("level"),
    stream=bindparam("stream"),
    message=bindparam("message"),
)
_insert = insert(step_results).values(
    batch_instance_id=bindparam("instance_id"),
    step_key=bindparam("step"),
    item_key=bindparam("item"),
    attempt=bindparam("attempt"),
    status=bindparam("status"),
    result_payload=bindparam("result"),
    error=bindparam("error"),
    started_at=bindparam("started_at"),
    finished_at=bindparam("finished_at"),
    created_at=bindparam("started_at"),
)


def _ending(item: bool) -> ClauseElement:
    """The update that completes an attempt's row: an item's (found by its key), or a step's
    own (item_key NULL, which `=` never matches: so two statements, each on its index)."""
    row = and_(
        step_results.c.batch_instance_id == bindparam("instance_id"),
        step_results.c.step_key == bindparam("row_step"),
        step_results.c.attempt == bindparam("row_attempt"),
        step_results.c.item_key == bindparam("row_item")
        if item
        else step_results.c.item_key.is_(None),
    )
    return (
        update(step_results)
        .where(row)
        .values(
            status=bindparam("status"),
            result_payload=bindparam("result"),
            error=bindparam("error"),
            finished_at=bindparam("finished_at"),
        )
    )


_fence = (
    update(instances)
    .where(
        and_(
            instances.c.id == bindparam("instance_id"),
            instances.c.lease_owner == bindparam("owner"),
            instances.c.status == bindparam("running"),
        )
    )
    .values(lease_expires_at=bindparam("expires"))
)
"""The first statement of every round: it renews the lease only while this process holds it, and
holds the instance's row until the round commits, so that no claim can come in between."""


class _DriverStatement:
    """A statement compiled for one dialect, with the bind processors of its parameters."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        self._names = list(compiled.positiontup or ()) if dialect.positional else None
        self._processors = [
            (name, bind.type.dialect_impl(dialect).bind_processor(dialect))
            for name, bind in compiled.binds.items()
        ]

    def rows(self, values: Iterable[Mapping[str, Any]]) -> list[Any]:
        """Driver parameters for each mapping of values, processed as SQLAlchemy would."""
        rows: list[Any] = []
        for value in values:
            processed = {
                name: process(value[name]) if process else value[name]
                for name, process in self._processors
            }
            rows.append(processed if self._names is None else [processed[n] for n in self._names])
        return rows


class AttemptWriter:
    """Writes the attempts of one instance on one connection held for the whole run, fenced by
    the lease of `owner`: a round of a process that lost the instance writes nothing."""

    def __init__(
        self,
        engine: Engine,
        instance_id: int,
        owner: str,
        lease_seconds: float,
        lost: Callable[[], Exception],
    ) -> None:
        self.instance_id = instance_id
        self._fence_values = {"instance_id": instance_id, "owner": owner, "running": "running"}
        self._lease = timedelta(seconds=lease_seconds)
        self._lost = lost
        self._fence = _DriverStatement(_fence, engine.dialect)
        self._insert = _DriverStatement(_insert, engine.dialect)
        self._insert_line = _DriverStatement(_insert_line, engine.dialect)
        self._end_step = _DriverStatement(_ending(item=False), engine.dialect)
        self._end_item = _DriverStatement(_ending(item=True), engine.dialect)
        self._connection = engine.raw_connection()
        self._refused: type[Exception] = engine.dialect.dbapi.Error  # type: ignore[union-attr]

    def record(
        self,
        ended: Sequence[AttemptEnd],
        started: Sequence[AttemptStart],
        lines: Sequence[AttemptLine] = (),
    ) -> None:
        """Open `started` attempts, add their `lines`, and complete `ended` attempts, in one
        committed transaction.

        Opening first lets one round both start and end an attempt (a run interrupted between
        writing and handing over its attempts). Raises what `lost` makes (LeaseLost), having
        written nothing, when this process no longer holds the instance.
        """
        if not (ended or started or lines):
            return
        cursor = self._connection.cursor()
        try:
            fence = {**self._fence_values, "expires": utcnow() + self._lease}
            cursor.execute(self._fence.sql, self._fence.rows([fence])[0])
            if cursor.rowcount != 1:
                raise self._lost()
            if started:
                cursor.executemany(self._insert.sql, self._insert.rows(self._opened(started)))
            if lines:
                said = ({"instance_id": self.instance_id, **line.__dict__} for line in lines)
                cursor.executemany(self._insert_line.sql, self._insert_line.rows(said))
            steps = [e for e in ended if e.item is None]
            items = [e for e in ended if e.item is not None] if len(steps) < len(ended) else []
            for statement, rows in ((self._end_step, steps), (self._end_item, items)):
                if rows:
                    cursor.executemany(statement.sql, statement.rows(self._closed(rows)))
            self._connection.commit()
        except self._refused as exc:
            self._connection.rollback()
            raise StoreError(f"the database refused to record the run's attempts: {exc}") from exc
        except BaseException:
            self._connection.rollback()
            raise
        finally:
            cursor.close()

    def _opened(self, started: Sequence[AttemptStart]) -> Iterator[dict[str, Any]]:
        for s in started:
            yield {"instance_id": self.instance_id, **s.__dict__, "status": str(s.status)}

    def _closed(self, ended: Sequence[AttemptEnd]) -> Iterator[dict[str, Any]]:
        for e in ended:
            yield {
                "instance_id": self.instance_id,
                "row_step": e.step,
                "row_attempt": e.attempt,
                "row_item": e.item,
                "status": str(e.status),
                "result": e.result,
                "error": e.error,
                "finished_at": e.finished_at,
            }

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> AttemptWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
