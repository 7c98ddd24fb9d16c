"""Cron tick claims, and idempotency keys of HTTP-triggered runs.

`batch_tick` holds one row per claimed tick of a definition, unique per (definition, tick): the
claim that makes every tick run once with any number of schedulers, and the record of a tick
the overlap policy skipped. `batch_instance.idempotency_key` lets a retried `POST /batch/run`
find the instance its first attempt created.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.store.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_tick",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("definition_name", sa.String(200), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("instance_id", sa.Integer, sa.ForeignKey("batch_instance.id")),
        sa.Column("skipped_reason", sa.Text),
        sa.Column("claimed_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("definition_name", "scheduled_for"),
    )
    with op.batch_alter_table("batch_instance") as table:
        table.add_column(sa.Column("idempotency_key", sa.String(200)))
        table.create_unique_constraint("uq_batch_instance_idempotency_key", ["idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("batch_instance") as table:
        table.drop_constraint("uq_batch_instance_idempotency_key", type_="unique")
        table.drop_column("idempotency_key")
    op.drop_table("batch_tick")
