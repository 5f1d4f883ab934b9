"""Supervision's use cases on a real database, without a bus: shuffled batches of one case's
events leave the same stored state as ordered ones, and a redelivered batch changes nothing."""
from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from services.supervision import tables
from services.supervision.service import Supervision, SupervisionMetrics, apply_events
from shared.clock import ManualClock
from shared.consumer import Delivery
from shared.db import UnitOfWork, make_engine, migrate
from shared.directory import load_directory
from shared.policy import load_policy
from shared.settings import REPO_ROOT, Settings
from tests.test_supervision_domain import T0, lifecycle

CONFIG = REPO_ROOT / "deploy" / "config"


def stored_state(database, name: str, batches: list[list]) -> dict:  # noqa: ANN001
    url = database(name)
    migrate("supervision", url)
    engine = make_engine(url)
    sup = Supervision(uow=UnitOfWork(engine), directory=load_directory(CONFIG), policy=load_policy(CONFIG),
                      clock=ManualClock(T0), metrics=SupervisionMetrics(), settings=Settings())
    for batch in batches:
        with sup.uow.begin() as conn:
            apply_events(sup, conn, [Delivery(e, e.subject, e.occurred_at) for e in batch])
    with engine.connect() as conn:
        row = dict(conn.execute(select(tables.cases)).one()._mapping)
        statuses = sorted(conn.execute(select(tables.timeline.c.type, tables.timeline.c.status)).all())
    engine.dispose()
    return {"case": row, "timeline": statuses}


@pytest.mark.parametrize("seed", range(3))
def test_shuffled_batches_store_the_same_state_as_ordered_delivery(database, seed: int) -> None:  # noqa: ANN001
    events = lifecycle()[:-1]  # supervision decides the closing itself
    shuffled = events[:]
    random.Random(seed).shuffle(shuffled)
    cut = len(shuffled) // 3
    ordered = stored_state(database, f"ordered{seed}", [[e] for e in events])
    mixed = stored_state(database, f"shuffled{seed}", [shuffled[:cut], shuffled[cut:2 * cut], shuffled[2 * cut:]])
    assert mixed == ordered
    assert ordered["case"]["state"] == "closed"
    assert {s for _, s in ordered["timeline"]} == {"applied"}


def replica(url: str) -> Supervision:
    return Supervision(uow=UnitOfWork(make_engine(url)), directory=load_directory(CONFIG),
                       policy=load_policy(CONFIG), clock=ManualClock(T0), metrics=SupervisionMetrics(),
                       settings=Settings())


def test_two_replicas_folding_one_case_at_once_leave_it_in_the_state_of_all_its_events(database) -> None:  # noqa: ANN001
    """Found by the fault matrix on PostgreSQL: replica B re-folded a case without replica A's
    uncommitted receipt and overwrote A's state with ``new``; the case was never folded again."""
    import threading

    url = database("supervision_replicas")
    migrate("supervision", url)
    received, assigned, co = lifecycle()[:3]
    a, b = replica(url), replica(url)
    with a.uow.begin() as conn:  # the assignment came first: the case waits for its receipt
        apply_events(a, conn, [Delivery(assigned, assigned.subject, assigned.occurred_at)])
    a_in_transaction, b_done = threading.Event(), threading.Event()

    def replica_a() -> None:
        with a.uow.begin() as conn:
            apply_events(a, conn, [Delivery(received, received.subject, received.occurred_at)])
            a_in_transaction.set()
            b_done.wait(timeout=2)  # B's chance to fold the case while A's receipt is uncommitted

    def replica_b() -> None:
        a_in_transaction.wait(timeout=30)
        with b.uow.begin() as conn:
            apply_events(b, conn, [Delivery(co, co.subject, co.occurred_at)])
        b_done.set()

    threads = [threading.Thread(target=replica_a), threading.Thread(target=replica_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with a.uow.engine.connect() as conn:
        state = conn.execute(select(tables.cases.c.state)).scalar_one()
        statuses = set(conn.execute(select(tables.timeline.c.status)).scalars())
    a.uow.engine.dispose()
    b.uow.engine.dispose()
    assert (state, statuses) == ("assigned", {"applied"})
