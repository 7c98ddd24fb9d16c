"""An instance's attempts in the order they started: `batch_step_result (batch_instance_id, id)`.

Reading the attempts of one instance a page at a time (`Store.attempts`, behind `runs show --json`
and `GET /batch/instances/{id}`) asks for the next rows after an id; without this index each page
sorted every row of the instance again (100 pages of 100,000 rows for a mapped step that size).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_batch_step_result_instance_id", "batch_step_result", ["batch_instance_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_batch_step_result_instance_id", "batch_step_result")
