"""The executor's hot path: writing step attempts, one transaction per executor round.

The statements are SQLAlchemy Core over the SQLModel table, compiled once per dialect and then run
on the DB-API cursor with SQLAlchemy's own bind processors (UTC timestamps, JSON), without its
per-call machinery, which costs more than SQLite's commit itself. One transaction both opens the
attempts about to start and completes those that ended, so a result is durable before any step
that depends on it starts, at one commit per round where a naive loop pays two per step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, bindparam, insert, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from engine.store.tables import step_results


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


@dataclass(frozen=True)
class AttemptEnd:
    """A started attempt's end, to write into its row."""

    step: str
    attempt: int
    status: str
    finished_at: datetime
    result: Any = None
    error: str | None = None


_insert = insert(step_results).values(
    batch_instance_id=bindparam("instance_id"),
    step_key=bindparam("step"),
    attempt=bindparam("attempt"),
    status=bindparam("status"),
    result_payload=bindparam("result"),
    error=bindparam("error"),
    started_at=bindparam("started_at"),
    finished_at=bindparam("finished_at"),
    created_at=bindparam("started_at"),
)
_end = (
    update(step_results)
    .where(
        and_(
            step_results.c.batch_instance_id == bindparam("instance_id"),
            step_results.c.step_key == bindparam("row_step"),
            step_results.c.attempt == bindparam("row_attempt"),
        )
    )
    .values(
        status=bindparam("status"),
        result_payload=bindparam("result"),
        error=bindparam("error"),
        finished_at=bindparam("finished_at"),
    )
)


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
    """Writes the attempts of one instance on one connection held for the whole run."""

    def __init__(self, engine: Engine, instance_id: int) -> None:
        self.instance_id = instance_id
        self._insert = _DriverStatement(_insert, engine.dialect)
        self._end = _DriverStatement(_end, engine.dialect)
        self._connection = engine.raw_connection()

    def record(self, ended: Sequence[AttemptEnd], started: Sequence[AttemptStart]) -> None:
        """Open `started` and complete `ended` attempts in one committed transaction.

        Opening first lets one round both start and end an attempt (a run interrupted between
        writing and handing over its attempts).
        """
        if not (ended or started):
            return
        cursor = self._connection.cursor()
        try:
            if started:
                cursor.executemany(self._insert.sql, self._insert.rows(self._opened(started)))
            if ended:
                cursor.executemany(self._end.sql, self._end.rows(self._closed(ended)))
            self._connection.commit()
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
