"""Reading step logs (`batch_step_log`): an instance's lines, oldest first, a page at a time.

The cursor is the last line's id. One process writes an instance's lines, in committed rounds
that follow each other, so ids grow in commit order within an instance: a reader that resumes
after the last id it saw never skips a line, nor sees one twice, however the writes interleave.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, select

from engine.status import ENDED
from engine.store.leases import instance_status
from engine.store.tables import step_logs
from engine.store.views import Timestamp

MAX_PAGE = 10_000
"""The most lines one page holds."""
MAX_PAGE_CHARS = 4 * 1024 * 1024
"""The most characters of messages one page holds (a line may be as long as an attempt's log
limit): past them, the page ends after the line that went over."""


class LogLineView(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: str
    item: str | None
    attempt: int
    at: Timestamp
    level: str
    stream: str
    message: str


class LogPage(BaseModel):
    """Lines, and the cursor to read on from: null once the instance has ended and every line
    of it has been read, so that a follower knows when to stop."""

    model_config = ConfigDict(frozen=True)

    lines: list[LogLineView]
    next: int | None


class StepLogs:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def page(
        self,
        instance_id: int,
        *,
        step: str | None = None,
        item: str | None = None,
        attempt: int | None = None,
        after: int | None = None,
        limit: int = 1000,
        max_chars: int = MAX_PAGE_CHARS,
    ) -> LogPage:
        """Up to `limit` lines after cursor `after`, filtered by step, item and attempt, and
        no more once their messages passed `max_chars` (read as they come, so that a page of
        long lines is never held whole).

        InstanceNotFound for an unknown instance.
        """
        limit = min(limit, MAX_PAGE)
        query = select(step_logs).where(step_logs.c.batch_instance_id == instance_id)
        for column, value in (
            (step_logs.c.step_key, step),
            (step_logs.c.item_key, item),
            (step_logs.c.attempt, attempt),
        ):
            if value is not None:
                query = query.where(column == value)
        if after is not None:
            query = query.where(step_logs.c.id > after)
        with self.engine.connect() as conn:
            # The status first: an instance that has ended has written all its lines already.
            status = instance_status(conn, instance_id)
            rows, chars = [], 0
            streamed = conn.execution_options(stream_results=True, max_row_buffer=100)
            for row in streamed.execute(query.order_by(step_logs.c.id).limit(limit)):
                rows.append(row)
                chars += len(row.message)
                if chars > max_chars:
                    break
        cursor = rows[-1].id if rows else (after or 0)
        done = status in ENDED and len(rows) < limit and chars <= max_chars
        return LogPage(lines=[_line(row) for row in rows], next=None if done else cursor)


def _line(row: Any) -> LogLineView:
    return LogLineView(
        step=row.step_key,
        item=row.item_key,
        attempt=row.attempt,
        at=row.at,
        level=row.level,
        stream=row.stream,
        message=row.message,
    )
