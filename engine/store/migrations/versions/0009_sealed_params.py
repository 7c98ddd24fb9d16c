"""Secret params: their values, sealed with ENGINE_PARAMS_KEY, beside the params every view reads
(which show them as `***`), so that a resume or a recovery can run the instance again.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batch_instance") as table:
        table.add_column(sa.Column("sealed_params", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_instance") as table:
        table.drop_column("sealed_params")
