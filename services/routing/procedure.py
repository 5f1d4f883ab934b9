"""Routing's steps of the lawful procedure (信访工作条例 2022): a unit's objection (异议, Art. 23)
waits for the bureau's decision before the case moves, and a review (复查, Art. 35) or re-review
(复核, Art. 36) goes to the body one level up (复查/复核机关). The handlers run inside the consumer's
transaction (inbox + outbox), as routing's others do."""
from __future__ import annotations

import logging

from sqlalchemy import Connection, select, update

from services.routing import domain, tables
from services.routing.service import HOLDING, ROUTING, Routing, _after, _lead_of, _refuse, found_of_row, reroute
from shared import events as ev
from shared.outbox import enqueue

log = logging.getLogger(__name__)


def _held(conn: Connection, case_id: str, unit: str):  # noqa: ANN202 - a row: id, role
    a = tables.assignments
    return conn.execute(select(a.c.id, a.c.role).where(a.c.case_id == case_id, a.c.unit == unit, a.c.active,
                                                       a.c.role.in_(HOLDING))).first()


# --- 异议 ---------------------------------------------------------------------------------------

def _recorded(conn: Connection, case_id: str, objection_event_id: str | None) -> bool:
    r = tables.returns
    return objection_event_id is not None and conn.execute(select(r.c.id).where(
        r.c.case_id == case_id, r.c.event_id == objection_event_id)).first() is not None


def objected(routing: Routing, conn: Connection, event: ev.CaseReturned | ev.AcceptanceDecided) -> None:
    """异议: the unit says the case is not its own (a ``CaseReturned``, or an acceptance decision
    ``forwarded``). Routing checks only that the unit holds the case (supervision checks the 5 working
    days and the reasons) and records it for the bureau; the case stays where it is until approved."""
    now = _after(routing, event)
    r = tables.returns
    if _recorded(conn, event.case_id, event.event_id):
        return  # decided already: the bureau's decision reached routing first (a redelivery reorders)
    held = _held(conn, event.case_id, event.unit)
    if held is None:
        _refuse(routing, conn, event, "the case is not assigned to this unit", now)
        return
    conn.execute(r.insert(), {"case_id": event.case_id, "unit": event.unit, "role": held.role, "via": event.type,
                              "event_id": event.event_id, "reason": event.reason, "returned_at": now,
                              "status": "pending"})
    routing.metrics.objections.labels("pending").inc()


def objection_decided(routing: Routing, conn: Connection, event: ev.ObjectionDecided) -> None:
    """异议审核 by the bureau. Approved: the unit leaves the case; a lead's case is routed again
    without every unit whose objection was approved (:func:`services.routing.service.reroute`), a
    co-handling unit's stays where it is. Rejected: nothing moves (the unit's clock keeps running).

    A decision about a unit that no longer holds the case moves nothing: redelivered, or the case has
    moved on. Routing records the decision on the unit's waiting objections."""
    now = _after(routing, event)
    r, a = tables.returns, tables.assignments
    status = "approved" if event.approved else "rejected"
    decision = {"status": status, "decided_at": now, "decided_reason": event.reason,
                "decision_event_id": event.event_id}
    recorded = conn.execute(update(r).where(r.c.case_id == event.case_id, r.c.unit == event.unit,
                                            r.c.status == "pending").values(**decision)).rowcount
    held = _held(conn, event.case_id, event.unit)
    if held is None or (not recorded and _recorded(conn, event.case_id, event.objection_event_id)):
        # Stale: another decision on the same objection (that one counted), or the unit left the case.
        log.info("objection decision for %s on case %s: nothing waits for it, nothing moves",
                 event.unit, event.case_id)
        return
    if not recorded:  # the decision reached routing before the objection (a redelivery reorders them)
        conn.execute(r.insert(), {"case_id": event.case_id, "unit": event.unit, "role": held.role, "via": None,
                                  "event_id": event.objection_event_id, "reason": event.reason,
                                  "returned_at": now, **decision})
    routing.metrics.objections.labels(status).inc()
    if not event.approved:
        return
    conn.execute(update(a).where(a.c.id == held.id).values(active=False))
    if held.role == "lead":
        reroute(routing, conn, event.case_id, now)


# --- 复查 / 复核 -------------------------------------------------------------------------------

def review_requested(routing: Routing, conn: Connection, event: ev.ReviewRequested) -> None:
    """复查 / 复核 requested: the body one level above answers it (``CaseAssigned`` role ``reviewer``
    with the case as the lead unit has it, contact included). One reviewer per level per case: a
    repeated request changes nothing. No body in the directory: a warning and a metric, no assignment."""
    a, c = tables.assignments, tables.cases
    level = event.level
    if conn.execute(select(a.c.id).where(a.c.case_id == event.case_id, a.c.role == "reviewer",
                                         a.c.review_level == level)).first() is not None:
        return
    row = conn.execute(select(c).where(c.c.case_id == event.case_id)).first()
    lead = _lead_of(conn, event.case_id)
    reviewed_by = conn.execute(select(a.c.unit).where(a.c.case_id == event.case_id, a.c.role == "reviewer",
                                                      a.c.review_level == "review")).scalar()
    accused = found_of_row(routing, row).accused if row is not None else frozenset()  # never reviews it
    unit, above = domain.reviewer(routing.directory, lead, level, reviewed_by, accused)
    if row is None or unit is None:
        # Codes only: routing never logs what names the resident.
        log.warning("no reviewing body for the %s of case %s (lead unit %s): %s", level, event.case_id, lead,
                    "routing has not seen the case" if row is None else "the directory names none above it")
        routing.metrics.no_reviewer.labels(level).inc()
        return
    now = _after(routing, event)
    last = conn.execute(select(a.c.category, a.c.category_suggested, a.c.confidence).where(
        a.c.case_id == event.case_id, a.c.role.in_(HOLDING)).order_by(a.c.id.desc())).first()
    category, suggested, confidence = (last.category, last.category_suggested, last.confidence) if last else \
        (None, False, None)
    note = {"review": f"复查 (Art. 35): the body one level above {above}",
            "re_review": f"复核 (Art. 36): the body one level above {above}, the review's body (复查机关)"}[level]
    conn.execute(a.insert(), {
        "case_id": event.case_id, "unit": unit, "role": "reviewer", "review_level": level, "rule_id": None,
        "category": category, "category_suggested": suggested, "confidence": confidence, "note": note,
        "decided_by": None, "active": True, "assigned_at": now})
    enqueue(conn, tables.outbox, [ev.CaseAssigned(
        case_id=event.case_id, occurred_at=now, actor=ROUTING, unit=unit, role="reviewer", review_level=level,
        case=ev.CaseBrief.model_validate(row.brief), category=category, category_suggested=suggested,
        confidence=confidence, note=note)], now)
    routing.metrics.assigned.labels("reviewer", level).inc()
