"""Supervision's queries: what the clerks, the units, the leaders, Prometheus and the residents read of
the cases (timelines, case views, due lists, gauges, written notices, the resident's progress).
Nothing here writes but the resident lookup's failure count."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from sqlalchemy import Connection, select

from services.supervision import documents, domain, tables
from shared.errors import NotFound
from shared.ratelimit import ResidentLimits

if TYPE_CHECKING:
    from services.supervision.service import Supervision


# The case gauges of /metrics (``case_gauges``): name -> (help, labels).
CASE_GAUGES = {
    "xf_supervision_open_cases": ("Open cases (neither closed nor archived), by lead unit and lifecycle state; "
                                  "unit is 'none' before routing", ["unit", "state"]),
    "xf_supervision_due_soon_cases": ("Open due dates whose reminder (催办) time has passed, not due yet, by the "
                                      "unit they are due from", ["unit"]),
    "xf_supervision_overdue_cases": ("Open due dates already passed (超期), by the unit they are due from", ["unit"]),
}


def timeline(sup: Supervision, case_id: str) -> list[dict]:
    t = tables.timeline
    with sup.uow.engine.connect() as conn:
        rows = sorted(conn.execute(select(t).where(t.c.case_id == case_id)).all(),
                      key=lambda r: domain.happened(domain.as_utc(r.placed_at), r.type))
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
    return sorted(steps, key=lambda s: domain.happened(domain.as_utc(s["placed_at"]), s["event"]))


def _listing(conn: Connection, table, case_id: str) -> list:  # noqa: ANN001 - notices or meetings
    """The notices (or meetings) that list a case: few, read whole (a JSON list is not queried alike on
    SQLite and PostgreSQL)."""
    rows = conn.execute(select(*(c for c in table.c if c.name != "docx" and c.name != "markdown"))).all()
    return [r for r in rows if case_id in (r.case_ids or [])]


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
        replied_at is not None and sup.clock.now() > sup.policy.due(domain.as_utc(replied_at), sup.policy.review_request_days))


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
                      key=lambda x: domain.happened(domain.as_utc(x.placed_at), x.type))
    steps: list[dict] = []
    for row in rows:
        step = _public_step(row.type, row.payload)
        if step and (not steps or steps[-1]["step"] != step):
            steps.append({"at": row.occurred_at, "step": step})
    notices = [{k: d[k] for k in ("doc_id", "kind", "title", "issued_at", "text")} for d in documents_of(sup, case_id)]
    return {"case_id": case_id, "state": r.state, "steps": steps, "documents": notices,
            "as_of": datetime.now(timezone.utc)}
