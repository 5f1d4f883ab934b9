"""resident_failures: wrong query codes on the progress lookup, per case and per client

Revision ID: 0003
Revises: 0002

The query-code hashes already stored stay as they are: they were made with the key that was then
``XF_ID_HASH_KEY``; keep that key as an old query-code key (``XF_QUERY_CODE_KEY=new:…,old:…``) for
the progress lookup of cases received before the upgrade (README, "Keys").
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resident_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_resident_failures_subject", "resident_failures", ["scope", "subject", "at"])
    op.create_index("ix_resident_failures_at", "resident_failures", ["at"])


def downgrade() -> None:
    op.drop_index("ix_resident_failures_at", table_name="resident_failures")
    op.drop_index("ix_resident_failures_subject", table_name="resident_failures")
    op.drop_table("resident_failures")
