"""Routing alone, without a bus: how fast its consumer's handlers route new cases (``CaseReceived``),
one transaction per batch as the consumer applies them.

    .venv/bin/python -m bench.routing_apply [--cases 3000] [--batch 100] [--db sqlite|postgres] [--profile]

Cases come from the bench's drive rows (bench/cases.py: every township, the categories, some
important ones), as intake would publish them. ``--profile`` prints where the time goes (cProfile).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
import uuid
from datetime import datetime, timedelta, timezone

from bench.cases import drive_row
from bench.supervision_apply import database
from services.routing import handlers, learning
from services.routing.classifier import Classifier
from services.routing.service import Routing, RoutingMetrics
from shared import events as ev
from shared.clock import ManualClock
from shared.consumer import Delivery
from shared.db import UnitOfWork, make_engine, migrate
from shared.directory import load_directory
from shared.rules import load_routing
from shared.settings import REPO_ROOT, Settings

CONFIG = REPO_ROOT / "deploy" / "config"
T0 = datetime(2026, 5, 11, 1, 0, tzinfo=timezone.utc)
INTAKE = ev.Actor(kind="service", id="intake")


def received(n: int) -> ev.CaseReceived:
    row = drive_row("rt", n)
    return ev.CaseReceived(
        case_id=f"QS-2026-{n:06d}", occurred_at=T0 + timedelta(seconds=n), actor=INTAKE, channel="walk_in",
        title=row["title"], content=row["content"], category=row.get("category"), township=row["township"],
        people_count=int(row.get("people_count") or 1), collective=int(row.get("people_count") or 1) >= 5,
        resident=ev.ResidentRef(name="王某", masked_id="331082********0019", id_hash=uuid.uuid4().hex * 2,
                                phone="13812345678"))


def routing(url: str, tmp: str) -> Routing:
    migrate("routing", url)
    settings = Settings(data_dir=tmp)
    directory = load_directory(CONFIG)
    config = load_routing(CONFIG, directory)
    uow = UnitOfWork(make_engine(url))
    classifier = Classifier(directory, settings.data_dir / "jieba", source=learning.ExampleSource(uow.engine, config,
                                                                                                  directory))
    classifier.warm_up()
    return Routing(uow=uow, directory=directory, config=config, classifier=classifier, clock=ManualClock(T0),
                   metrics=RoutingMetrics(), settings=settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("XF_TEST_POSTGRES_URL"))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    import tempfile
    with tempfile.TemporaryDirectory() as tmp, database(args.db, args.pg_url) as url:
        r = routing(url, tmp)
        apply = handlers.HANDLERS.bind(r).apply
        events = [received(n) for n in range(args.cases)]
        profile = cProfile.Profile() if args.profile else None
        start, cpu = time.perf_counter(), time.process_time()
        if profile:
            profile.enable()
        for at in range(0, len(events), args.batch):
            with r.uow.begin() as conn:
                apply(conn, [Delivery(e, e.subject, e.occurred_at) for e in events[at:at + args.batch]])
        if profile:
            profile.disable()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"routing on {args.db}: {len(events)} cases in {seconds:.2f} s = {len(events) / seconds:.0f}/s; "
              f"{1000 * cpu / len(events):.2f} CPU ms per case")
        if profile:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        r.uow.engine.dispose()


if __name__ == "__main__":
    main()
