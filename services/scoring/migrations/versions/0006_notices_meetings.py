"""The lead unit's opinion result (a mediation agreement earns points), and the numbered notices and
joint meetings the reports name (交办通知, 督办通知, 联席会议; a mass incident brings 一票否决).

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
    with op.batch_alter_table("case_facts") as batch_op:
        batch_op.add_column(sa.Column("result", sa.String(length=16), nullable=True))
    op.create_table(
        "notices",
        sa.Column("notice_type", sa.String(length=32), primary_key=True),
        sa.Column("notice_no", sa.String(length=64), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("units", sa.JSON(), nullable=False),
        sa.Column("case_ids", sa.JSON(), nullable=False),
    )
    op.create_table(
        "meetings",
        sa.Column("meeting_id", sa.String(length=64), primary_key=True),
        sa.Column("meeting_no", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("held_on", sa.Date(), nullable=False),
        sa.Column("units", sa.JSON(), nullable=False),
        sa.Column("case_ids", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("meetings")
    op.drop_table("notices")
    with op.batch_alter_table("case_facts") as batch_op:
        batch_op.drop_column("result")
