"""visits: who visited (township leader or station staff), how (one to one or together), the problems
solved on the spot and the suggestions collected, as the bureau reports night visits (驻村夜访).

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (
    ("cadre_kind", sa.String(length=16), None),
    ("visit_format", sa.String(length=16), None),
    ("solved_on_spot", sa.Integer(), sa.text("0")),
    ("suggestions", sa.Integer(), sa.text("0")),
)


def upgrade() -> None:
    with op.batch_alter_table("visits") as batch_op:
        for name, type_, default in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=default is None, server_default=default))


def downgrade() -> None:
    with op.batch_alter_table("visits") as batch_op:
        for name, _, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
