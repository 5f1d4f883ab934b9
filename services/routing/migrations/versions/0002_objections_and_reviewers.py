"""objections (异议) wait for the bureau's decision; reviewing bodies (复查/复核机关) are assignments

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
    with op.batch_alter_table("assignments") as batch_op:
        batch_op.add_column(sa.Column("review_level", sa.String(length=16), nullable=True))
    with op.batch_alter_table("returns") as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("via", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("event_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("decided_at", UtcDateTime(), nullable=True))
        batch_op.add_column(sa.Column("decided_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("decision_event_id", sa.String(length=64), nullable=True))
    # A return before this revision moved the case at once: it counts as an approved objection.
    op.execute("UPDATE returns SET status = 'approved'")
    with op.batch_alter_table("returns") as batch_op:
        batch_op.alter_column("status", existing_type=sa.String(length=16), nullable=False)


def downgrade() -> None:
    # The older code reads every row as a return that moved the case, and reviewers as units holding it.
    op.execute("DELETE FROM returns WHERE status <> 'approved'")
    op.execute("DELETE FROM assignments WHERE role = 'reviewer'")
    with op.batch_alter_table("returns") as batch_op:
        for column in ("decision_event_id", "decided_reason", "decided_at", "status", "event_id", "via", "role"):
            batch_op.drop_column(column)
    with op.batch_alter_table("assignments") as batch_op:
        batch_op.drop_column("review_level")
