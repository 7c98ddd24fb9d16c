"""The three tables: definitions by version, instances, step attempts.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.store.types import JsonType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_definition",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, index=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("cron", sa.String(200)),
        sa.Column("steps", JsonType(), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_table(
        "batch_instance",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "definition_id", sa.Integer, sa.ForeignKey("batch_definition.id"), nullable=False
        ),
        sa.Column("definition_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("params", JsonType(), nullable=False),
        sa.Column("scheduled_for", UTCDateTime()),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("error", sa.Text),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("definition_name", "scheduled_for"),
        sa.Index("ix_batch_instance_name_id", "definition_name", "id"),
    )
    op.create_table(
        "batch_step_result",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "batch_instance_id", sa.Integer, sa.ForeignKey("batch_instance.id"), nullable=False
        ),
        sa.Column("step_key", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result_payload", JsonType()),
        sa.Column("error", sa.Text),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("batch_instance_id", "step_key", "attempt"),
    )


def downgrade() -> None:
    op.drop_table("batch_step_result")
    op.drop_table("batch_instance")
    op.drop_table("batch_definition")
