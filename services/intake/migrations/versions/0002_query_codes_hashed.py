"""query codes stored as keyed hashes, sealed in stored answers; the resident's failed attempts

Revision ID: 0002
Revises: 0001

Existing cases get the hash of their code under the current query-code key, and the codes in stored
idempotent answers are sealed; the plain column is dropped. That needs the keys (shared/keys.py) only
when there are rows to convert: from the migrating process's settings, else its environment.
The plain codes are gone after this: there is no downgrade.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from shared.db import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _keys():  # noqa: ANN202
    from shared import keys
    from shared.settings import Settings

    return keys.load(context.config.attributes.get("settings") or Settings())


def upgrade() -> None:
    from services.intake.domain import seal_answer

    bind = op.get_bind()
    with op.batch_alter_table("cases") as batch_op:
        batch_op.add_column(sa.Column("query_code_hash", sa.String(length=64), nullable=True))
    cases = sa.table("cases", sa.column("number", sa.String), sa.column("query_code", sa.String),
                     sa.column("query_code_hash", sa.String))
    answers = sa.table("idempotency_keys", sa.column("key", sa.String), sa.column("response", sa.JSON))
    codes = bind.execute(sa.select(cases.c.number, cases.c.query_code)).all()
    stored = [(k, r) for k, r in bind.execute(sa.select(answers.c.key, answers.c.response)).all()
              if isinstance(r, dict) and ("query_code" in r or "cases" in r)]
    if codes or stored:
        keys = _keys()
        ring = keys.query_code
        for start in range(0, len(codes), 1000):
            bind.execute(cases.update().where(cases.c.number == sa.bindparam("n"))
                         .values(query_code_hash=sa.bindparam("h")),
                         [{"n": n, "h": ring.hash(code.upper())} for n, code in codes[start:start + 1000]])
        for key, response in stored:
            bind.execute(answers.update().where(answers.c.key == key)
                         .values(response=seal_answer(keys, key, response)))
    with op.batch_alter_table("cases") as batch_op:
        batch_op.alter_column("query_code_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_column("query_code")

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
    raise NotImplementedError("query codes were replaced by their keyed hashes: they cannot be restored")
