"""case_facts.charges: each breach charged to the unit responsible at that moment (责任)

A lapsed sign-for is the unit's that held the case then, an overdue opinion the lead's at its due
date, a rejected objection the unit's that handed the case back (services/scoring/domain.py). Rows
counted before have none: run ``xinfang scoring rebuild`` once after this migration.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("case_facts") as batch_op:
        batch_op.add_column(sa.Column("charges", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))


def downgrade() -> None:
    with op.batch_alter_table("case_facts") as batch_op:
        batch_op.drop_column("charges")
