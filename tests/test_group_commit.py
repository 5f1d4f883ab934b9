"""Group commit (shared/groupcommit.py) and the outbox hand-off (shared/outbox.py): concurrent requests
share transactions, each still gets its own answer, numbers stay gap-free, and the committed events
leave without the relay claiming them."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.exc import OperationalError

from shared.db import UnitOfWork, make_engine
from shared.groupcommit import GroupCommit
from shared.settings import Settings
from tests.helpers import case_body, read_subject, wait_until

metadata = MetaData()
rows = Table("rows", metadata, Column("n", Integer, primary_key=True), Column("name", String(32), unique=True))


@pytest.fixture
def uow(tmp_path: Path) -> UnitOfWork:
    engine = make_engine(f"sqlite:///{tmp_path / 'gc.db'}", lock_timeout_s=2)
    metadata.create_all(engine)
    return UnitOfWork(engine)


def numbered(conn, names: list[str]) -> list[int]:  # noqa: ANN001 - a write that numbers its items gap-free
    last = conn.execute(select(rows.c.n).order_by(rows.c.n.desc()).limit(1)).scalar() or 0
    conn.execute(rows.insert(), [{"n": last + i + 1, "name": name} for i, name in enumerate(names)])
    return [last + i + 1 for i in range(len(names))]


def submit_all(writer: GroupCommit, names: list[str], gate: threading.Event | None = None) -> list:
    """Each name submitted from a thread of its own; with ``gate`` (see ``held``), the first alone, the
    others once its transaction is open."""
    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(writer.submit, names[0], 30)]
        if gate is not None:
            assert gate.wait(30), "the first write did not start"
        futures += [pool.submit(writer.submit, name, 30) for name in names[1:]]
        return [f.exception() or f.result() for f in futures]


def held(writer: GroupCommit, waiting: int) -> threading.Event:
    """Makes the writer's first transaction wait, open, until ``waiting`` more items are queued: those
    then share the next one. The event it returns is set once that first transaction is open."""
    gate, write = threading.Event(), writer.write

    def gated(conn, items):  # noqa: ANN001, ANN202
        if not gate.is_set():
            gate.set()
            wait_until(lambda: writer._queue.qsize() >= waiting, timeout=30, what="the others to queue")
        return write(conn, items)
    writer.write = gated
    return gate


def test_requests_arriving_together_share_a_transaction_and_each_gets_its_own_number(uow: UnitOfWork) -> None:
    sizes: list[int] = []
    writer: GroupCommit = GroupCommit(uow, numbered, committed=sizes.append)
    gate = held(writer, 39)
    try:
        results = submit_all(writer, [f"case-{i}" for i in range(40)], gate)
    finally:
        writer.stop()
    assert sorted(results) == list(range(1, 41))  # gap-free, one each
    assert sum(sizes) == 40 and len(sizes) == 2 and max(sizes) == 39  # the first alone, the 39 waiting in one
    with uow.engine.connect() as conn:
        stored = dict(conn.execute(select(rows.c.name, rows.c.n)).all())
    assert all(stored[f"case-{i}"] == n for i, n in enumerate(results))  # each answer is its own row's


def test_items_with_one_key_never_share_a_transaction(uow: UnitOfWork) -> None:
    batches: list[list[str]] = []

    def write(conn, names):  # noqa: ANN001, ANN202
        batches.append(list(names))
        return numbered(conn, [f"{name}-{len(batches)}" for name in names])
    writer: GroupCommit = GroupCommit(uow, write, key=lambda name: name.split("#")[0])
    gate = held(writer, 4)
    try:
        submit_all(writer, ["first#0", "a#1", "a#2", "b#1", "a#3"], gate)
    finally:
        writer.stop()
    for batch in batches:
        keys = [name.split("#")[0] for name in batch]
        assert len(keys) == len(set(keys)), batches
    assert sorted(n for b in batches for n in b) == ["a#1", "a#2", "a#3", "b#1", "first#0"]


def test_an_item_that_fails_its_batch_fails_alone(uow: UnitOfWork) -> None:
    def write(conn, names):  # noqa: ANN001, ANN202
        if "poison" in names:
            raise ValueError("poison")
        return numbered(conn, names)
    writer: GroupCommit = GroupCommit(uow, write)
    gate = held(writer, 5)
    try:
        results = submit_all(writer, ["first", "x1", "poison", "x2", "x3", "x4"], gate)
    finally:
        writer.stop()
    assert isinstance(results[2], ValueError)
    assert sorted(r for r in results if isinstance(r, int)) == [1, 2, 3, 4, 5]


def test_a_locked_database_fails_the_whole_batch_and_stores_nothing(uow: UnitOfWork, tmp_path: Path) -> None:
    import sqlite3

    writer: GroupCommit = GroupCommit(uow, numbered)
    blocker = sqlite3.connect(tmp_path / "gc.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # as a backup or another process holding the lock would
    try:
        results = submit_all(writer, [f"c{i}" for i in range(5)])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert all(isinstance(r, OperationalError) for r in results)  # each request answers 503
    assert submit_all(writer, ["after"]) == [1]  # nothing was stored meanwhile; the writer goes on
    writer.stop()


def test_concurrent_posts_are_stored_in_fewer_transactions_with_gap_free_numbers(
        intake: TestClient, settings: Settings) -> None:
    metrics = intake.app.state.intake.metrics
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda i: intake.post("/api/v1/cases", json=case_body(n=i % 60, title=f"并发登记第{i % 60}件"),
                                                      headers={"Idempotency-Key": f"gc-{i % 60}"}), range(80)))
    assert {a.status_code for a in answers} == {201}
    numbers = {a.json()["case_number"] for a in answers}
    assert len(numbers) == 60  # the same key twice is one case, answered twice
    seqs = sorted(int(n.rsplit("-", 1)[1]) for n in numbers)
    assert seqs == list(range(seqs[0], seqs[0] + 60))
    by_key: dict[str, set[str]] = {}
    for i, a in enumerate(answers):
        by_key.setdefault(f"gc-{i % 60}", set()).add(a.json()["case_number"])
    assert all(len(v) == 1 for v in by_key.values())
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 20
    commits = metrics.registry.get_sample_value("xf_intake_cases_per_commit_count")
    assert commits is not None and commits <= 80  # a transaction per batch, not per request
    wait_until(lambda: intake.app.state.relay.pending() == 0, what="the outbox to drain")
    published = [e.case_id for _, e in read_subject(settings.nats_url, "cases.received")]
    assert sorted(published) == sorted(numbers)  # each once


def test_committed_events_are_handed_to_the_relay_and_published_without_a_claim(
        intake: TestClient, settings: Settings, intake_db) -> None:  # noqa: ANN001
    relay = intake.app.state.relay
    relay._claim = lambda: []  # the relay's own claims find nothing: only the hand-off can publish
    number = intake.post("/api/v1/cases", json=case_body(title="交给中继的案件")).json()["case_number"]
    wait_until(lambda: relay.pending() == 0, what="the event to be published")
    assert [e.case_id for _, e in read_subject(settings.nats_url, "cases.received")] == [number]
    from services.intake import tables
    with intake_db.connect() as conn:
        row = conn.execute(select(tables.outbox.c.claimed_until, tables.outbox.c.sent_at)).one()
    assert row.sent_at is not None and row.claimed_until is not None  # inserted claimed by this process


def test_handed_events_are_given_back_when_nats_is_away_and_published_when_it_returns(
        intake: TestClient, settings: Settings, intake_db, nats_server) -> None:  # noqa: ANN001
    relay = intake.app.state.relay
    nats_server.stop()
    wait_until(lambda: not relay.bus.connected, what="intake to notice")
    number = intake.post("/api/v1/cases", json=case_body(title="断网时登记")).json()["case_number"]
    from services.intake import tables
    def unclaimed() -> int:
        with intake_db.connect() as conn:
            return len(conn.execute(select(tables.outbox.c.id).where(tables.outbox.c.claimed_until.is_(None))).all())
    wait_until(lambda: unclaimed() == 1, what="the handed row to be released for a claim")
    nats_server.start()
    wait_until(lambda: relay.pending() == 0, timeout=30, what="the outbox to drain")
    assert [e.case_id for _, e in read_subject(settings.nats_url, "cases.received")] == [number]
