"""cases.fold: each case's folded state kept with its row, the mark of the latest event folded into
it, and next_check_at, when a sweep next has anything to do for the case (indexed: sweeps read it).

Rows from before have no fold (folded_at NULL, a partial index): the next sweep folds them from their
timelines, as the next event of the case does.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch_op:
        batch_op.add_column(sa.Column("fold", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("folded_at", UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("folded_rank", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("next_check_at", UtcDateTime(), nullable=True))
        batch_op.create_index("ix_cases_next_check_at", ["next_check_at"])
    op.create_index("ix_cases_unfolded", "cases", ["case_id"], sqlite_where=sa.text("folded_at IS NULL"),
                    postgresql_where=sa.text("folded_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_cases_unfolded", table_name="cases")
    with op.batch_alter_table("cases") as batch_op:
        batch_op.drop_index("ix_cases_next_check_at")
        batch_op.drop_column("next_check_at")
        batch_op.drop_column("folded_rank")
        batch_op.drop_column("folded_at")
        batch_op.drop_column("fold")
