"""Supervision alone, without a bus: how fast ``apply_events`` folds events in, and how long a sweep
takes over many open cases with nothing due.

    .venv/bin/python -m bench.supervision_apply                    # SQLite, and PostgreSQL if XF_TEST_POSTGRES_URL
    .venv/bin/python -m bench.supervision_apply --cases 1000 --sweep-cases 2000 --db sqlite

apply: ``--cases`` cases, each CaseReceived, CaseAssigned (lead), UnitSigned, AcceptanceDecided
(accepted, so an acceptance notice is written) and CaseReplied (an opinion is written), delivered
stage by stage (every case's receipt, then every assignment, …) in batches of ``--batch`` deliveries,
one transaction per batch, as the consumer does; events applied per second over the whole run.
``--no-documents`` leaves out the notices' DOCX rendering (most of the time of the written events).
sweep: ``--sweep-cases`` cases received and assigned (open, their sign-for due in days), then one
``sweep`` at a time when nothing is due; its seconds and how many events it sent (0).

Each database is fresh: a SQLite file in a temp folder, or a PostgreSQL schema dropped afterwards.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import text

from services.supervision import documents
from services.supervision.service import Supervision, SupervisionMetrics, apply_events, sweep
from shared import events as ev
from shared.clock import ManualClock
from shared.consumer import Delivery
from shared.db import UnitOfWork, make_engine, migrate
from shared.directory import load_directory
from shared.policy import load_policy
from shared.settings import REPO_ROOT, Settings

CONFIG = REPO_ROOT / "deploy" / "config"
T0 = datetime(2026, 5, 11, 1, 0, tzinfo=timezone.utc)  # Monday 09:00 in the county
SYS = ev.Actor(kind="service", id="bench")
UNIT = ev.Actor(kind="unit", id="forestry")


def case_id(i: int) -> str:
    return f"QS-2026-{i:06d}"


def brief() -> ev.CaseBrief:
    return ev.CaseBrief(title="林木采伐许可", content="c", channel="walk_in", received_at=T0, township="xishan",
                        resident_name="李秀英")


def stages(i: int) -> list[ev.Event]:
    """One case's five events, a second apart from the next case's."""
    c, at = case_id(i), T0 + timedelta(seconds=i)
    return [
        ev.CaseReceived(case_id=c, occurred_at=at, actor=SYS, channel="walk_in", title="林木采伐许可",
                        content="申请采伐自留山林木", township="xishan",
                        resident=ev.ResidentRef(name="李秀英", masked_id="331082********0019", id_hash="h" * 64,
                                                phone="13812345678")),
        ev.CaseAssigned(case_id=c, occurred_at=at + timedelta(hours=1), actor=SYS, unit="forestry", role="lead",
                        case=brief()),
        ev.UnitSigned(case_id=c, occurred_at=at + timedelta(days=1), actor=UNIT, unit="forestry"),
        ev.AcceptanceDecided(case_id=c, occurred_at=at + timedelta(days=2), actor=UNIT, unit="forestry",
                             decision="accepted"),
        ev.CaseReplied(case_id=c, occurred_at=at + timedelta(days=10), actor=UNIT, unit="forestry",
                       result="resolved", text="已依法办理。"),
    ]


@contextmanager
def database(kind: str, pg_url: str | None) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'supervision.db'}"
        return
    assert pg_url, "PostgreSQL needs --pg-url or XF_TEST_POSTGRES_URL"
    schema = f"xf_bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def supervision(url: str, now: datetime) -> Supervision:
    migrate("supervision", url)
    return Supervision(uow=UnitOfWork(make_engine(url)), directory=load_directory(CONFIG), policy=load_policy(CONFIG),
                       clock=ManualClock(now), metrics=SupervisionMetrics(), settings=Settings())


def deliver(sup: Supervision, events: list[ev.Event], batch: int) -> float:
    """Seconds to apply ``events`` in consumer-sized batches, one transaction each."""
    start = time.perf_counter()
    for at in range(0, len(events), batch):
        with sup.uow.begin() as conn:
            apply_events(sup, conn, [Delivery(e, e.subject, e.occurred_at) for e in events[at:at + batch]])
    return time.perf_counter() - start


def by_stage(cases: int, upto: int = 5) -> list[ev.Event]:
    per_case = [stages(i)[:upto] for i in range(cases)]
    return [events[k] for k in range(upto) for events in per_case]


def bench_apply(kind: str, pg_url: str | None, cases: int, batch: int) -> dict:
    with database(kind, pg_url) as url:
        sup = supervision(url, T0 + timedelta(days=11))
        events = by_stage(cases)
        seconds = deliver(sup, events, batch)
        sup.uow.engine.dispose()
    return {"events": len(events), "seconds": seconds, "per_s": len(events) / seconds}


def bench_sweep(kind: str, pg_url: str | None, cases: int, batch: int) -> dict:
    with database(kind, pg_url) as url:
        sup = supervision(url, T0 + timedelta(hours=2) + timedelta(seconds=cases))  # no sign-for due yet
        setup = deliver(sup, by_stage(cases, upto=2), batch)
        start = time.perf_counter()
        sent = sweep(sup)
        seconds = time.perf_counter() - start
        sup.uow.engine.dispose()
    return {"cases": cases, "seconds": seconds, "sent": sent, "setup_s": setup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--sweep-cases", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pg-url", default=os.environ.get("XF_TEST_POSTGRES_URL"))
    parser.add_argument("--skip", choices=["apply", "sweep"], action="append", default=[])
    parser.add_argument("--no-documents", action="store_true",
                        help="render no written notices (DOCX), to see the fold's own cost")
    args = parser.parse_args()
    if args.no_documents:
        documents.issue = lambda *_a, **_k: None
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if args.db == "both" and not args.pg_url:
        kinds = ["sqlite"]
    for kind in kinds:
        if "apply" not in args.skip:
            r = bench_apply(kind, args.pg_url, args.cases, args.batch)
            print(f"{kind:8} apply  {r['events']} events in batches of {args.batch}: {r['seconds']:.1f} s, "
                  f"{r['per_s']:.0f} events/s", flush=True)
        if "sweep" not in args.skip:
            r = bench_sweep(kind, args.pg_url, args.sweep_cases, args.batch)
            print(f"{kind:8} sweep  {r['cases']} open cases, nothing due: {r['seconds']:.2f} s, sent {r['sent']} "
                  f"(setup {r['setup_s']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
