"""Recovery: how often an instance was adopted after its process died, and a lease on pending
instances, so that one whose creating process died is told from one waiting for a slot.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batch_instance") as table:
        table.add_column(sa.Column("recoveries", sa.Integer(), nullable=False, server_default="0"))
    # Pending instances of older engines had no lease: they are orphans now, to be started.
    op.execute(
        "UPDATE batch_instance SET lease_expires_at = created_at "
        "WHERE status = 'pending' AND lease_expires_at IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("batch_instance") as table:
        table.drop_column("recoveries")
