"""Group commit: one writer per process stores what concurrent requests bring, many per transaction.

A request thread checks its input, hands it to :meth:`GroupCommit.submit` and waits. The writer
thread takes everything queued, writes it in one transaction, commits, and answers each waiting
request. While one transaction commits, the next requests pile up and go together in the next, so
under load the database sees tens of cases per commit instead of one, and the request threads no
longer queue for SQLite's write lock (each ``BEGIN IMMEDIATE`` waited in the busy handler's growing
sleeps). At low load a batch is one request, with no added wait.

Items that must not share a transaction (two requests with one Idempotency-Key: the second must see
the first's answer) say so through ``key``; the second waits for the next batch.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from sqlalchemy import Connection

from shared.db import DB_UNAVAILABLE, UnitOfWork

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """``write(conn, items)`` stores a batch in the caller's transaction and returns one result per item."""

    def __init__(self, uow: UnitOfWork, write: Callable[[Connection, Sequence[Item]], list[Result]], *,
                 key: Callable[[Item], Hashable | None] = lambda _item: None, max_batch: int = 200,
                 name: str = "group-commit", committed: Callable[[int], None] | None = None) -> None:
        """``committed(n)`` is told the size of each committed batch (a metric)."""
        self.uow, self.write, self.key, self.max_batch, self.name = uow, write, key, max_batch, name
        self.committed = committed
        self._queue: queue.SimpleQueue[tuple[Item, Future] | None] = queue.SimpleQueue()
        self._held: list[tuple[Item, Future]] = []  # deferred to the next batch (a key already in this one)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: Item, timeout: float | None = None) -> Result:
        """Store ``item`` with whatever else is waiting; its result once committed, or the write's error."""
        return self._queue_up(item).result(timeout)

    async def stored(self, item: Item) -> Result:
        """:meth:`submit` for a coroutine: the event loop goes on while the item waits for its commit."""
        return await asyncio.wrap_future(self._queue_up(item))

    def _queue_up(self, item: Item) -> Future:
        self._ensure_running()
        done: Future = Future()
        self._queue.put((item, done))
        return done

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(30)

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._commit(batch)

    def _next_batch(self) -> list[tuple[Item, Future]] | None:
        """The held items first, then the queue's, up to ``max_batch``, one per key; blocks for the first."""
        waiting, self._held = self._held, []
        if not waiting:
            first = self._queue.get()
            if first is None:
                return None
            waiting = [first]
        while len(waiting) < self.max_batch:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                self._queue.put(None)  # stop after this batch
                break
            waiting.append(entry)
        batch, keys = [], set()
        for entry in waiting:
            k = self.key(entry[0])
            if k is not None:
                if k in keys:
                    self._held.append(entry)
                    continue
                keys.add(k)
            batch.append(entry)
        return batch

    def _commit(self, batch: list[tuple[Item, Future]]) -> None:
        try:
            with self.uow.begin() as conn:
                results = self.write(conn, [item for item, _ in batch])
        except DB_UNAVAILABLE as exc:  # every item gets it (a 503); none alone: each would wait the lock again
            for _, done in batch:
                done.set_exception(exc)
            return
        except Exception as exc:  # noqa: BLE001 - one bad item must not fail the others: each alone
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.warning("group commit failed; writing its items one by one", extra={"fields": {"error": repr(exc)}})
            for entry in batch:
                self._commit([entry])
            return
        if self.committed is not None:
            self.committed(len(batch))
        for (_, done), result in zip(batch, results):
            done.set_result(result)
