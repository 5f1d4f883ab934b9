"""Two routing replicas share the work; killing one mid-stream loses no case and assigns none twice."""
from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import nats
from sqlalchemy import func, select

from services.routing import tables
from services.runtime import NatsServer
from shared import events as ev
from shared.db import make_engine
from tests.helpers import free_port, outbox_pending, read_subject, start_service, stop_process, wait_until

CATEGORIES = ["logging_permit", "wage_arrears", "neighbor_dispute", "pollution", "education", "taxation"]
TOWNSHIPS = ["chengguan", "donghu", "xishan", "nanhe", "matou"]


def received(i: int) -> ev.CaseReceived:
    return ev.CaseReceived(
        case_id=f"QS-2026-{i:06d}", actor=ev.Actor(kind="clerk"), channel="walk_in", title=f"第{i}号案件",
        content="内容", category=CATEGORIES[i % len(CATEGORIES)], township=TOWNSHIPS[i % len(TOWNSHIPS)],
        people_count=6 if i % 10 == 0 else 1, collective=i % 10 == 0, resident=ev.ResidentRef(name="某某"))


async def publish(url: str, numbers: range) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for start in range(numbers.start, numbers.stop, 100):
        batch = [received(i) for i in range(start, min(start + 100, numbers.stop))]
        await asyncio.gather(*(js.publish(e.subject, ev.encode(e), headers={"Nats-Msg-Id": e.event_id})
                               for e in batch))
    await nc.close()


def test_killing_a_routing_replica_mid_stream_loses_no_case_and_assigns_none_twice(
        tmp_path: Path, nats_server: NatsServer, database) -> None:  # noqa: ANN001
    db_url = database("routing")
    env = {"XF_NATS_URL": nats_server.url, "XF_ROUTING_DB_URL": db_url, "XF_DATA_DIR": str(tmp_path / "var"),
           "XF_LOG_LEVEL": "WARNING", "XF_CONSUMER_ACK_WAIT_S": "3", "XF_RELAY_LEASE_S": "3",
           "XF_CONSUMER_BATCH": "10"}  # small batches: the kill lands while both are busy
    victim, survivor = (start_service("routing", free_port(), env, tmp_path) for _ in range(2))
    engine = make_engine(db_url)
    a = tables.assignments

    def routed_cases() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count(a.c.case_id.distinct())).where(a.c.role == "lead")).scalar_one()

    try:
        # Killed mid-stream: both replicas busy with the first cases, 700 more still to come.
        asyncio.run(publish(nats_server.url, range(1, 301)))
        wait_until(lambda: routed_cases() >= 50, what="routing to be under way")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        asyncio.run(publish(nats_server.url, range(301, 1001)))

        wait_until(lambda: routed_cases() == 1000, timeout=120, what="all 1,000 cases to be routed")
        wait_until(lambda: outbox_pending(engine) == 0, timeout=60, what="the outbox to drain (the victim's too)")
        with engine.connect() as conn:
            leads = Counter(conn.execute(select(a.c.case_id).where(a.c.role == "lead")).scalars())
        assert len(leads) == 1000 and set(leads.values()) == {1}

        stored = read_subject(nats_server.url, "cases.assigned.*")
        lead_events = Counter(e.case_id for _, e in stored if e.role == "lead")
        assert len(lead_events) == 1000 and set(lead_events.values()) == {1}  # none lost, none twice
        assert len({e.event_id for _, e in stored}) == len(stored)
        leaders = Counter(e.case_id for _, e in read_subject(nats_server.url, "cases.leader_assigned"))
        assert len(leaders) == 100 and set(leaders.values()) == {1}

    finally:
        engine.dispose()
        assert stop_process(survivor) == 0

