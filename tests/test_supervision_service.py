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
