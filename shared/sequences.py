"""Gap-free numbering (case numbers, drives, visits, notices): a counter row advanced inside the
transaction that uses the number, so a rollback returns it and replicas never share one."""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, MetaData, String, Table, update

from shared.db import insert_ignore


def counters_table(metadata: MetaData) -> Table:
    return Table("counters", metadata,
                 Column("name", String(64), primary_key=True),
                 Column("last", BigInteger, nullable=False))


def allocate(conn: Connection, table: Table, name: str, n: int = 1) -> int:
    """Advance counter ``name`` by ``n`` in the caller's transaction; returns the new last number."""
    insert_ignore(conn, table, [{"name": name, "last": 0}])
    return conn.execute(update(table).where(table.c.name == name).values(last=table.c.last + n)
                        .returning(table.c.last)).scalar_one()
