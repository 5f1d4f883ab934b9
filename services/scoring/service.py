"""Scoring's use cases: keep the projection, answer for any period and filter, close a period,
and rebuild the projection from the stream."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property

from prometheus_client import Counter
from sqlalchemy import Connection, Text, bindparam, cast, delete, select

from services.scoring import domain, tables
from shared import events as ev
from shared import lifecycle
from shared.clock import Clock
from shared.consumer import Delivery
from shared.db import UnitOfWork, insert_ignore, lock_keys
from shared.directory import Directory
from shared.errors import Conflict, FieldError, InvalidInput
from shared.metrics import ServiceMetrics
from shared.outbox import enqueue
from shared.policy import CHINA_TZ, DeadlinePolicy
from shared.scoring_weights import Weights
from shared.verdict import check_receipt

DECODED_KEPT = 20_000  # decoded events kept in memory (about 20 MB): a stream's cases are near in time
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
    # The case's fold needs what supervision's has: the deadline policy and how far a department's
    # clock may lag (settings.clock_tolerance_s, for lifecycle.placed_at).
    policy: DeadlinePolicy
    clock_tolerance: timedelta
    decoded: dict[str, ev.Event] = field(default_factory=dict, repr=False)  # load_timelines' memory

    @cached_property
    def agent_days(self) -> dict[str, int]:
        """The time limit in days of each delegated (代办) service type, as supervision folds with."""
        return {code: s.time_limit_days for code, s in self.directory.service_types.items()}


# --- the projection -----------------------------------------------------------------------------

def apply_events(scoring: Scoring, conn: Connection, batch: list[Delivery]) -> None:
    """Project a batch (the live consumer's, or a rebuild's): its lifecycle events join their cases'
    events, each case it touches is re-folded once (``shared/lifecycle.py``, as supervision folds
    it) and its facts, counted from the events the fold applied, stored once; night visits and drives
    are recorded. A second receipt of a case raises :class:`shared.verdict.Refusal` (the consumer
    dead-letters it); events of other types change nothing."""
    cases: list[Delivery] = []
    for d in batch:
        if (record := ev.entry_for(RECORDS, d.event)) is not None:
            record(conn, d.event)
        elif ev.entry_for(lifecycle.TRANSITIONS, d.event) is not None:
            cases.append(d)
    if not cases:
        return
    # Replicas fold one case one at a time (shared/db.py lock_keys), before reading its events.
    lock_keys(conn, "scoring:case", (d.event.case_id for d in cases))
    timelines = load_timelines(conn, {d.event.case_id for d in cases}, scoring.decoded)
    kept = {e.event_id for timeline in timelines.values() for e, _ in timeline}
    received = {e.case_id for timeline in timelines.values() for e, _ in timeline if isinstance(e, ev.CaseReceived)}
    rows = []
    for d in cases:
        e = d.event
        if e.event_id in kept:
            continue  # already kept: the inbox drops redeliveries, this is a backstop
        if isinstance(e, ev.CaseReceived):
            check_receipt(e.case_id, e.case_id in received)
            received.add(e.case_id)
        placed = lifecycle.placed_at(e, d.received_at, scoring.clock_tolerance)
        timelines.setdefault(e.case_id, []).append((e, placed))
        kept.add(e.event_id)
        rows.append({"event_id": e.event_id, "case_id": e.case_id, "type": e.type, "occurred_at": e.occurred_at,
                     "placed_at": placed, "payload": e.model_dump(mode="json")})
    if rows:
        conn.execute(tables.case_events.insert(), rows)
    touched = {case_id for case_id in timelines if timelines[case_id]}
    stored = {case_id: f.as_row() for case_id, f in load_facts(conn, touched).items()}
    facts = {}
    for case_id in touched:
        events, placed = [e for e, _ in timelines[case_id]], [p for _, p in timelines[case_id]]
        counted = domain.counted_facts(case_id, events, placed, scoring.policy, scoring.agent_days)
        if counted is not None:
            facts[case_id] = counted
    store_facts(conn, facts, stored)


def load_timelines(conn: Connection, case_ids: set[str], decoded: dict[str, ev.Event]
                   ) -> dict[str, list[tuple[ev.Event, datetime]]]:
    """The lifecycle events kept of those cases, each with its placed time, by case id (one query).

    A stored event never changes, and a case is re-folded at every batch that touches it: ``decoded``
    keeps the events already read by id, so each payload is parsed once per process, not once per
    fold (the payload comes as text, parsed only when new)."""
    t = tables.case_events
    out: dict[str, list[tuple[ev.Event, datetime]]] = {}
    rows = conn.execute(select(t.c.case_id, t.c.event_id, t.c.placed_at, cast(t.c.payload, Text))
                        .where(t.c.case_id.in_(case_ids)))
    for case_id, event_id, placed_at, payload in rows:
        event = decoded.get(event_id)
        if event is None:
            event = decoded[event_id] = ev.decode_dict(json.loads(payload))
        out.setdefault(case_id, []).append((event, placed_at))
    while len(decoded) > DECODED_KEPT:  # the oldest first
        del decoded[next(iter(decoded))]
    return out


def load_facts(conn: Connection, case_ids: set[str]) -> dict[str, domain.CaseFacts]:
    """The stored facts of those cases that have a row, by case id."""
    if not case_ids:
        return {}
    c = tables.case_facts
    rows = conn.execute(select(c).where(c.c.case_id.in_(case_ids)))
    return {r.case_id: domain.CaseFacts.from_row(r._mapping) for r in rows}


def store_facts(conn: Connection, facts: dict[str, domain.CaseFacts], stored: dict[str, dict]) -> None:
    """Insert the facts of new cases; update, in the cases ``stored`` (as loaded), what changed; a
    stored case without facts now (pending: no receipt behind it) loses its row."""
    c = tables.case_facts
    rows = {case_id: f.as_row() for case_id, f in facts.items()}
    new = [row for case_id, row in rows.items() if case_id not in stored]
    if new:
        conn.execute(c.insert(), new)
    gone = [case_id for case_id in stored if case_id not in rows]
    if gone:
        conn.execute(c.delete().where(c.c.case_id.in_(gone)))
    changed = [{"key": case_id, **rows[case_id]} for case_id, before in stored.items()
               if case_id in rows and rows[case_id] != before]
    if changed:  # one statement for the batch, whole rows
        conn.execute(c.update().where(c.c.case_id == bindparam("key")), changed)


def record_visit(conn: Connection, e: ev.NightVisitLogged) -> None:
    """驻村夜访: the visit and the households visited (its problems are cases of their own)."""
    insert_ignore(conn, tables.visits, [{
        "visit_id": e.visit_id, "cadre_unit": e.cadre_unit, "township": e.township, "visited_on": e.visited_on,
        "households_visited": e.households_visited, "case_ids": e.case_ids, "cadre_kind": e.cadre_kind,
        "visit_format": e.visit_format, "solved_on_spot": e.solved_on_spot, "suggestions": e.suggestions}])


def record_drive(conn: Connection, e: ev.DriveOpened) -> None:
    """矛盾纠纷排查: the drive, to name it in reports."""
    insert_ignore(conn, tables.drives, [{"drive_id": e.drive_id, "kind": e.kind, "name": e.name}])


def record_notice(conn: Connection, e: ev.SupervisionNoticeIssued) -> None:
    """交办通知 and 督办通知: their numbers and cases, for the report."""
    insert_ignore(conn, tables.notices, [{"notice_type": e.notice_type, "notice_no": e.notice_no, "seq": e.seq,
                                          "issued_at": e.occurred_at, "units": e.units, "case_ids": e.case_ids}])


def record_meeting(conn: Connection, e: ev.JointMeetingHeld) -> None:
    """联席会议: for the report, and a mass incident's 一票否决."""
    insert_ignore(conn, tables.meetings, [{"meeting_id": e.meeting_id, "meeting_no": e.meeting_no, "kind": e.kind,
                                           "held_on": e.held_on, "units": e.units, "case_ids": e.case_ids}])


# What the projection records besides the case facts.
RECORDS: dict[type[ev.Event], Callable[[Connection, ev.Event], None]] = {
    ev.NightVisitLogged: record_visit, ev.DriveOpened: record_drive, ev.SupervisionNoticeIssued: record_notice,
    ev.JointMeetingHeld: record_meeting}


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


def facts_in(conn: Connection, period: str, filters: dict[str, str] | None = None) -> list[domain.CaseFacts]:
    """The facts of the cases received in ``period`` (and matching ``filters``), in case-id order."""
    start, end = period_bounds(period)
    c = tables.case_facts
    q = select(c).where(c.c.received_at >= start, c.c.received_at < end)
    for key, value in (filters or {}).items():
        if value:
            q = q.where(c.c[_COLUMN[key]] == value)
    return [domain.CaseFacts.from_row(r._mapping) for r in conn.execute(q.order_by(c.c.case_id))]


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
        start, end = period_bounds(period)
        notices = notices_in(conn, start, end)
        held = meetings_in(conn, start, end)
        meetings: dict[str, int] = {}
        for r in held:
            meetings[r.kind] = meetings.get(r.kind, 0) + 1
        incidents = mass_incidents(conn, [r for r in held if r.kind == "mass_incident"])
    from services.scoring import reports
    body = {
        "period": period, "from": start.date().isoformat(), "to": (end - timedelta(days=1)).date().isoformat(),
        "filters": filters, "frozen": False, "figures": domain.figures(facts),
        "channels": reports.channel_figures(facts, visits, drives, start, end),
        "notices": notices, "meetings": meetings,
        "network": {"agencies": len(scoring.directory.agencies), "agents": len(scoring.directory.agents)},
        "scorecards": scorecards(scoring, facts, incidents),
        "accountability": domain.accountability(facts, origins, scoring.directory, scoring.weights.consequences,
                                                {u: sorted({c for _, cs in m for c in cs}) for u, m in incidents.items()}),
        "categories": reports.category_figures(scoring.directory, facts),
        "issuer": f"{scoring.directory.county.name}信访局", "county": scoring.directory.county.name,
        "rounding": "rates are shares 0..1; the narrative rounds percentages half-up to one decimal",
    }
    body["narrative"] = reports.narrative(scoring.directory, body)
    return body


def notices_in(conn: Connection, start: datetime, end: datetime) -> dict:
    """The period's 交办 notices by number (in their order) and how many 督办 notices of each type."""
    n = tables.notices
    rows = conn.execute(select(n).where(n.c.issued_at >= start, n.c.issued_at < end).order_by(n.c.issued_at, n.c.seq))
    out: dict = {"assignment": [], "supervision": {}, "led_cases": 0}
    for r in rows:
        if r.notice_type == "assignment":
            out["assignment"].append(r.notice_no)
            out["led_cases"] += len(r.case_ids)
        else:
            out["supervision"][r.notice_type] = out["supervision"].get(r.notice_type, 0) + 1
    return out


def meetings_in(conn: Connection, start: datetime, end: datetime) -> list:
    """The period's joint meetings (联席会议), in the order they were held."""
    m = tables.meetings
    first, last = start.astimezone(CHINA_TZ).date(), end.astimezone(CHINA_TZ).date()
    return list(conn.execute(select(m).where(m.c.held_on >= first, m.c.held_on < last)
                             .order_by(m.c.held_on, m.c.meeting_id)))


def mass_incidents(conn: Connection, held: list) -> dict[str, list[tuple[str, list[str]]]]:
    """Joint meetings on a mass incident (群体性事件), by the township each discussed case arose in
    (属地管理): (meeting number, its cases there)."""
    facts = load_facts(conn, {c for r in held for c in r.case_ids})
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for r in held:
        by_township: dict[str, list[str]] = {}
        for case_id in r.case_ids:
            f = facts.get(case_id)
            if f is not None and f.township:
                by_township.setdefault(f.township, []).append(case_id)
        for township, cases in by_township.items():
            out.setdefault(township, []).append((r.meeting_no, sorted(cases)))
    return out


def _repeat_origins(conn: Connection, facts: list[domain.CaseFacts]) -> dict[str, domain.CaseFacts]:
    """The earlier cases that ``facts`` repeat, whatever period they belong to."""
    return load_facts(conn, {f.repeat_of for f in facts if f.repeat_of})


# Who is ranked: townships among themselves, departments among themselves. The bodies that supervise
# (the bureau's 督办科, the discipline commission: kind office) are listed with their figures, never
# banded or ranked; the governments (人民政府) that answer reviews are never scored.
GROUPS = {"townships": ("township",), "departments": ("department",)}
SUPERVISING = "supervising"


def scorecards(scoring: Scoring, facts: list[domain.CaseFacts],
               incidents: dict[str, list[tuple[str, list[str]]]] | None = None) -> dict[str, list[dict]]:
    """Every scored unit's card, ranked among townships and among departments; then the supervising
    bodies, unranked. Each card counts what was charged to the unit on any case (domain.charged); a
    township with a mass incident (``incidents``, :func:`mass_incidents`) is vetoed (一票否决)."""
    vetoes = {unit: [("mass_incident", no) for no, _ in held] for unit, held in (incidents or {}).items()}
    def led_by(kinds: tuple[str, ...]) -> dict[str, list[domain.CaseFacts]]:
        units = {code: [] for code, u in sorted(scoring.directory.units.items()) if u.kind in kinds}
        for f in facts:
            if f.lead_unit in units:
                units[f.lead_unit].append(f)
        return units

    def named(code: str) -> dict:
        return {"unit": code, "unit_name": scoring.directory.units[code].name}

    charges = domain.charged_by_unit(facts)
    out = {group: domain.rank([{**domain.scorecard(code, domain.unit_figures(code, fs, facts, charges), scoring.weights,
                                                   vetoes.get(code, ())),
                                **named(code)} for code, fs in led_by(kinds).items()])
           for group, kinds in GROUPS.items()}
    out[SUPERVISING] = [{**named(code), "figures": domain.unit_figures(code, fs, facts, charges), "score": None, "rank": None,
                         "band": None, "outcome": "none", "consequence": "", "deductions": [], "additions": []}
                        for code, fs in led_by(("office",)).items()]
    return out


def close_period(scoring: Scoring, period: str, closed_by: str) -> dict:
    """Freeze a period's report and publish ScorecardsPublished."""
    body = report(scoring, period)
    if body.get("frozen"):
        raise Conflict(f"period {period} is already closed")
    now = scoring.clock.now()
    body = {**body, "frozen": True}
    scores = [ev.UnitScore(unit=c["unit"], score=c["score"], rank=c["rank"])
              for group in body["scorecards"].values() for c in group if c["rank"] is not None]
    frozen = json.loads(json.dumps(body, default=str))
    with scoring.uow.begin() as conn:
        conn.execute(tables.frozen_periods.insert(), {"period": period, "report": frozen, "closed_at": now})
        enqueue(conn, tables.outbox, [ev.ScorecardsPublished(occurred_at=now, actor=ev.Actor(kind="supervisor",
                                                                                              id=closed_by),
                                                             period=period, scores=scores)], now)
    return frozen


# --- rebuild ------------------------------------------------------------------------------------

def drop_projection(scoring: Scoring) -> None:
    """Empty the projection (the cases' events and facts, visits, drives) and its inbox before a
    replay; frozen periods stay."""
    with scoring.uow.begin() as conn:
        for table in tables.PROJECTION + (tables.inbox,):
            conn.execute(delete(table))
    scoring.decoded.clear()
