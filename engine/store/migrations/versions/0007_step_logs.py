"""Step logs: every line a runner says, kept with its attempt.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.store.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_step_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "batch_instance_id", sa.Integer(), sa.ForeignKey("batch_instance.id"), nullable=False
        ),
        sa.Column("step_key", sa.String(200), nullable=False),
        sa.Column("item_key", sa.String(200), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_batch_step_log_instance", "batch_step_log", ["batch_instance_id", "id"])
    op.create_index(
        "ix_batch_step_log_step", "batch_step_log", ["batch_instance_id", "step_key", "id"]
    )


def downgrade() -> None:
    op.drop_table("batch_step_log")
