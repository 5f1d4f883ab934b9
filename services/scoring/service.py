"""Scoring's use cases: keep the projection, answer for any period and filter, close a period,
and rebuild the projection from the stream."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from prometheus_client import Counter
from sqlalchemy import Connection, delete, select

from services.scoring import domain, tables
from shared import events as ev
from shared.clock import Clock
from shared.db import UnitOfWork, insert_ignore
from shared.directory import Directory
from shared.errors import Conflict, FieldError, InvalidInput
from shared.metrics import ServiceMetrics
from shared.outbox import enqueue
from shared.policy import CHINA_TZ
from shared.scoring_weights import Weights

FILTERS = ("unit", "township", "channel", "category", "drive", "leader")
_COLUMN = {"unit": "lead_unit", "township": "township", "channel": "channel", "category": "category",
           "drive": "drive_id", "leader": "leader_id"}


class ScoringMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("scoring")
        self.reports = Counter("xf_scoring_reports_total", "Reports served, by format", ["format"],
                               registry=self.registry)


@dataclass
class Scoring:
    uow: UnitOfWork
    directory: Directory
    weights: Weights
    clock: Clock
    metrics: ScoringMetrics


# --- the projection -----------------------------------------------------------------------------

def apply_events(scoring: Scoring, conn: Connection, events: list[ev.Event]) -> None:
    c = tables.case_facts
    ids = {e.case_id for e in events if isinstance(e, ev.CaseEvent)}
    facts = {r.case_id: dict(r._mapping) for r in conn.execute(select(c).where(c.c.case_id.in_(ids)))} if ids else {}
    fresh = set(ids) - set(facts)
    for e in events:
        if type(e) in domain.FACT_RULES:
            domain.FACT_RULES[type(e)](facts.setdefault(e.case_id, domain.new_fact(e.case_id)), e)
        elif isinstance(e, ev.NightVisitLogged):
            insert_ignore(conn, tables.visits, [{
                "visit_id": e.visit_id, "cadre_unit": e.cadre_unit, "township": e.township, "visited_on": e.visited_on,
                "households_visited": e.households_visited, "case_ids": e.case_ids}])
        elif isinstance(e, ev.DriveOpened):
            insert_ignore(conn, tables.drives, [{"drive_id": e.drive_id, "kind": e.kind, "name": e.name}])
    if fresh:
        conn.execute(c.insert(), [facts[i] for i in fresh])
    for case_id in set(facts) - fresh:
        conn.execute(c.update().where(c.c.case_id == case_id).values(**facts[case_id]))


# --- periods and figures ------------------------------------------------------------------------

def period_bounds(period: str) -> tuple[datetime, datetime]:
    """2026 · 2026-Q3 · 2026-05 · 2026-01-01..2026-03-31 (county dates, both ends included)."""
    def at(d: date) -> datetime:
        return datetime.combine(d, time(0), CHINA_TZ)
    if m := re.fullmatch(r"(\d{4})", period):
        y = int(m[1])
        return at(date(y, 1, 1)), at(date(y + 1, 1, 1))
    if m := re.fullmatch(r"(\d{4})-Q([1-4])", period):
        y, q = int(m[1]), int(m[2])
        return at(date(y, 3 * q - 2, 1)), at(date(y + (q == 4), 1 if q == 4 else 3 * q + 1, 1))
    if m := re.fullmatch(r"(\d{4})-(\d{2})", period):
        y, mo = int(m[1]), int(m[2])
        if 1 <= mo <= 12:
            return at(date(y, mo, 1)), at(date(y + (mo == 12), 1 if mo == 12 else mo + 1, 1))
    if m := re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", period):
        start, end = date.fromisoformat(m[1]), date.fromisoformat(m[2])
        if start <= end:
            return at(start), at(end + timedelta(days=1))
    raise InvalidInput([FieldError("period", "use 2026, 2026-Q3, 2026-05 or 2026-01-01..2026-03-31")])


def facts_in(conn: Connection, period: str, filters: dict[str, str] | None = None) -> list[dict]:
    start, end = period_bounds(period)
    c = tables.case_facts
    q = select(c).where(c.c.received_at >= start, c.c.received_at < end)
    for key, value in (filters or {}).items():
        if value:
            q = q.where(c.c[_COLUMN[key]] == value)
    return [dict(r._mapping) for r in conn.execute(q.order_by(c.c.case_id))]


def report(scoring: Scoring, period: str, filters: dict[str, str] | None = None) -> dict:
    """The figures, per-channel figures, scorecards, accountability and narrative of a period.
    A closed period answers from its frozen figures (unfiltered)."""
    filters = {k: v for k, v in (filters or {}).items() if v}
    with scoring.uow.engine.connect() as conn:
        if not filters:
            frozen = conn.execute(select(tables.frozen_periods.c.report)
                                  .where(tables.frozen_periods.c.period == period)).scalar()
            if frozen is not None:
                return frozen
        facts = facts_in(conn, period, filters)
        origins = _repeat_origins(conn, facts)
        visits = [dict(r._mapping) for r in conn.execute(select(tables.visits))]
        drives = {r.drive_id: dict(r._mapping) for r in conn.execute(select(tables.drives))}
    from services.scoring import reports
    start, end = period_bounds(period)
    body = {
        "period": period, "from": start.date().isoformat(), "to": (end - timedelta(days=1)).date().isoformat(),
        "filters": filters, "frozen": False, "figures": domain.figures(facts),
        "channels": reports.channel_figures(facts, visits, drives, start, end),
        "scorecards": scorecards(scoring, facts),
        "accountability": domain.accountability(facts, origins, scoring.directory),
        "rounding": "rates are shares 0..1; the narrative rounds percentages half-up to one decimal",
    }
    body["narrative"] = reports.narrative(scoring.directory, body)
    return body


def _repeat_origins(conn: Connection, facts: list[dict]) -> dict[str, dict]:
    """The earlier cases that ``facts`` repeat, whatever period they belong to."""
    ids = {f["repeat_of"] for f in facts if f["repeat_of"]}
    c = tables.case_facts
    return {r.case_id: dict(r._mapping) for r in conn.execute(select(c).where(c.c.case_id.in_(ids)))} if ids else {}


def scorecards(scoring: Scoring, facts: list[dict]) -> dict[str, list[dict]]:
    """Every unit's card, ranked among townships and among departments."""
    by_unit: dict[str, list[dict]] = {code: [] for code in scoring.directory.units}
    for f in facts:
        if f["lead_unit"] in by_unit:
            by_unit[f["lead_unit"]].append(f)
    cards = {code: domain.scorecard(code, domain.figures(fs), scoring.weights) for code, fs in by_unit.items()}
    kinds = {code: u.kind for code, u in scoring.directory.units.items()}
    return {"townships": domain.rank([c for u, c in cards.items() if kinds[u] == "township"]),
            "departments": domain.rank([c for u, c in cards.items() if kinds[u] != "township"])}


def close_period(scoring: Scoring, period: str, closed_by: str) -> dict:
    """Freeze a period's report and publish ScorecardsPublished."""
    body = report(scoring, period)
    if body.get("frozen"):
        raise Conflict(f"period {period} is already closed")
    now = scoring.clock.now()
    body = {**body, "frozen": True}
    scores = [ev.UnitScore(unit=c["unit"], score=c["score"], rank=c["rank"])
              for group in body["scorecards"].values() for c in group]
    frozen = json.loads(json.dumps(body, default=str))
    with scoring.uow.begin() as conn:
        conn.execute(tables.frozen_periods.insert(), {"period": period, "report": frozen, "closed_at": now})
        enqueue(conn, tables.outbox, [ev.ScorecardsPublished(occurred_at=now, actor=ev.Actor(kind="supervisor",
                                                                                              id=closed_by),
                                                             period=period, scores=scores)], now)
    return frozen


# --- rebuild ------------------------------------------------------------------------------------

def drop_projection(scoring: Scoring) -> None:
    """Empty the projection and its inbox (frozen periods stay) before a replay."""
    with scoring.uow.begin() as conn:
        for table in tables.PROJECTION + (tables.inbox,):
            conn.execute(delete(table))
