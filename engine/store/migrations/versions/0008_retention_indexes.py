"""Retention indexes: what `engine runs prune` looks up.

`batch_instance (status, finished_at)` finds the old ended instances without reading the rest of
the history; `batch_tick.instance_id` is what deleting an instance checks (its foreign key) and
updates.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_batch_instance_status_finished_at", "batch_instance", ["status", "finished_at"]
    )
    op.create_index("ix_batch_tick_instance_id", "batch_tick", ["instance_id"])


def downgrade() -> None:
    op.drop_index("ix_batch_tick_instance_id", "batch_tick")
    op.drop_index("ix_batch_instance_status_finished_at", "batch_instance")
