"""Mapped steps: an item's attempts carry its key, and are unique per (step, item, attempt).

The attempts of a step that is not mapped (item_key NULL) stay unique per (step, attempt), now
through a partial index, since SQL never finds two NULLs equal.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OLD = ["batch_instance_id", "step_key", "attempt"]
_CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
"""Names the unnamed unique constraint of 0001 on SQLite, so that batch mode can drop it."""


def upgrade() -> None:
    found = sa.inspect(op.get_bind()).get_unique_constraints("batch_step_result")
    old = next(c["name"] for c in found if c["column_names"] == _OLD)
    with op.batch_alter_table("batch_step_result", naming_convention=_CONVENTION) as table:
        table.add_column(sa.Column("item_key", sa.String(200), nullable=True))
        table.drop_constraint(old or "uq_batch_step_result_batch_instance_id_step_key_attempt")
        table.create_unique_constraint(
            "uq_batch_step_result_item_attempt",
            ["batch_instance_id", "step_key", "item_key", "attempt"],
        )
    op.create_index(
        "uq_batch_step_result_step_attempt",
        "batch_step_result",
        _OLD,
        unique=True,
        sqlite_where=sa.text("item_key IS NULL"),
        postgresql_where=sa.text("item_key IS NULL"),
    )


def downgrade() -> None:
    op.execute("DELETE FROM batch_step_result WHERE item_key IS NOT NULL")
    op.drop_index("uq_batch_step_result_step_attempt", "batch_step_result")
    with op.batch_alter_table("batch_step_result") as table:
        table.drop_constraint("uq_batch_step_result_item_attempt")
        table.drop_column("item_key")
        table.create_unique_constraint(
            "batch_step_result_batch_instance_id_step_key_attempt_key", _OLD
        )
