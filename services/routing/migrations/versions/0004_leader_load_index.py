"""leader_cases: an index on (open, leader_id), so a leader's load (领导包案: the least loaded of the
leaders in charge) is counted from the open rows alone, not every important case ever routed

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leader_cases") as batch_op:
        batch_op.create_index("ix_leader_cases_open", ["open", "leader_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("leader_cases") as batch_op:
        batch_op.drop_index("ix_leader_cases_open")
