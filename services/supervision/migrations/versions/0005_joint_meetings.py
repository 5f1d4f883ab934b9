"""Joint meetings (联席会议): the meetings, their minutes, and each decision tracked like a due date.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meetings",
        sa.Column("meeting_id", sa.String(length=32), nullable=False),
        sa.Column("meeting_no", sa.String(length=32), nullable=False),
        sa.Column("held_on", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("units", sa.JSON(), nullable=False),
        sa.Column("case_ids", sa.JSON(), nullable=False),
        sa.Column("convened_by", sa.String(length=64), nullable=True),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.Column("docx", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("meeting_id"),
    )
    op.create_table(
        "meeting_decisions",
        sa.Column("meeting_id", sa.String(length=32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("done_at", UtcDateTime(), nullable=True),
        sa.Column("done_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("meeting_id", "n"),
    )
    op.create_index("ix_meeting_decisions_unit", "meeting_decisions", ["unit"])


def downgrade() -> None:
    op.drop_index("ix_meeting_decisions_unit", table_name="meeting_decisions")
    op.drop_table("meeting_decisions")
    op.drop_table("meetings")
