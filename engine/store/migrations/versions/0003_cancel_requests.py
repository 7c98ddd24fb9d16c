"""Cancel requests: `engine cancel` marks an instance, the process running it stops it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.store.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batch_instance") as table:
        table.add_column(sa.Column("cancel_requested_at", UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("batch_instance") as table:
        table.drop_column("cancel_requested_at")
