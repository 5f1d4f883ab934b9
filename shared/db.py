"""Database plumbing: engines, the unit of work, and Alembic migrations applied at start.

Sync SQLAlchemy Core on purpose: async aiosqlite measured ≈ 8× the CPU per transaction here
(../shared/PERF-NOTES.md). HTTP handlers run in a thread pool; the async relay calls in via threads.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    MetaData,
    Table,
    TypeDecorator,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the only PostgreSQL driver we install)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def sqlite_path(url: str) -> Path | None:
    return Path(url.split("///", 1)[1]) if url.startswith("sqlite:///") else None


def make_engine(url: str, lock_timeout_s: float = 30.0) -> Engine:
    """An engine whose transactions wait at most ``lock_timeout_s`` for a lock (SQLite's write lock,
    a PostgreSQL row or table lock), for a connection from the pool, and for a new connection, then
    raise: the HTTP layer answers 503 with Retry-After, a consumer retries the batch."""
    url = normalize_url(url)
    path = sqlite_path(url)
    wait_ms = int(lock_timeout_s * 1000)
    if path is None:
        # The URL's own options (e.g. a search_path) are kept: connect_args would replace them.
        options = " ".join(filter(None, [make_url(url).query.get("options"), f"-c lock_timeout={wait_ms}"]))
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, pool_timeout=lock_timeout_s,
                             connect_args={"connect_timeout": max(1, round(lock_timeout_s)), "options": options})

    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": lock_timeout_s, "check_same_thread": False},
                           pool_size=8, max_overflow=16, pool_timeout=lock_timeout_s)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # We emit BEGIN ourselves (below); WAL + NORMAL measured ≈ 3× rollback journal + FULL.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={wait_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # IMMEDIATE takes the write lock up front, so two replicas never deadlock upgrading a
        # read lock, and a counter read-then-update is serialised. A connection from ``reading``
        # only reads: a deferred BEGIN, which under WAL neither waits for writers nor holds them up.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("xf_reading") else "BEGIN IMMEDIATE")

    return engine


# A database that cannot answer now (a lock wait ran out, no connection, no pooled connection): the
# caller answers 503 or tries again later; a statement that is wrong is none of these.
DB_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


def reading(engine: Engine) -> Connection:
    """A connection for reads only (``with reading(engine) as conn``). On SQLite every transaction
    otherwise takes the write lock (``BEGIN IMMEDIATE``), so a metrics scrape or the relay looking for
    work queued behind the writers; a write through it fails rather than waiting for the lock."""
    return engine.connect().execution_options(xf_reading=True)


class UtcDateTime(TypeDecorator):
    """An aware UTC datetime on every database (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:  # noqa: ANN001
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:  # noqa: ANN001
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class UnitOfWork:
    """One transaction per use case. With the service's outbox relay: the events the transaction
    queues are handed to it at commit (``OutboxRelay.handing``), so they leave at once, with no claim
    of their own on the database."""

    def __init__(self, engine: Engine, relay: object | None = None) -> None:
        self.engine = engine
        self.relay = relay  # shared/outbox.OutboxRelay (not imported: it builds on this module)

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        if self.relay is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self.relay.handing(self.engine) as conn:
            yield conn


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict]) -> int:
    """Insert rows, skipping those whose primary/unique key exists. Returns how many were new."""
    if not rows:
        return 0
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # Counted with RETURNING: a driver's rowcount for a many-row insert is not to be trusted.
    stmt = dialect.insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)
    return len(conn.execute(stmt, list(rows)).all())


def lock_keys(conn: Connection, namespace: str, keys: Iterable[str]) -> None:
    """Serialise, until the transaction ends, the transactions of every replica that work on the same
    keys (e.g. a case's timeline, which each re-reads and re-folds). PostgreSQL's READ COMMITTED lets
    two replicas each fold a case without the other's uncommitted event, and the last write wins; an
    advisory transaction lock per key, taken in sorted order (two batches never deadlock), makes the
    second wait and then read both. SQLite needs none: BEGIN IMMEDIATE already serialises writers."""
    if conn.dialect.name != "postgresql":
        return
    ids = [int.from_bytes(hashlib.blake2b(f"{namespace}:{key}".encode(), digest_size=8).digest(), "big", signed=True)
           for key in sorted(set(keys))]
    if ids:  # one round trip for the batch, taken in the list's order
        conn.execute(text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY "
                          "AS t(k, i) ORDER BY i"), {"ids": ids})


# --- migrations ---------------------------------------------------------------------------------

SERVICES_DIR = Path(__file__).resolve().parents[1] / "services"


def migrate(service: str, url: str, settings: object | None = None) -> None:
    """Bring ``service``'s schema to head. Safe when several replicas start at once.

    ``settings`` (the process's): for a migration that needs a key (``context.config.attributes``)."""
    url = normalize_url(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.attributes["settings"] = settings
    engine = make_engine(url)
    try:
        with _migration_lock(url, engine, service):
            with engine.connect() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if conn.in_transaction():
                    conn.commit()
    finally:
        engine.dispose()


@contextlib.contextmanager
def _migration_lock(url: str, engine: Engine, service: str) -> Iterator[None]:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        return
    if engine.dialect.name == "postgresql":
        key = zlib.crc32(f"xinfang-migrate-{service}".encode())
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    yield


def run_alembic_env(target_metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py``: online mode on the given connection.

    ``target_metadata`` serves ``alembic revision --autogenerate`` (see README, "Migrations").
    """
    conn = context.config.attributes.get("connection")
    if conn is None:  # the alembic command line: connect to sqlalchemy.url
        engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
        with engine.connect() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True,
                              render_item=_render_item)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=conn, target_metadata=target_metadata,
                      render_as_batch=conn.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def _render_item(type_: str, obj: object, autogen_context) -> str | bool:  # noqa: ANN001
    """Autogenerate writes our column type as itself, importable, not as its implementation."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        autogen_context.imports.add("from shared.db import UtcDateTime")
        return "UtcDateTime()"
    return False
