"""Transactional outbox (DESIGN §8) and its relay.

A use case calls :func:`enqueue` in the same transaction as its own changes. In a running service
the transaction is the relay's (:meth:`OutboxRelay.handing`, through the unit of work): its rows are
inserted already claimed by this process (a lease) and handed to the relay at commit, which
publishes them at once and marks them sent, with no claim of its own on the database (on SQLite
every claim took the write lock the request threads were waiting for). Otherwise the relay claims
unsent rows with a lease, publishes them to JetStream with ``Nats-Msg-Id`` = ``event_id`` and
marks them sent. A row whose publish failed, or whose relay died, is claimed again after the
lease; a publish that did reach the stream before is dropped by the stream's de-duplication.
Sent rows are kept for ``outbox_retention_days`` so a reconciliation can compare with the stream.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
    update,
)

from shared.db import UtcDateTime, reading
from shared.events import Event, encode

log = logging.getLogger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox", metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("subject", String(255), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
        Column("claimed_until", Float, nullable=True),  # epoch seconds of the relay's lease
        Column("sent_at", UtcDateTime(), nullable=True),
        Index("ix_outbox_unsent", "sent_at", "id"),
    )


HANDOFF = "xf_outbox_handoff"  # in a transaction's ``conn.info``: the rows to hand the relay at commit


@dataclass
class Handoff:
    claimed_until: float  # the lease the rows are inserted with (epoch seconds)
    rows: list[dict] = field(default_factory=list)


def enqueue(conn, table: Table, events: Iterable[Event], now: datetime) -> None:  # noqa: ANN001
    rows = [{"event_id": e.event_id, "subject": e.subject, "payload": encode(e), "created_at": now}
            for e in events]
    if not rows:
        return
    handoff: Handoff | None = conn.info.get(HANDOFF)
    if handoff is not None:
        for row in rows:
            row["claimed_until"] = handoff.claimed_until
        handoff.rows.extend(rows)
    conn.execute(table.insert(), rows)


class OutboxRelay:
    """Publishes the outbox. One per process; several processes may share one outbox."""

    def __init__(self, engine: Engine, table: Table, bus, *, batch: int = 500, poll_s: float = 0.5,
                 lease_s: float = 30.0, retention_days: int = 30, metrics=None) -> None:  # noqa: ANN001
        self.engine, self.table, self.bus = engine, table, bus
        self.batch, self.poll_s, self.lease_s = batch, poll_s, lease_s
        self.retention = timedelta(days=retention_days)
        self.metrics = metrics
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._last_purge = 0.0
        self._oldest: tuple[int | None, float] = (None, 0.0)  # the oldest unsent row's id, first seen at
        self._handed: list[dict] = []  # committed by this process, claimed at insert, not published yet

    def wake(self) -> None:
        """Thread-safe nudge after a commit, so events leave in milliseconds rather than a poll."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    @contextlib.contextmanager
    def handing(self, engine: Engine) -> Iterator:
        """A transaction whose queued events this relay publishes as soon as it commits (the unit of
        work's). Until the relay runs, or once it stops, a plain transaction: the rows wait for a claim."""
        handoff = Handoff(time.time() + self.lease_s) if self._loop is not None and not self._stopping else None
        with engine.begin() as conn:
            if handoff is not None:
                conn.info[HANDOFF] = handoff
            try:
                yield conn
            finally:
                conn.info.pop(HANDOFF, None)  # the info outlives the transaction (the pooled connection's)
        if handoff is not None and handoff.rows and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._take, handoff.rows)
        else:
            self.wake()

    def _take(self, rows: list[dict]) -> None:
        self._handed.extend(rows)
        self._wakeup.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        backoff = self.poll_s
        while not self._stopping:
            try:
                sent, failed = await self.publish_once()
                backoff = self.poll_s if not failed else min(backoff * 2, 5.0)
                if sent and not failed:
                    continue  # more may be waiting
            except Exception:  # noqa: BLE001 - the relay must outlive any single failure
                log.exception("outbox relay iteration failed")
                backoff = min(backoff * 2, 5.0)
            self._wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=backoff)

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop the loop; make one last attempt to publish what is pending."""
        self._stopping = True
        self._wakeup.set()
        if self.bus.connected:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drain(), timeout=drain_timeout)

    async def _drain(self) -> None:
        while (await self.publish_once())[0]:
            pass

    async def publish_once(self) -> tuple[int, int]:
        """Publish what was handed over, else a claimed batch, with gathered acks; mark what was
        acknowledged sent. (sent, failed)"""
        if not self.bus.connected:
            if self._handed:  # give them back: the first claim after NATS returns takes them
                handed, self._handed = self._handed, []
                await asyncio.to_thread(self._settle, [], [r["event_id"] for r in handed])
            return 0, 1 if await asyncio.to_thread(self._has_pending) else 0
        if self._handed:
            rows, self._handed = self._handed[:self.batch], self._handed[self.batch:]
        else:
            rows = [r._asdict() for r in await asyncio.to_thread(self._claim)]
        if not rows:
            await asyncio.to_thread(self._housekeeping)
            return 0, 0
        results = await asyncio.gather(
            *(self.bus.publish(r["subject"], r["payload"], msg_id=r["event_id"]) for r in rows),
            return_exceptions=True,
        )
        sent = [r["event_id"] for r, res in zip(rows, results) if not isinstance(res, BaseException)]
        failed = [r["event_id"] for r, res in zip(rows, results) if isinstance(res, BaseException)]
        await asyncio.to_thread(self._settle, sent, failed)
        if failed:
            first = next(res for res in results if isinstance(res, BaseException))
            log.warning("outbox publish failed", extra={"fields": {"failed": len(failed), "error": repr(first)}})
        if self.metrics is not None:
            self.metrics.outbox_published.inc(len(sent))
            self.metrics.outbox_publish_errors.inc(len(failed))
        return len(sent), len(failed)

    # --- database side, run in a thread ---------------------------------------------------------

    def _claim(self):  # noqa: ANN202
        t = self.table
        now = time.time()
        claimable = (t.c.sent_at.is_(None)) & ((t.c.claimed_until.is_(None)) | (t.c.claimed_until < now))
        with reading(self.engine) as conn:  # most passes find nothing: no write lock for that
            if conn.execute(select(t.c.id).where(claimable).limit(1)).first() is None:
                return []
        ids = select(t.c.id).where(claimable).order_by(t.c.id).limit(self.batch).scalar_subquery()
        # The outer WHERE repeats the condition so PostgreSQL re-checks it on a row another relay
        # claimed meanwhile; SQLite serialises writers anyway.
        stmt = (update(t).where(t.c.id.in_(ids)).where(claimable)
                .values(claimed_until=now + self.lease_s)
                .returning(t.c.id, t.c.event_id, t.c.subject, t.c.payload))
        with self.engine.begin() as conn:
            rows = conn.execute(stmt).all()
        return sorted(rows, key=lambda r: r.id)

    def _settle(self, sent: list[str], failed: list[str]) -> None:
        """Mark what was published sent, and release what was not (by event id)."""
        t = self.table
        with self.engine.begin() as conn:
            if sent:
                conn.execute(update(t).where(t.c.event_id.in_(sent)).values(sent_at=datetime.now(timezone.utc)))
            if failed:  # release at once; the backoff in run() spaces the retries
                conn.execute(update(t).where(t.c.event_id.in_(failed)).values(claimed_until=None))

    def _has_pending(self) -> bool:
        with reading(self.engine) as conn:
            return conn.execute(select(self.table.c.id).where(self.table.c.sent_at.is_(None)).limit(1)).first() is not None

    def pending(self) -> int:
        with reading(self.engine) as conn:
            return conn.execute(select(func.count()).where(self.table.c.sent_at.is_(None))).scalar_one()

    def oldest_age(self) -> float:
        """Seconds the oldest unsent event has waited, as this process saw it (0 when none waits): a
        relay that cannot publish shows here long before the backlog looks large. Measured on this
        process's monotonic clock from when it first saw that row unsent, not from ``created_at``,
        which is the service's clock (moved by hand in demo and test mode)."""
        with reading(self.engine) as conn:
            oldest = conn.execute(select(func.min(self.table.c.id)).where(self.table.c.sent_at.is_(None))).scalar()
        if oldest != self._oldest[0]:
            self._oldest = (oldest, time.monotonic())
        return 0.0 if oldest is None else time.monotonic() - self._oldest[1]

    def _housekeeping(self) -> None:
        if time.monotonic() - self._last_purge < 3600:
            return
        self._last_purge = time.monotonic()
        cutoff = datetime.now(timezone.utc) - self.retention
        with self.engine.begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.sent_at < cutoff))
