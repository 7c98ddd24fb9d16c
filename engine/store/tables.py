"""The tables (SQLModel). The hot path writes them with SQLAlchemy Core statements."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from engine.store.types import JsonType, UTCDateTime, utcnow


def _time() -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime()))


class BatchDefinition(SQLModel, table=True):
    """One version of a definition: a changed file is a new row, found again by content hash."""

    __tablename__ = "batch_definition"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False, index=True))
    version: str = Field(sa_column=Column(String(64), nullable=False))
    cron: str | None = Field(default=None, sa_column=Column(String(200)))
    steps: list[dict[str, Any]] = Field(sa_column=Column(JsonType(), nullable=False))
    source: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class BatchInstance(SQLModel, table=True):
    """One run of one definition version.

    `definition_name` is kept beside the version's id so that a cron tick is unique per
    definition across versions, and history can be filtered without a join.
    """

    __tablename__ = "batch_instance"
    __table_args__ = (
        UniqueConstraint("definition_name", "scheduled_for"),
        UniqueConstraint("idempotency_key", name="uq_batch_instance_idempotency_key"),
        Index("ix_batch_instance_name_id", "definition_name", "id"),
        Index("ix_batch_instance_status_finished_at", "status", "finished_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    definition_id: int = Field(
        sa_column=Column(Integer, ForeignKey("batch_definition.id"), nullable=False)
    )
    definition_name: str = Field(sa_column=Column(String(200), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False, index=True))
    trigger: str = Field(sa_column=Column(String(16), nullable=False))
    params: dict[str, Any] = Field(sa_column=Column(JsonType(), nullable=False))
    """The run's params, each secret one as `***`."""
    sealed_params: str | None = Field(default=None, sa_column=Column(Text))
    """The secret params' values as a Fernet token (ENGINE_PARAMS_KEY); only a resume reads it."""
    scheduled_for: datetime | None = _time()
    started_at: datetime | None = _time()
    finished_at: datetime | None = _time()
    error: str | None = Field(default=None, sa_column=Column(Text))
    lease_owner: str | None = Field(default=None, sa_column=Column(String(200)))
    """The process running the instance (host:pid:nonce) while it runs."""
    lease_expires_at: datetime | None = _time()
    """Renewed by the running process; once past, the instance is abandoned."""
    cancel_requested_at: datetime | None = _time()
    """Set by `engine cancel`; the running process sees it when it renews its lease."""
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(200)))
    """The `Idempotency-Key` of the HTTP request that created it: a retry finds it again."""
    recoveries: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    """How often a server adopted it after its process died (ENGINE_MAX_RECOVERIES bounds it)."""
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class BatchStepResult(SQLModel, table=True):
    """One attempt of one step, written when it starts and completed when it ends.

    Skipped steps get a row too, so that an instance's history shows every step's fate. A mapped
    step has its own row per attempt (item_key NULL) and one per attempt of each item.
    """

    __tablename__ = "batch_step_result"
    __table_args__ = (
        UniqueConstraint(
            "batch_instance_id",
            "step_key",
            "item_key",
            "attempt",
            name="uq_batch_step_result_item_attempt",
        ),
        Index(
            "uq_batch_step_result_step_attempt",
            "batch_instance_id",
            "step_key",
            "attempt",
            unique=True,
            sqlite_where=text("item_key IS NULL"),
            postgresql_where=text("item_key IS NULL"),
        ),
        Index("ix_batch_step_result_instance_id", "batch_instance_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    batch_instance_id: int = Field(
        sa_column=Column(Integer, ForeignKey("batch_instance.id"), nullable=False)
    )
    step_key: str = Field(sa_column=Column(String(200), nullable=False))
    item_key: str | None = Field(default=None, sa_column=Column(String(200)))
    """For an attempt of one item of a mapped step, the item's key; NULL for the step's own row,
    which holds the step's status and its collected result."""
    attempt: int = Field(sa_column=Column(Integer, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    result_payload: Any = Field(default=None, sa_column=Column(JsonType()))
    error: str | None = Field(default=None, sa_column=Column(Text))
    started_at: datetime | None = _time()
    finished_at: datetime | None = _time()
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class BatchStepLog(SQLModel, table=True):
    """One line a runner said during one attempt: a `ctx.logger` record, or a line it printed.

    Written by the orchestrating process in batches, with the attempts of the executor's rounds;
    `id` orders an instance's lines and is the cursor of paged reads.
    """

    __tablename__ = "batch_step_log"
    __table_args__ = (
        Index("ix_batch_step_log_instance", "batch_instance_id", "id"),
        Index("ix_batch_step_log_step", "batch_instance_id", "step_key", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    batch_instance_id: int = Field(
        sa_column=Column(Integer, ForeignKey("batch_instance.id"), nullable=False)
    )
    step_key: str = Field(sa_column=Column(String(200), nullable=False))
    item_key: str | None = Field(default=None, sa_column=Column(String(200)))
    attempt: int = Field(sa_column=Column(Integer, nullable=False))
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    level: str = Field(sa_column=Column(String(16), nullable=False))
    """debug, info, warning, error or critical: a record's level; info for stdout, warning for
    stderr."""
    stream: str = Field(sa_column=Column(String(16), nullable=False))
    """Where the line came from: log (`ctx.logger`), stdout or stderr."""
    message: str = Field(sa_column=Column(Text, nullable=False))


class BatchTick(SQLModel, table=True):
    """One claimed cron tick of a definition: the row whose uniqueness makes a tick run once.

    A tick that fired points at its instance; one the overlap policy skipped says why; one whose
    instance `engine runs prune` deleted has neither (see `retention.py`).
    """

    __tablename__ = "batch_tick"
    __table_args__ = (
        UniqueConstraint("definition_name", "scheduled_for"),
        Index("ix_batch_tick_instance_id", "instance_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    definition_name: str = Field(sa_column=Column(String(200), nullable=False))
    scheduled_for: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    trigger: str = Field(sa_column=Column(String(16), nullable=False))
    instance_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("batch_instance.id"))
    )
    skipped_reason: str | None = Field(default=None, sa_column=Column(Text))
    claimed_by: str = Field(sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


definitions = BatchDefinition.__table__  # type: ignore[attr-defined]
instances = BatchInstance.__table__  # type: ignore[attr-defined]
step_results = BatchStepResult.__table__  # type: ignore[attr-defined]
step_logs = BatchStepLog.__table__  # type: ignore[attr-defined]
ticks = BatchTick.__table__  # type: ignore[attr-defined]
