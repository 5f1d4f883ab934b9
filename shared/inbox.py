"""The inbox of an idempotent consumer (DESIGN §8): the event ids it has applied.

A consumer calls :func:`first_delivery` in the transaction that applies the event; a redelivered
or re-published event is then recognised and changes nothing.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Connection, MetaData, String, Table
from sqlalchemy.dialects import postgresql, sqlite

from shared.db import UtcDateTime


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox", metadata,
        Column("event_id", String(64), primary_key=True),
        Column("applied_at", UtcDateTime(), nullable=False),
    )


def first_delivery(conn: Connection, table: Table, event_id: str, now: datetime) -> bool:
    """Record ``event_id`` as applied; False if it already was (then apply nothing)."""
    return bool(new_event_ids(conn, table, [event_id], now))


def new_event_ids(conn: Connection, table: Table, event_ids: list[str], now: datetime) -> set[str]:
    """For a batch: record the ids and return those not applied before.

    One INSERT … ON CONFLICT DO NOTHING RETURNING, so two replicas applying the same event at
    once cannot both see it as new.
    """
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    rows = [{"event_id": e, "applied_at": now} for e in dict.fromkeys(event_ids)]
    if not rows:
        return set()
    stmt = dialect.insert(table).on_conflict_do_nothing().returning(table.c.event_id)
    return set(conn.execute(stmt, rows).scalars())
