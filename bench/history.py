"""A year of valid events, made fast, for scoring's rebuild; and a year of cases in scoring's tables,
made in bulk, for the year's report.

Each case goes the ordinary way (shared/lifecycle.py accepts every step): received, assigned to its
township as lead, signed, accepted, replied, the resident's feedback, closed — 7 events. The events
of one day's case are built once with the event models and encoded; every other case of that day is
the same bytes with its own case number and event ids, so a million events take seconds to make.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, insert, select

from bench.cases import CATEGORIES, CHANNELS
from shared import events as ev
from shared.directory import load_directory
from shared.settings import Settings

YEAR = 2026
EVENTS_PER_CASE = 7
SYS = ev.Actor(kind="service", id="bench")
_CASE = "QS-2026-@@@@@@@"  # the placeholder a template's case number is written with
_ID = "##########"  # and its event ids' tail


def _template(day: datetime, township: str, channel: str, category: str) -> list[tuple[str, bytes, str]]:
    """(subject, encoded event, event id) for a case received on ``day``."""
    t = day.replace(hour=1, tzinfo=timezone.utc)  # 09:00 county time
    brief = ev.CaseBrief(title="村道被占用", content="邻居违规搭建棚屋占用通道", channel=channel, received_at=t,
                         township=township, resident_name="某")
    made = [
        ev.CaseReceived(case_id=_CASE, occurred_at=t, actor=SYS, channel=channel, title="村道被占用",
                        content="邻居违规搭建棚屋占用通道", category=category, township=township,
                        resident=ev.ResidentRef(name="某")),
        ev.CaseAssigned(case_id=_CASE, occurred_at=t + timedelta(minutes=1), actor=SYS, unit=township, role="lead",
                        case=brief, category=category),
        ev.UnitSigned(case_id=_CASE, occurred_at=t + timedelta(hours=3), actor=SYS, unit=township),
        ev.AcceptanceDecided(case_id=_CASE, occurred_at=t + timedelta(days=2), actor=SYS, unit=township,
                             decision="accepted"),
        ev.CaseReplied(case_id=_CASE, occurred_at=t + timedelta(days=12), actor=SYS, unit=township,
                       result="resolved", text="已拆除违建，通道恢复"),
        ev.PetitionerFeedback(case_id=_CASE, occurred_at=t + timedelta(days=14), actor=SYS, satisfied=True),
        ev.CaseClosed(case_id=_CASE, occurred_at=t + timedelta(days=14, minutes=5), actor=SYS, reason="satisfied"),
    ]
    return [(e.subject, ev.encode(e.model_copy(update={"event_id": f"bench-{i}-{_ID}"})), f"bench-{i}-")
            for i, e in enumerate(made)]


def events(n_events: int, seed: int = 1) -> Iterator[tuple[str, bytes, str]]:
    """(subject, data, Nats-Msg-Id) of ``n_events`` events (whole cases: rounded up), the year's cases
    in the order they were received."""
    directory = load_directory(Settings().config_dir)
    townships = sorted(directory.townships)
    rnd = random.Random(seed)
    cases = -(-n_events // EVENTS_PER_CASE)
    per_day = -(-cases // 365)
    n = 0
    for d in range(365):
        day = datetime(YEAR, 1, 1) + timedelta(days=d)
        template = _template(day, rnd.choice(townships), rnd.choice(CHANNELS), rnd.choice(CATEGORIES))
        for _ in range(min(per_day, cases - n)):
            n += 1
            number, tail = f"{n:07d}", f"{n:010d}"
            for subject, data, id_head in template:
                yield (subject, data.replace(b"@@@@@@@", number.encode()).replace(_ID.encode(), tail.encode()),
                       id_head + tail)


async def publish(nc, stream_events: Iterator[tuple[str, bytes, str]], window: int = 1000) -> int:  # noqa: ANN001
    """Straight to the stream, ``window`` acks gathered at a time; how many were stored."""
    js = nc.jetstream(timeout=60)
    stored = 0
    pending = []
    for subject, data, msg_id in stream_events:
        pending.append(js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}))
        if len(pending) >= window:
            stored += len(await asyncio.gather(*pending))
            pending = []
    stored += len(await asyncio.gather(*pending))
    return stored


def multiply_facts(engine, want: int) -> int:  # noqa: ANN001
    """Copies of scoring's case facts under new case numbers (the same days, units and outcomes), made
    by the database itself, until ``want`` cases are there; how many are."""
    from services.scoring.tables import case_facts as c
    with engine.begin() as conn:
        have = conn.execute(select(func.count()).select_from(c)).scalar_one()
        originals = ~c.c.case_id.like("%-x%")
        copy = 0
        while have < want:
            copy += 1
            others = [col for col in c.columns if col.name != "case_id"]
            rows = select(c.c.case_id.concat(f"-x{copy}"), *others).where(originals).limit(want - have)
            conn.execute(insert(c).from_select(["case_id", *(col.name for col in others)], rows))
            before, have = have, conn.execute(select(func.count()).select_from(c)).scalar_one()
            if have == before:  # (counted: psycopg gives no row count for INSERT … SELECT)
                raise RuntimeError("no case facts to copy: did the rebuild apply anything?")
    return have
