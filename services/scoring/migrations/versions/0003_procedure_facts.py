"""case_facts: the lawful procedure's facts — acceptance, objections, the reviewing bodies' opinions

办结 is now the lead unit's handling opinion (or 不予受理), ``returns`` counts approved objections and
a review's overdue is the reviewing body's. Existing rows were counted the old way: run
``xinfang scoring rebuild`` once after this migration (README, "What scoring does").

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    ("acceptance", sa.String(length=16), None),
    ("decided_at", UtcDateTime(), None),
    ("reviewed_at", UtcDateTime(), None),
    ("review_outcome", sa.String(length=16), None),
    ("re_reviewed_at", UtcDateTime(), None),
    ("re_review_outcome", sa.String(length=16), None),
    ("objections", sa.JSON(), sa.text("'[]'")),
    ("objections_rejected", sa.Integer(), sa.text("0")),
)


def upgrade() -> None:
    with op.batch_alter_table("case_facts") as batch_op:
        for name, type_, default in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=default is None, server_default=default))


def downgrade() -> None:
    with op.batch_alter_table("case_facts") as batch_op:
        for name, _, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
