"""The inbox recognises an event applied before, on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import MetaData

from shared.db import make_engine
from shared.inbox import first_delivery, inbox_table, new_event_ids

NOW = datetime(2026, 5, 1, tzinfo=timezone.utc)


def test_a_redelivered_event_is_recognised(db_url: str) -> None:
    engine = make_engine(db_url)
    md = MetaData()
    table = inbox_table(md)
    md.create_all(engine)
    with engine.begin() as conn:
        assert first_delivery(conn, table, "e1", NOW)
    with engine.begin() as conn:
        assert not first_delivery(conn, table, "e1", NOW)
        assert new_event_ids(conn, table, ["e1", "e2", "e2", "e3"], NOW) == {"e2", "e3"}
    engine.dispose()
