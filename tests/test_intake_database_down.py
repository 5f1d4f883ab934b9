"""A locked database: intake answers 503 in the documented shape with Retry-After, stores nothing,
and the same request retried with its Idempotency-Key once the lock is gone stores the case once."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, func, select, text

from services.intake import tables
from shared.db import make_engine, sqlite_path
from shared.settings import Settings
from tests.conftest import running
from tests.helpers import case_body


@contextmanager
def locked(url: str) -> Iterator[None]:
    """Another process's transaction holding the whole database (SQLite) or intake's tables
    (PostgreSQL) until the block ends."""
    path = sqlite_path(url)
    if path is not None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLE counters, cases, outbox, idempotency_keys IN ACCESS EXCLUSIVE MODE"))
            yield
            conn.rollback()
    finally:
        engine.dispose()


def stored_cases(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tables.cases)).scalar_one()


def test_a_locked_database_answers_503_with_retry_after_and_the_retry_stores_the_case_once(
        settings: Settings, auth: dict[str, str]) -> None:
    quick = settings.model_copy(update={"db_lock_timeout_s": 1.0})
    for client in running("intake", quick, {**auth, "Idempotency-Key": "desk-7-0001"}):
        engine = make_engine(quick.db_url("intake"))
        body = case_body()
        with locked(quick.db_url("intake")):
            answer = client.post("/api/v1/cases", json=body)
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            assert answer.json()["error"] == "database_unavailable" and answer.json()["retry_after"] == 5
            assert "Idempotency-Key" in answer.json()["message"]
        assert stored_cases(engine) == 0  # nothing half-done

        first = client.post("/api/v1/cases", json=body)
        again = client.post("/api/v1/cases", json=body)
        assert first.status_code == again.status_code == 201 and "Idempotent-Replayed" not in first.headers
        assert again.headers["Idempotent-Replayed"] == "true"  # the stored answer, not a second case
        assert first.json()["case_number"] == again.json()["case_number"]
        assert stored_cases(engine) == 1
        engine.dispose()
