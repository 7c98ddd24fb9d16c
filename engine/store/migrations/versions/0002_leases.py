"""Leases: a running instance names its process and renews an expiry, so a crash is seen.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.store.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batch_instance") as table:
        table.add_column(sa.Column("lease_owner", sa.String(200)))
        table.add_column(sa.Column("lease_expires_at", UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("batch_instance") as table:
        table.drop_column("lease_expires_at")
        table.drop_column("lease_owner")
