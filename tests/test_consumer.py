"""The shared durable consumer against a real nats-server: bounded retries, then the dead-letter
subject; poison never blocks what follows; a redelivered event changes nothing."""
from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import MetaData

from services.runtime import NatsServer
from shared import events as ev
from shared.bus import Bus
from shared.consumer import ConsumerSpec, DurableConsumer, HandlerTable
from shared.db import UnitOfWork, make_engine
from shared.inbox import inbox_table
from shared.metrics import ServiceMetrics
from shared.settings import Settings
from tests.helpers import read_subject_async

ACTOR = ev.Actor(kind="system")


def closed(case_id: str) -> ev.CaseClosed:
    return ev.CaseClosed(case_id=case_id, actor=ACTOR, reason="satisfied")


def consumer_db(tmp_path: Path):  # noqa: ANN201 - (engine, inbox): a consumer's SQLite database
    engine = make_engine(f"sqlite:///{tmp_path}/consumer.db")
    md = MetaData()
    inbox = inbox_table(md)
    md.create_all(engine)
    return engine, inbox


async def run_consumer(tmp_path: Path, nats_server: NatsServer, publish: list[tuple[str, bytes, str]],
                       fail_on: str | None, until: int) -> tuple[list[str], dict[str, int], ServiceMetrics]:
    """Publish raw messages, consume them with a short-backoff spec; (applied case ids, attempts)."""
    settings = Settings(nats_url=nats_server.url, data_dir=tmp_path)
    engine, inbox = consumer_db(tmp_path)
    applied: list[str] = []
    attempts: dict[str, int] = {}

    def apply(_ctx, _conn, delivery) -> None:  # noqa: ANN001
        e = delivery.event
        attempts[e.case_id] = attempts.get(e.case_id, 0) + 1
        if e.case_id == fail_on:
            raise RuntimeError("cannot apply")
        applied.append(e.case_id)

    bus = Bus(settings, "test")
    metrics = ServiceMetrics("test")
    table = HandlerTable({ev.CaseClosed: apply})
    spec = ConsumerSpec(durable="test", filter_subjects=table.subjects, max_deliver=3, backoff_s=(0.05, 0.1))
    consumer = DurableConsumer("test", bus, UnitOfWork(engine), inbox, spec, table.bind(None), metrics)
    bus.start()  # connects, creates the durable consumer, starts the broker's subscriber
    await bus.wait_connected(10)
    for subject, data, msg_id in publish:
        await bus.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
    deadline = asyncio.get_running_loop().time() + 20
    while len(set(applied)) < until and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    dead: list = []
    while fail_on and not dead and asyncio.get_running_loop().time() < deadline:
        dead = await read_subject_async(nats_server.url, "deadletter.>", stream="DEADLETTER")
    await consumer.stop()
    await bus.close()
    engine.dispose()
    return applied, attempts, (metrics, dead)


def test_a_failing_event_is_retried_a_bounded_number_of_times_then_dead_lettered(
        tmp_path: Path, nats_server: NatsServer) -> None:
    msgs = [("cases.closed", ev.encode(closed(f"C{i}")), f"m{i}") for i in range(5)]
    applied, attempts, (metrics, dead) = asyncio.run(
        run_consumer(tmp_path, nats_server, msgs, fail_on="C2", until=4))
    assert sorted(set(applied)) == ["C0", "C1", "C3", "C4"]
    assert attempts["C2"] >= 3  # the batch attempt plus its own retries, then it stops
    [(headers, event)] = dead
    assert event.case_id == "C2" and headers["Xf-Error-Kind"] == "failed"
    assert "failed 3 times" in headers["Xf-Error"] and headers["Xf-Original-Subject"] == "cases.closed"
    assert metrics.dead_letters.labels("test", "failed")._value.get() == 1


def test_a_redelivered_event_is_applied_once(tmp_path: Path, nats_server: NatsServer) -> None:
    event = closed("C9")
    # Published twice under different message ids: the stream keeps both, the inbox applies one.
    msgs = [("cases.closed", ev.encode(event), "first"), ("cases.closed", ev.encode(event), "second"),
            ("cases.closed", ev.encode(closed("C10")), "third")]
    applied, _attempts, _ = asyncio.run(run_consumer(tmp_path, nats_server, msgs, fail_on=None, until=2))
    assert sorted(applied) == ["C10", "C9"]


def test_a_lone_event_is_applied_at_once_and_a_backlog_in_batches(tmp_path: Path, nats_server: NatsServer) -> None:
    """The fetch timeout is 10 s here: a lone event that waited for its batch to fill would take that long."""
    async def scenario() -> tuple[float, list[int]]:
        settings = Settings(nats_url=nats_server.url, data_dir=tmp_path)
        engine, inbox = consumer_db(tmp_path)
        batches: list[int] = []
        table = HandlerTable({ev.CaseClosed: None}, apply_batch=lambda _ctx, _conn, batch: batches.append(len(batch)))
        spec = ConsumerSpec(durable="eager", filter_subjects=table.subjects, fetch_timeout_s=10.0, batch=100)
        bus = Bus(settings, "test")
        consumer = DurableConsumer("test", bus, UnitOfWork(engine), inbox, spec, table.bind(None), ServiceMetrics("t"))
        bus.start()
        await bus.wait_connected(10)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(0.5)  # the consumer is idle, in a pull that lasts 10 s
            started = loop.time()
            await bus.js.publish("cases.closed", ev.encode(closed("LONE")), headers={"Nats-Msg-Id": "lone"})
            while not batches and loop.time() - started < 30:
                await asyncio.sleep(0.01)
            lone = loop.time() - started
            await consumer.stop()  # a backlog builds while it is stopped
            await asyncio.gather(*(bus.js.publish("cases.closed", ev.encode(closed(f"B{i}")),
                                                  headers={"Nats-Msg-Id": f"b{i}"}) for i in range(300)))
            await consumer.subscriber.start()
            while sum(batches) < 301 and loop.time() - started < 60:
                await asyncio.sleep(0.05)
            return lone, batches
        finally:
            await consumer.stop()
            await bus.close()
            engine.dispose()
    lone, batches = asyncio.run(scenario())
    assert batches[0] == 1 and lone < 5.0  # not held for the 10 s fetch timeout
    backlog = batches[1:]
    # The backlog in batches (what waited, up to the batch size), not event by event.
    assert sum(backlog) == 300 and max(backlog) <= 100 and len(backlog) <= 30
