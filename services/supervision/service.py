"""Supervision's use cases: keep each case's fold current, sweep the deadlines, decide extensions.

Every event about a case lands on its timeline; the case's state is re-folded from the timeline,
so arrival order does not matter. What supervision itself decides (closing, archiving, reminders,
overdue, escalation, extension decisions) goes on the timeline and into the outbox in the same
transaction, guarded so that it happens once.
"""
from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from prometheus_client import Counter
from sqlalchemy import Connection, func, select, update

from services.supervision import documents, domain, tables
from shared import events as ev
from shared import keys as keyring
from shared.clock import Clock
from shared.consumer import Delivery
from shared.db import UnitOfWork, insert_ignore, lock_keys
from shared.directory import Directory
from shared.errors import Conflict, FieldError, InvalidInput, NotFound
from shared.keys import Keys
from shared.metrics import ServiceMetrics
from shared.outbox import enqueue
from shared.policy import DeadlinePolicy
from shared.ratelimit import ResidentLimits
from shared.settings import Settings
from shared.verdict import check_receipt

SUPERVISION = ev.Actor(kind="service", id="supervision")
ALERT_EVENTS = {"reminded": ev.CaseReminded, "overdue": ev.CaseOverdue, "escalated": ev.CaseEscalated}


class SupervisionMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("supervision")
        self.refused = Counter("xf_supervision_refused_events_total",
                               "Events refused as illegal where they fall in a case's lifecycle", ["type"],
                               registry=self.registry)
        self.alerts = Counter("xf_supervision_alerts_total", "Reminders, overdue and escalations sent",
                              ["stage", "kind"], registry=self.registry)
        self.notices = Counter("xf_supervision_notices_issued_total", "Numbered notices issued (交办, 督办…), by type",
                               ["type"], registry=self.registry)


# The case gauges of /metrics (``case_gauges``): name -> (help, labels).
CASE_GAUGES = {
    "xf_supervision_open_cases": ("Open cases (neither closed nor archived), by lead unit and lifecycle state; "
                                  "unit is 'none' before routing", ["unit", "state"]),
    "xf_supervision_due_soon_cases": ("Open due dates whose reminder (催办) time has passed, not due yet, by the "
                                      "unit they are due from", ["unit"]),
    "xf_supervision_overdue_cases": ("Open due dates already passed (超期), by the unit they are due from", ["unit"]),
}


@dataclass
class Supervision:
    uow: UnitOfWork
    directory: Directory
    policy: DeadlinePolicy
    clock: Clock
    metrics: SupervisionMetrics
    settings: Settings
    keys: Keys | None = None  # shared/keys.py: the query-code key checks the progress lookup

    def keys_of(self) -> Keys:
        if self.keys is None:
            self.keys = keyring.load(self.settings)
        return self.keys

    @property
    def clock_tolerance(self) -> timedelta:
        return timedelta(seconds=self.settings.clock_tolerance_s)

    @property
    def agent_days(self) -> dict[str, int]:
        return {code: s.time_limit_days for code, s in self.directory.service_types.items()}


# --- from the stream ----------------------------------------------------------------------------

def apply_events(sup: Supervision, conn: Connection, batch: list[Delivery]) -> None:
    """The consumer's batch: every event on its case's timeline, then each touched case re-folded once.
    The batch's cases are locked first (replicas fold one case one at a time, ``lock_keys``)."""
    lock_keys(conn, "supervision:case", (d.event.case_id for d in batch))
    touched: list[str] = []
    for d in batch:
        if isinstance(d.event, ev.CaseReceived):
            check_receipt(d.event.case_id, _received_under_another_id(conn, d.event))
        _record(conn, d.event, domain.placed_at(d.event, d.received_at, sup.clock_tolerance))
        if d.event.case_id not in touched:
            touched.append(d.event.case_id)
    for case_id in touched:
        refresh(sup, conn, case_id)


def _received_under_another_id(conn: Connection, event: ev.CaseReceived) -> bool:
    t = tables.timeline
    return conn.execute(select(t.c.event_id).where(t.c.case_id == event.case_id, t.c.type == event.type,
                                                   t.c.event_id != event.event_id).limit(1)).first() is not None


def _record(conn: Connection, event: ev.Event, placed_at: datetime) -> None:
    """On the timeline, ``pending`` until the case's fold gives its verdict."""
    insert_ignore(conn, tables.timeline, [{
        "event_id": event.event_id, "case_id": event.case_id, "occurred_at": event.occurred_at,
        "placed_at": placed_at, "type": event.type, "unit": getattr(event, "unit", None),
        "payload": event.model_dump(mode="json"), "status": "pending", "reason": ""}])


def _emit(conn: Connection, event: ev.Event, now: datetime) -> None:
    """What supervision decides: on the timeline and in the outbox, in the caller's transaction."""
    _record(conn, event, event.occurred_at)
    enqueue(conn, tables.outbox, [event], now)


# What the resident and the bureau do about a case, forwarded to the units holding it (UnitNotified).
NOTIFY_UNITS = (ev.PetitionerFeedback, ev.ReviewRequested, ev.CaseClosed, ev.CaseArchived)


def refresh(sup: Supervision, conn: Connection, case_id: str) -> domain.CaseState:
    """Re-fold a case from its timeline, mark each event applied or refused, close it when due.

    The first verdict on an event has consequences: a department's refused event is reported to that
    unit (``cases.refused.<unit>``); the resident's feedback, a review request, the close and the
    archiving are forwarded to the units holding the case (``cases.notified.<unit>``). Events of a
    case not yet received stay ``pending``."""
    lock_keys(conn, "supervision:case", [case_id])  # a sweep's or a decision's; held already by a batch
    t = tables.timeline
    rows = conn.execute(select(t.c.event_id, t.c.payload, t.c.placed_at, t.c.status, t.c.reason)
                        .where(t.c.case_id == case_id)).all()
    events = [ev.decode_dict(r.payload) for r in rows]
    state, verdicts = domain.fold(events, sup.policy, sup.agent_days, [_utc(r.placed_at) for r in rows])
    received = state.state != "new"
    now = sup.clock.now()
    for row, event, verdict in zip(rows, events, verdicts):
        status = "pending" if not received else "applied" if verdict.applied else "refused"
        if (status, verdict.reason) == (row.status, row.reason):
            continue
        conn.execute(update(t).where(t.c.event_id == row.event_id).values(status=status, reason=verdict.reason))
        if status == "refused":
            sup.metrics.refused.labels(event.type).inc()
            if event.published_by == "department":
                enqueue(conn, tables.outbox, [ev.EventRefused.of(
                    event, unit=event.unit, subject=event.subject, kind="refused", reason=verdict.reason,
                    by="supervision", occurred_at=now)], now)
        elif status == "applied":  # first applied: pending until now, or refused before its cause arrived
            if isinstance(event, NOTIFY_UNITS):
                _notify_units(conn, state, event, now)
            if isinstance(event, documents.WRITTEN):  # once per event (the documents' event_id key)
                documents.issue(sup, conn, _as_of(sup, events, rows, event), event, now)
    reason = domain.should_close(state, now, sup.policy)
    if reason in domain.CLOSE_AT_ONCE and _once(conn, case_id, "close", _close_key(state), "closed", now):
        _emit(conn, ev.CaseClosed(case_id=case_id, occurred_at=_decided_at(conn, case_id, now), actor=SUPERVISION,
                                  reason=reason), now)
        return refresh(sup, conn, case_id)
    _store(conn, case_id, state, events, sup.policy)
    return state


def _close_key(state: domain.CaseState) -> datetime:
    """What a close answers, so it happens once per opinion (or per acceptance decision)."""
    return state.replied_at or state.decided_at or state.received_at


def _as_of(sup: Supervision, events: list[ev.Event], rows: list, event: ev.Event) -> domain.CaseState:
    """The case as it stood when ``event`` happened (its events up to it, as they count): a written
    notice states that, e.g. the due date an extension set, not a later one."""
    placed = [_utc(r.placed_at) for r in rows]
    mark = next(domain.happened(p, e.type) for e, p in zip(events, placed) if e.event_id == event.event_id)
    upto = [i for i, (e, p) in enumerate(zip(events, placed)) if domain.happened(p, e.type) <= mark]
    return domain.fold([events[i] for i in upto], sup.policy, sup.agent_days, [placed[i] for i in upto])[0]


def _notify_units(conn: Connection, state: domain.CaseState, event: ev.CaseEvent, now: datetime) -> None:
    holders = [(state.lead, "lead")] if state.lead else []
    holders += [(unit, "co") for unit in sorted(state.co)]
    holders += [(unit, "reviewer") for unit in sorted(set(state.reviewers.values()))]
    enqueue(conn, tables.outbox, [ev.UnitNotified(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"xinfang:notified:{event.event_id}:{unit}")), occurred_at=now,
        actor=SUPERVISION, case_id=event.case_id, unit=unit, role=role, event=event) for unit, role in holders], now)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _store(conn: Connection, case_id: str, s: domain.CaseState, events: list[ev.Event],
           policy: DeadlinePolicy) -> None:
    received = next((e for e in events if isinstance(e, ev.CaseReceived)), None)
    row = {"state": s.state, "lead": s.lead, "co": sorted(s.co), "leader": s.leader, "received_at": s.received_at,
           "replied_at": s.replied_at, "closed_at": s.closed_at,
           "satisfied": None if s.satisfied is None else ("yes" if s.satisfied else "no"),
           "dues": [_due_json(d, policy) for d in s.dues],
           "query_code_hash": received.query_code_hash if received else None, "procedure": _procedure(s)}
    c = tables.cases
    if conn.execute(update(c).where(c.c.case_id == case_id).values(**row)).rowcount == 0:
        conn.execute(c.insert(), {"case_id": case_id, **row})


def _procedure(s: domain.CaseState) -> dict:
    """Where the case stands in the procedure, as the case view shows it."""
    return {"acceptance": s.acceptance, "accepted_at": s.decided_at.isoformat() if s.decided_at else None,
            "objections": {u: at.isoformat() for u, at in sorted(s.objections.items())},
            "extension": s.extension, "review_level": s.review_level, "opinion_level": s.opinion_level,
            "reviewers": dict(sorted(s.reviewers.items())), "final": s.final}


def _due_json(d: domain.Due, policy: DeadlinePolicy) -> dict:
    """A due date as stored and shown; ``provisional`` when it counts over a year whose official
    holiday schedule is not known yet (it may move)."""
    row = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(d).items()}
    return {**row, "provisional": policy.provisional(d.due_at)}


def _decided_at(conn: Connection, case_id: str, now: datetime) -> datetime:
    """When a decision about a case happens: now, but never before the case's latest event (other
    services' clocks, or a test's clock, may run ahead of this one), so the fold sees it last."""
    t = tables.timeline
    latest = conn.execute(select(func.max(t.c.placed_at)).where(t.c.case_id == case_id)).scalar()
    return max(now, _utc(latest)) if latest else now


def _once(conn: Connection, case_id: str, kind: str, due_at: datetime, stage: str, now: datetime) -> bool:
    """True for the first caller only, across sweeps and replicas (the alerts table's key)."""
    return insert_ignore(conn, tables.alerts, [{"case_id": case_id, "kind": kind, "due_at": due_at, "stage": stage,
                                                "sent_at": now}]) == 1


# --- sweeps -------------------------------------------------------------------------------------

def sweep(sup: Supervision, batch: int = 50) -> int:
    """Send every reminder, overdue and escalation whose time has come, close unanswered replies
    and archive old closed cases. Each fires once per due date; returns how many events it sent.

    A transaction holds its cases' locks (``refresh``) until it commits, and the consumer waits for
    them: small batches keep that wait far below the lock timeout. Cases go in the order the
    consumer locks them (sorted), so the two never deadlock."""
    now = sup.clock.now()
    c = tables.cases
    sent = 0
    with sup.uow.engine.connect() as conn:
        case_ids = sorted(conn.execute(select(c.c.case_id).where(c.c.state.notin_(["new", "archived"]))).scalars())
    for start in range(0, len(case_ids), batch):
        with sup.uow.begin() as conn:
            for case_id in case_ids[start:start + batch]:
                sent += _sweep_case(sup, conn, case_id, now)
    return sent


def _sweep_case(sup: Supervision, conn: Connection, case_id: str, now: datetime) -> int:
    state = refresh(sup, conn, case_id)
    office = sup.directory.county.supervision_office
    sent = 0
    for stage, due in domain.alerts_due(state, now, sup.policy):
        if not _once(conn, case_id, due.kind, due.due_at, stage, now):
            continue
        extra = {"leader_id": state.leader} if stage == "escalated" else {}
        _emit(conn, ALERT_EVENTS[stage](case_id=case_id, occurred_at=_decided_at(conn, case_id, now), actor=SUPERVISION,
                                        unit=due.unit or office,
                                        due_kind=due.kind, due_at=due.due_at, **extra), now)
        sup.metrics.alerts.labels(stage, due.kind).inc()
        sent += 1
    reason = domain.should_close(state, now, sup.policy)
    if reason and _once(conn, case_id, "close", _close_key(state), "closed", now):
        _emit(conn, ev.CaseClosed(case_id=case_id, occurred_at=_decided_at(conn, case_id, now), actor=SUPERVISION,
                                  reason=reason), now)
        sent += 1
        state = refresh(sup, conn, case_id)
    if domain.should_archive(state, now, sup.policy) and _once(conn, case_id, "archive", state.closed_at, "archived", now):
        _emit(conn, ev.CaseArchived(case_id=case_id, occurred_at=_decided_at(conn, case_id, now), actor=SUPERVISION),
              now)
        sent += 1
        refresh(sup, conn, case_id)
    return sent


# --- the supervision office ---------------------------------------------------------------------

def decide_extension(sup: Supervision, case_id: str, unit: str, approved: bool, days: int, reason: str,
                     head: str) -> dict:
    """延期审批 by the lead unit's own head (本机关负责人, Art. 34), through the API: publishes
    ExtensionDecided on the unit's subject, as the unit's own system would. Another unit's case
    answers as a missing one."""
    now = sup.clock.now()
    with sup.uow.begin() as conn:
        state = refresh(sup, conn, case_id)
        if state.state == "new" or state.lead != unit:
            raise NotFound(f"supervision has not seen case {case_id}")
        if state.extension != "requested":
            raise Conflict(f"case {case_id} has no extension request waiting")
        if approved and not 0 < days <= sup.policy.max_extension_days:
            raise InvalidInput([FieldError("days", f"between 1 and {sup.policy.max_extension_days}")])
        reply_due = state.open_due("reply")
        _emit(conn, ev.ExtensionDecided(
            case_id=case_id, occurred_at=_decided_at(conn, case_id, now), actor=ev.Actor(kind="unit", id=head),
            unit=unit, approved=approved, days=days if approved else 0, reason=reason, approved_by=head,
            new_due_at=sup.policy.extended(reply_due.due_at, days) if approved and reply_due else None), now)
        refresh(sup, conn, case_id)
    return case_view(sup, case_id)


def decide_objection(sup: Supervision, case_id: str, unit: str, approved: bool, reason: str, by: str) -> dict:
    """异议审核 by the bureau (Art. 23): approved, routing routes the case again without the unit;
    rejected, the case stays with it and its clock keeps running."""
    now = sup.clock.now()
    with sup.uow.begin() as conn:
        state = refresh(sup, conn, case_id)
        if state.state == "new":
            raise NotFound(f"supervision has not seen case {case_id}")
        if unit not in state.objections:
            waiting = sorted(state.objections)
            raise Conflict(f"no objection of {unit} is waiting on case {case_id}"
                           + (f" (waiting: {', '.join(waiting)})" if waiting else ""))
        t = tables.timeline
        objection = conn.execute(select(t.c.event_id).where(
            t.c.case_id == case_id, t.c.unit == unit, t.c.type.in_(["CaseReturned", "AcceptanceDecided"]),
            t.c.status == "applied").order_by(t.c.placed_at.desc()).limit(1)).scalar()
        _emit(conn, ev.ObjectionDecided(
            case_id=case_id, occurred_at=_decided_at(conn, case_id, now), actor=ev.Actor(kind="supervisor", id=by),
            unit=unit, approved=approved, reason=reason, objection_event_id=objection), now)
        refresh(sup, conn, case_id)
    return case_view(sup, case_id)


# --- queries ------------------------------------------------------------------------------------

def timeline(sup: Supervision, case_id: str) -> list[dict]:
    t = tables.timeline
    with sup.uow.engine.connect() as conn:
        rows = sorted(conn.execute(select(t).where(t.c.case_id == case_id)).all(),
                      key=lambda r: domain.happened(_utc(r.placed_at), r.type))
        notices, meetings = _listing(conn, tables.notices, case_id), _listing(conn, tables.meetings, case_id)
    if not rows:
        raise NotFound(f"supervision has not seen case {case_id}")
    steps = [{"at": r.occurred_at, "placed_at": r.placed_at, "event": r.type, "unit": r.unit,
              "actor": r.payload.get("actor"), "status": r.status, "reason": r.reason or None, "event_id": r.event_id}
             for r in rows]
    # the notices that list the case (交办通知, 督办通知): supervision's own acts, in their place
    steps += [{"at": n.issued_at, "placed_at": n.issued_at, "event": "SupervisionNoticeIssued", "unit": None,
               "actor": {"kind": "supervisor", "id": n.issued_by}, "status": "applied", "reason": None,
               "event_id": None, "notice_no": n.notice_no, "notice_type": n.notice_type} for n in notices]
    steps += [{"at": m.recorded_at, "placed_at": m.recorded_at, "event": "JointMeetingHeld", "unit": None,
               "actor": {"kind": "supervisor", "id": m.convened_by}, "status": "applied", "reason": None,
               "event_id": None, "meeting_id": m.meeting_id, "meeting_no": m.meeting_no} for m in meetings]
    return sorted(steps, key=lambda s: domain.happened(_utc(s["placed_at"]), s["event"]))


def _listing(conn: Connection, table, case_id: str) -> list:  # noqa: ANN001 - notices or meetings
    """The notices (or meetings) that list a case: few, read whole (a JSON list is not queried alike on
    SQLite and PostgreSQL)."""
    rows = conn.execute(select(*(c for c in table.c if c.name != "docx" and c.name != "markdown"))).all()
    return [r for r in rows if case_id in (r.case_ids or [])]


def resident_step(sup: Supervision, case_id: str, step: str) -> dict:
    """Whether the resident's feedback (评价) or review request (复查/复核) would apply to the case now:
    the fold's own verdict on the step, taken at the service's clock, nothing stored. Intake asks
    before recording the step (``resident_step.intake``), so a step asked too early or after the
    matter is final is refused at once and the resident's right is not used up."""
    t = tables.timeline
    with sup.uow.engine.connect() as conn:
        rows = conn.execute(select(t.c.payload, t.c.placed_at).where(t.c.case_id == case_id)).all()
    events = [ev.decode_dict(r.payload) for r in rows]
    state, _ = domain.fold(events, sup.policy, sup.agent_days, [_utc(r.placed_at) for r in rows])
    if state.state == "new":
        return {"case_id": case_id, "known": False, "allowed": False,
                "reason": "supervision has not received the case yet"}
    now = sup.clock.now()
    resident = ev.Actor(kind="resident")
    step_event = (ev.PetitionerFeedback(case_id=case_id, occurred_at=now, actor=resident, satisfied=True)
                  if step == "feedback" else
                  ev.ReviewRequested(case_id=case_id, occurred_at=now, actor=resident, level=step, reason="-"))
    state_before = str(state.state)
    verdict = domain.apply(state, step_event, now, sup.policy, sup.agent_days)
    return {"case_id": case_id, "known": True, "allowed": verdict.applied, "reason": verdict.reason,
            "state": state_before}


def unit_timeline(sup: Supervision, case_id: str, unit: str) -> dict:
    """A unit's view of a case it holds or held (was ever assigned): every step, who and when, applied
    or refused with the reason — so a department sees what became of its own events. Any other case,
    existing or not, gets the same answer."""
    t = tables.timeline
    with sup.uow.engine.connect() as conn:
        held = conn.execute(select(t.c.event_id).where(t.c.case_id == case_id, t.c.type == "CaseAssigned",
                                                       t.c.unit == unit).limit(1)).first()
    if held is None:
        return {"case_id": case_id, "unit": unit, "found": False, "error": "not_found",
                "reason": f"no case {case_id} that {unit} holds or held"}
    steps = [{**s, "actor": s["actor"] if s["unit"] == unit else {"kind": (s["actor"] or {}).get("kind")}}
             for s in timeline(sup, case_id)]
    return {"case_id": case_id, "unit": unit, "found": True, "timeline": steps}


def held_by(conn, case_id: str, unit: str) -> bool:  # noqa: ANN001
    """Was the case ever assigned to ``unit`` (a case accusing a unit never is)?"""
    t = tables.timeline
    return conn.execute(select(t.c.event_id).where(t.c.case_id == case_id, t.c.type == "CaseAssigned",
                                                   t.c.unit == unit).limit(1)).first() is not None


def case_view(sup: Supervision, case_id: str, unit: str | None = None, leader: str | None = None) -> dict:
    """The case; for a unit only one assigned to it now or before, for a leader only one it leads —
    any other answers as a missing case does, so its existence does not leak."""
    c = tables.cases
    with sup.uow.engine.connect() as conn:
        r = conn.execute(select(c).where(c.c.case_id == case_id)).first()
        if r is not None and unit is not None and not held_by(conn, case_id, unit):
            r = None
    if r is None or (leader is not None and r.leader != leader):
        raise NotFound(f"supervision has not seen case {case_id}")
    procedure = r.procedure or {}
    return {"case_id": r.case_id, "state": r.state, "lead": r.lead, "co": r.co, "leader": r.leader,
            "received_at": r.received_at, "replied_at": r.replied_at, "closed_at": r.closed_at, "dues": r.dues,
            **procedure, "final": _final(sup, r.state, r.replied_at, procedure)}


def _final(sup: Supervision, state: str, replied_at: datetime | None, procedure: dict) -> bool:
    """终结: closed, and no review can follow any more (see ``domain.is_final``)."""
    if state not in domain.FINAL_STATES:
        return False
    return bool(procedure.get("final")) or (
        replied_at is not None and sup.clock.now() > sup.policy.due(_utc(replied_at), sup.policy.review_request_days))


def _open_cases(sup: Supervision, unit: str | None, state: str | None, leader: str | None = None) -> list:
    c = tables.cases
    q = select(c.c.case_id, c.c.state, c.c.lead, c.c.dues).where(c.c.state.notin_(["closed", "archived"]))
    if unit:
        q = q.where(c.c.lead == unit)
    if leader:
        q = q.where(c.c.leader == leader)
    if state:
        q = q.where(c.c.state == state)
    with sup.uow.engine.connect() as conn:
        return conn.execute(q.order_by(c.c.case_id)).all()


def cases_by(sup: Supervision, unit: str | None, state: str | None, leader: str | None = None) -> list[dict]:
    return [{"case_id": r.case_id, "state": r.state, "lead": r.lead, "next_due": _next_due(r.dues)}
            for r in _open_cases(sup, unit, state, leader)]


def _next_due(dues: list[dict]) -> dict | None:
    open_dues = sorted((d for d in dues if d["met_at"] is None), key=lambda d: d["due_at"])
    return open_dues[0] if open_dues else None


def due_list(sup: Supervision, *, overdue: bool, within_days: int = 3, unit: str | None = None,
             leader: str | None = None) -> list[dict]:
    """Open due dates already passed (overdue) or falling within ``within_days`` (due soon)."""
    now = sup.clock.now()
    horizon = now + timedelta(days=within_days)
    out = [{"case_id": case.case_id, "state": case.state, "unit": due_unit, "due_kind": d["kind"], "due_at": at}
           for case, d, due_unit, at in _open_dues(_open_cases(sup, unit, None, leader))
           if (overdue and at <= now) or (not overdue and now < at <= horizon)]
    return sorted(out, key=lambda x: x["due_at"])


def _open_dues(cases: list):  # noqa: ANN202 - (case row, due, the unit it is due from, due_at) of each unmet due
    for case in cases:
        for d in case.dues:
            if d["met_at"] is None:
                yield case, d, d["unit"] or case.lead, datetime.fromisoformat(d["due_at"])


def case_gauges(sup: Supervision) -> dict[str, dict[tuple[str, ...], float]]:
    """The values of CASE_GAUGES now (read when Prometheus scrapes): open cases by unit and state,
    and their open due dates past the reminder time or past due, by unit. Every unit with an open
    case reports its due-soon and overdue counts, zeros too, so a rise is a rate and not a new series."""
    now = sup.clock.now()
    open_cases: defaultdict[tuple[str, ...], int] = defaultdict(int)
    soon: defaultdict[tuple[str, ...], int] = defaultdict(int)
    overdue: defaultdict[tuple[str, ...], int] = defaultdict(int)
    cases = _open_cases(sup, None, None)
    for case in cases:
        open_cases[(case.lead or "none", case.state)] += 1
    for _, _, due_unit, at in _open_dues(cases):
        unit = (due_unit or "none",)
        overdue[unit] += at <= now
        soon[unit] += at > now and now >= sup.policy.remind_at(at)
    return {"xf_supervision_open_cases": open_cases, "xf_supervision_due_soon_cases": soon,
            "xf_supervision_overdue_cases": overdue}


def documents_of(sup: Supervision, case_id: str) -> list[dict]:
    """The case's written notices (the caller checked who may see the case)."""
    with sup.uow.engine.connect() as conn:
        return documents.for_case(conn, case_id)


def document_of(sup: Supervision, case_id: str, doc_id: str, fmt: str) -> bytes | str:
    with sup.uow.engine.connect() as conn:
        body = documents.document(conn, case_id, doc_id, fmt)
    if body is None:
        raise NotFound(f"no document {doc_id} of case {case_id}")
    return body


# What the resident sees of each step (the progress lookup): the public steps, in words.
PUBLIC_EVENTS = {"CaseReceived": "已受理登记", "CaseAssigned": "已交办", "UnitSigned": "承办单位已签收",
                 "AcceptanceDecided": "受理决定已作出", "ObjectionDecided": "交办单位已调整",
                 "ProgressReported": "办理中", "ExtensionDecided": "办理期限已调整", "CaseReplied": "已答复",
                 "ReviewRequested": "复查/复核申请已受理", "CaseClosed": "已办结", "CaseArchived": "已归档"}


def _public_step(event_type: str, payload: dict) -> str | None:
    """A step in the resident's words; what the resident is not told (a refused extension, an
    objection rejected, a co-handling unit's part) is no step."""
    if event_type == "ExtensionDecided" and not payload.get("approved"):
        return None
    if event_type == "ObjectionDecided" and not payload.get("approved"):
        return None
    if event_type == "CaseAssigned" and payload.get("role") == "co":
        return None
    if event_type == "AcceptanceDecided":
        return {"accepted": "已受理", "not_accepted": "不予受理"}.get(payload.get("decision"))
    if event_type == "CaseReplied" and payload.get("unit") and payload.get("review_outcome"):
        return "复查/复核意见已出具"
    return PUBLIC_EVENTS.get(event_type)


def resident_progress(sup: Supervision, case_id: str, query_code: str, client: str = "unknown") -> dict:
    """The resident's view: the state and the public steps, nothing internal, no other person's data.

    "No such case" and "wrong code" answer alike and count alike against the case and the client;
    past the limits, 429 whatever the code (shared/ratelimit.py)."""
    c, ring = tables.cases, sup.keys_of().query_code
    limits = ResidentLimits(tables.resident_failures, sup.settings.resident_case_failures,
                            sup.settings.resident_client_failures)
    client_key, now = ring.hash(f"client:{client}"), sup.clock.now()
    with sup.uow.engine.connect() as conn:  # a lookup writes nothing: no write lock unless it fails
        limits.check(conn, now, case_id, client_key)
        r = conn.execute(select(c.c.state, c.c.query_code_hash).where(c.c.case_id == case_id)).first()
    if not ring.matches(query_code.upper(), r.query_code_hash if r is not None else None):
        with sup.uow.begin() as conn:
            limits.record(conn, now, case_id, client_key)
        raise NotFound(f"no case {case_id} with this query code")
    t = tables.timeline
    with sup.uow.engine.connect() as conn:
        rows = sorted(conn.execute(select(t.c.occurred_at, t.c.placed_at, t.c.type, t.c.payload)
                                   .where(t.c.case_id == case_id, t.c.status == "applied")).all(),
                      key=lambda x: domain.happened(_utc(x.placed_at), x.type))
    steps: list[dict] = []
    for row in rows:
        step = _public_step(row.type, row.payload)
        if step and (not steps or steps[-1]["step"] != step):
            steps.append({"at": row.occurred_at, "step": step})
    notices = [{k: d[k] for k in ("doc_id", "kind", "title", "issued_at", "text")} for d in documents_of(sup, case_id)]
    return {"case_id": case_id, "state": r.state, "steps": steps, "documents": notices,
            "as_of": datetime.now(timezone.utc)}
