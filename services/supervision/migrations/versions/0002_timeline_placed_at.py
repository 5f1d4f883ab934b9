"""timeline.placed_at: when an event counts as having happened (a department's clock may lag)

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("timeline") as batch_op:
        batch_op.add_column(sa.Column("placed_at", UtcDateTime(), nullable=True))
    op.execute("UPDATE timeline SET placed_at = occurred_at")
    with op.batch_alter_table("timeline") as batch_op:
        batch_op.alter_column("placed_at", existing_type=UtcDateTime(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("timeline") as batch_op:
        batch_op.drop_column("placed_at")
