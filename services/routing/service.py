"""Routing's use cases. Event handlers run inside the consumer's transaction (inbox + outbox);
the HTTP ones open their own."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy import Connection, func, or_, select, update

from services.routing import accusations, domain, leaders, learning, tables
from services.routing.accusations import Finding
from services.routing.classifier import Classifier
from services.routing.domain import CaseFacts, Decision, Explanation
from shared import events as ev
from shared import verdict
from shared.clock import Clock
from shared.db import UnitOfWork
from shared.directory import Directory
from shared.errors import Conflict, FieldError, InvalidInput, NotFound
from shared.metrics import ServiceMetrics
from shared.outbox import enqueue
from shared.rules import RoutingConfig
from shared.settings import Settings

ROUTING = ev.Actor(kind="service", id="routing")
HOLDING = ("lead", "co")  # the roles that hold a case (a reviewer answers a review of it)


class RoutingMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("routing")
        self.assigned = Counter("xf_routing_assignments_total", "Assignments made, by role and how decided",
                                ["role", "how"], registry=self.registry)
        self.triaged = Counter("xf_routing_triage_total", "Cases sent to triage, by reason", ["reason"],
                               registry=self.registry)
        self.refused = Counter("xf_routing_refused_total", "Department events refused (not the unit's case)",
                               ["event"], registry=self.registry)
        self.objections = Counter("xf_routing_objections_total", "Objections (异议) recorded, and the bureau's "
                                  "decisions on them, by outcome (pending, approved, rejected)", ["outcome"],
                                  registry=self.registry)
        self.no_reviewer = Counter("xf_routing_reviewer_missing_total", "Review requests (复查/复核) for which the "
                                   "directory names no reviewing body, by level", ["level"], registry=self.registry)
        self.leaders = Counter("xf_routing_leaders_total", "Lead leaders (包案领导) given to important cases, by how "
                               "chosen (portfolio, load, bureau)", ["how"], registry=self.registry)


@dataclass
class Routing:
    uow: UnitOfWork
    directory: Directory
    config: RoutingConfig
    classifier: Classifier
    clock: Clock
    metrics: RoutingMetrics
    settings: Settings


# --- from the stream ----------------------------------------------------------------------------

def _after(routing: Routing, cause: ev.Event) -> datetime:
    """When routing acts on an event: now, but never before the event itself (clocks of services
    and departments differ), so a case's timeline keeps cause before effect."""
    return max(routing.clock.now(), cause.occurred_at)


def receive(routing: Routing, conn: Connection, case: ev.CaseReceived) -> None:
    """A new case: routed. A second receipt of a case number (another event id) is refused."""
    held = conn.execute(select(tables.cases.c.case_id).where(tables.cases.c.case_id == case.case_id)).first()
    verdict.check_receipt(case.case_id, held is not None)
    now = _after(routing, case)
    brief = ev.CaseBrief.of(case)
    facts = _facts(case)
    found = _finding(routing, facts)  # decided once, here: kept with the case (cases.accused)
    earlier_lead = _lead_of(conn, case.repeat_of) if case.repeat_of else None
    explanation = explain(routing, facts, earlier_lead, found=found)
    if set(explanation.accused) - found.accused:  # taken for a 检举控告 of the unit it would have gone to
        found = replace(found, accused=frozenset(explanation.accused), misconduct=True)
    conn.execute(tables.cases.insert(), {
        "case_id": case.case_id, "channel": case.channel, "township": case.township, "category": case.category,
        "accused": _stored(found, case), "repeat_of": case.repeat_of, "brief": brief.model_dump(mode="json"),
        "received_at": case.occurred_at})
    if explanation.triage_reason:
        _to_triage(routing, conn, case.case_id, explanation.triage_reason, explanation.decision.note, now,
                   explanation.category, explanation.confidence)
    else:
        _assign(routing, conn, case.case_id, brief, explanation, now, ROUTING, how=explanation.decision.rule_id,
                new_case=True)
    reasons = domain.importance(case.model_dump())
    if reasons:
        _assign_leader(routing, conn, case.case_id, reasons, now, explanation.decision.lead, explanation.category)


def reroute(routing: Routing, conn: Connection, case_id: str, now: datetime) -> None:
    """The lead's objection was approved: route again without every unit whose objection was approved;
    after ``max_returns`` of the lead's, a clerk decides (triage). The case keeps its history."""
    row = conn.execute(select(tables.cases).where(tables.cases.c.case_id == case_id)).first()
    objectors = _objectors(conn, case_id)
    if _lead_objections(conn, case_id) >= routing.config.max_returns:
        _to_triage(routing, conn, case_id, "returned_twice", f"objections approved for {', '.join(objectors)}",
                   now, row.category)
        return
    a = tables.assignments
    last = conn.execute(select(a.c.category, a.c.category_suggested, a.c.confidence).where(
        a.c.case_id == case_id, a.c.role.in_(HOLDING)).order_by(a.c.id.desc())).first()
    facts = _facts_of_row(row, last.category if last else row.category)
    explanation = explain(routing, facts, excluded=set(objectors), found=found_of_row(routing, row))
    explanation.category_suggested = bool(last and last.category_suggested)
    explanation.confidence = last.confidence if last else None
    if explanation.triage_reason:
        _to_triage(routing, conn, case_id, explanation.triage_reason, explanation.decision.note, now, facts.category)
    else:
        _assign(routing, conn, case_id, ev.CaseBrief.model_validate(row.brief), explanation, now, ROUTING,
                how="reroute", lead_only=True)


def _objectors(conn: Connection, case_id: str) -> list[str]:
    """The units whose objection (异议) to the case was approved: never routed it again."""
    r = tables.returns
    return sorted(set(conn.execute(select(r.c.unit).where(r.c.case_id == case_id, r.c.status == "approved"))
                      .scalars()))


def _lead_objections(conn: Connection, case_id: str) -> int:
    """How often the case was routed again: the lead's approved objections (a co-handling unit's moved
    nothing; a return from before objections needed approval has no role and counts, as it did)."""
    r = tables.returns
    # Units, not rows: a unit that objected twice (a return, then a forwarded acceptance) left once.
    return conn.execute(select(func.count(r.c.unit.distinct())).where(
        r.c.case_id == case_id, r.c.status == "approved", or_(r.c.role.is_(None), r.c.role == "lead"))).scalar_one()


def closed(routing: Routing, conn: Connection, event: ev.CaseClosed) -> None:
    """A closed case no longer weighs on its lead leader's load."""
    conn.execute(update(tables.leader_cases).where(tables.leader_cases.c.case_id == event.case_id).values(open=False))
    conn.info.pop(LEADER_LOAD, None)  # counted again when next needed


# --- decisions ----------------------------------------------------------------------------------

def explain(routing: Routing, facts: CaseFacts, earlier_lead: str | None = None,
            excluded: set[str] = frozenset(), found: Finding | None = None) -> Explanation:
    """Where a case goes and why; writes nothing (the dry run uses it as it is). ``found``: the
    accusation as decided at receipt, else read now (services/routing/accusations.py)."""
    found = found if found is not None else _finding(routing, facts)
    accused = set(found.accused)
    barred = set(excluded) | accused | domain.not_routed(routing.directory)
    commission = accusations.to_commission(found, routing.directory, routing.config.accusations, barred)
    if commission is not None:  # 检举控告: to the discipline commission, whatever the category
        return Explanation(commission, facts.category, accused=sorted(accused))
    if found.unclear:  # the text names a unit with an accusation word only: a clerk decides
        return Explanation(Decision(None, note=found.unclear_detail(routing.directory)), facts.category,
                           accused=sorted(accused), triage_reason="accusation_unclear")
    category, suggested, confidence = facts.category, False, None
    if category in domain.UNCATEGORISED and earlier_lead is None:
        # The classifier's posterior over categories, added up by the lead unit their rules give this
        # case (its township, channel, accused and excluded units): the unit is what must be right.
        guess = routing.classifier.guess(facts.title, facts.content)
        pick = guess.by_unit(learning.leads(facts, routing.config, routing.directory, excluded=set(excluded),
                                            accused=accused))
        confidence = round(pick.confidence, 3)
        settings = routing.config.classifier
        if pick.unit is None or guess.hits < settings.min_hits or confidence < settings.min_confidence:
            return Explanation(Decision(None, note=f"classifier unsure: {pick.category or 'no known word'} → "
                                                   f"{pick.unit} ({confidence})"),
                               pick.category, True, confidence, sorted(accused), "category_unclear")
        category, suggested = pick.category, True
    facts = replace(facts, category=category)
    decision = domain.route(facts, routing.config, routing.directory, excluded=set(excluded), accused=accused,
                            preferred_lead=earlier_lead)
    suspected, likelihood = _suspected(routing, facts, found, decision)
    if suspected and likelihood is not None and likelihood >= routing.config.classifier.commission_threshold:
        # so likely an accusation of the unit it would go to that it is one: 检举控告, to the commission
        taken = replace(found, accused=found.accused | set(suspected), misconduct=True)
        commission = accusations.to_commission(taken, routing.directory, routing.config.accusations,
                                               barred | set(suspected))
        if commission is not None:
            note = f"{taken.note(routing.directory)}; the accusation model finds it likely ({likelihood})"
            return Explanation(replace(commission, note=note), facts.category, accused=sorted(taken.accused))
    if suspected:  # the unit it would go to is named in what may be an accusation: a clerk decides
        return Explanation(Decision(None, note=found.suspicion_detail(suspected, routing.directory, likelihood)),
                           category, suggested, confidence, sorted(accused), "accusation_unclear")
    return Explanation(decision, category, suggested, confidence, sorted(accused),
                       None if decision.lead else "no_rule")


def _suspected(routing: Routing, facts: CaseFacts, found: Finding, decision: domain.Decision) -> tuple[list, float | None]:
    """The units that would be given the case and that the text names where it may accuse them, unasked:
    with a hint word (found.suspected), or in a text the accusation model finds likely an accusation."""
    suspects = set(found.suspected)
    likelihood = None
    if found.actors:
        likelihood = routing.classifier.accusation_probability(facts.title, facts.content)
        if likelihood >= routing.config.classifier.accusation_threshold:
            suspects |= set(found.actors)
        else:
            likelihood = None
    handlers = [u for u in (decision.lead, *decision.co) if u]
    return [u for u in handlers if u in suspects or accusations.ANY in suspects], likelihood


def _facts(case: ev.CaseReceived) -> CaseFacts:
    return CaseFacts(case.channel, case.township, case.category, case.title, case.content,
                     frozenset(case.accused_units), case.accuses_unit)


def _facts_of_row(row, category: str | None) -> CaseFacts:  # noqa: ANN001
    stored = row.accused if isinstance(row.accused, dict) else {"marked": row.accused}
    return CaseFacts(row.channel, row.township, category, row.brief["title"], row.brief["content"],
                     frozenset(stored.get("marked", [])), stored.get("accuses_unit"))


def _finding(routing: Routing, facts: CaseFacts) -> Finding:
    return accusations.assess(facts.title, facts.content, facts.township, facts.accused_units, facts.accuses_unit,
                              routing.directory, routing.config.accusations)


def _stored(found: Finding, case: ev.CaseReceived) -> dict:
    """What routing keeps of a case's accusation (cases.accused): the units it accuses and whether of
    misconduct, as decided at receipt (a change of the words later never moves an assigned case), with
    the clerk's marks and answer."""
    return {"units": sorted(found.accused), "misconduct": found.misconduct, "conduct": list(found.conduct),
            "marked": list(case.accused_units), "accuses_unit": case.accuses_unit}


def found_of_row(routing: Routing, row) -> Finding:  # noqa: ANN001 - a row of routing's cases
    """The accusation of a stored case, as decided at receipt. A case stored before routing kept the
    decision (a list: the clerk's marks) is read again under the current words; unclear is no longer
    asked (the case has been routed)."""
    if isinstance(row.accused, dict):
        return Finding(accused=frozenset(row.accused["units"]), misconduct=bool(row.accused.get("misconduct")),
                       conduct=tuple(row.accused.get("conduct", ())))
    return replace(_finding(routing, _facts_of_row(row, row.category)), unclear=())


def _lead_of(conn: Connection, case_id: str) -> str | None:
    a = tables.assignments
    return conn.execute(select(a.c.unit).where(a.c.case_id == case_id, a.c.role == "lead")
                        .order_by(a.c.active.desc(), a.c.id.desc())).scalar()


def _assign(routing: Routing, conn: Connection, case_id: str, brief: ev.CaseBrief, explanation: Explanation,
            now: datetime, actor: ev.Actor, how: str | None, lead_only: bool = False, decided_by: str | None = None,
            new_case: bool = False) -> None:
    d = explanation.decision
    a = tables.assignments
    units = [(d.lead, "lead")] + ([] if lead_only else [(u, "co") for u in d.co])
    if not new_case:  # A co-handling unit made lead holds the case once, as lead (a new case has no holder).
        conn.execute(update(a).where(a.c.case_id == case_id, a.c.unit == d.lead, a.c.active, a.c.role.in_(HOLDING))
                     .values(active=False))
    rows, events = [], []
    for unit, role in units:
        rows.append({"case_id": case_id, "unit": unit, "role": role, "rule_id": d.rule_id,
                     "category": explanation.category, "category_suggested": explanation.category_suggested,
                     "confidence": explanation.confidence, "note": d.note, "decided_by": decided_by, "active": True,
                     "assigned_at": now})
        events.append(ev.CaseAssigned(case_id=case_id, occurred_at=now, actor=actor, unit=unit, role=role,
                                      case=brief.for_role(role, co_sees_contact=d.co_sees_contact),
                                      rule_id=d.rule_id, category=explanation.category,
                                      category_suggested=explanation.category_suggested,
                                      confidence=explanation.confidence, note=d.note))
        routing.metrics.assigned.labels(role, how or "rule").inc()
    conn.execute(a.insert(), rows)
    enqueue(conn, tables.outbox, events, now)


def _to_triage(routing: Routing, conn: Connection, case_id: str, reason: str, detail: str, now: datetime,
               suggestion: str | None = None, confidence: float | None = None) -> None:
    returned_by = _objectors(conn, case_id)
    conn.execute(tables.triage.insert(), {"case_id": case_id, "reason": reason, "detail": detail,
                                          "suggested_category": suggestion, "confidence": confidence, "opened_at": now})
    enqueue(conn, tables.outbox, [ev.CaseNeedsTriage(
        case_id=case_id, occurred_at=now, actor=ROUTING, reason=reason, detail=detail, returned_by=returned_by,
        suggested_category=suggestion, confidence=confidence)], now)
    routing.metrics.triaged.labels(reason).inc()


LEADER_LOAD = "xf_routing_leader_load"  # in conn.info: (the transaction, its leaders' load)


def _leader_load(conn: Connection) -> dict[str, int]:
    """Each leader's open important cases, counted once per transaction and kept current by
    ``_assign_leader`` (a drive's batch of important cases counted them once per case: each count
    reads every open important case, so a drive's import slowed as it went)."""
    held = conn.info.get(LEADER_LOAD)
    if held is None or held[0] is not conn.get_transaction():
        lc = tables.leader_cases
        load = dict(conn.execute(select(lc.c.leader_id, func.count()).where(lc.c.open).group_by(lc.c.leader_id)).all())
        held = conn.info[LEADER_LOAD] = (conn.get_transaction(), load)
    return held[1]


def _assign_leader(routing: Routing, conn: Connection, case_id: str, reasons: list[str], now: datetime,
                   lead: str | None, category: str | None) -> None:
    """领导包案: the leader in charge (分管) of the lead unit or the category, the least loaded
    (services/routing/leaders.py)."""
    load = _leader_load(conn)
    choice = leaders.choose(routing.directory, load, lead, category)
    conn.execute(tables.leader_cases.insert(), {"case_id": case_id, "leader_id": choice.leader, "reasons": reasons,
                                                "open": True})
    load[choice.leader] = load.get(choice.leader, 0) + 1
    enqueue(conn, tables.outbox, [ev.LeaderAssigned(
        case_id=case_id, occurred_at=now, actor=ROUTING, leader_id=choice.leader, reasons=reasons,
        assigned_by=choice.how, note=choice.note)], now)
    routing.metrics.leaders.labels(choice.how).inc()


def _refuse(routing: Routing, conn: Connection, event: ev.UnitCaseEvent, reason: str, now: datetime) -> None:
    """Record and count the refusal, and tell the unit (``cases.refused.<unit>``)."""
    conn.execute(tables.refusals.insert(), {"case_id": event.case_id, "unit": event.unit, "event_type": event.type,
                                            "reason": reason, "refused_at": now})
    enqueue(conn, tables.outbox, [ev.EventRefused.of(event, unit=event.unit, subject=event.subject, kind="refused",
                                                     reason=reason, by="routing", occurred_at=now)], now)
    routing.metrics.refused.labels(event.type).inc()


# --- clerks and units ---------------------------------------------------------------------------

def decide_triage(routing: Routing, case_id: str, unit: str, reason: str, decided_by: str) -> dict:
    """A clerk resolves triage by naming the unit (recorded with who and why)."""
    d = routing.directory
    if unit not in d.units:
        raise InvalidInput([FieldError("unit", f"unknown unit {unit!r}", see="/api/v1/directory")])
    if unit in domain.not_routed(d):
        raise InvalidInput([FieldError("unit", f"{unit} ({d.units[unit].name}) is a people's government (人民政府): it "
                                               "answers reviews (复查/复核) and is never given a case to handle",
                                       see="/api/v1/directory")])
    now = routing.clock.now()
    t = tables.triage
    with routing.uow.begin() as conn:
        item = conn.execute(select(t).where(t.c.case_id == case_id, t.c.resolved_at.is_(None))).first()
        if item is None:
            raise NotFound(f"case {case_id} is not waiting in triage")
        row = conn.execute(select(tables.cases).where(tables.cases.c.case_id == case_id)).first()
        if unit in found_of_row(routing, row).accused:
            raise Conflict(f"the case accuses {unit}; it cannot handle it")
        conn.execute(update(t).where(t.c.id == item.id).values(resolved_unit=unit, resolved_by=decided_by,
                                                               resolved_reason=reason, resolved_at=now))
        explanation = Explanation(Decision(unit, (), "triage", reason), row.category or item.suggested_category)
        _assign(routing, conn, case_id, ev.CaseBrief.model_validate(row.brief), explanation, now,
                ev.Actor(kind="supervisor", id=decided_by), how="triage", lead_only=True, decided_by=decided_by)
    return why(routing, case_id)


def name_leader(routing: Routing, case_id: str, leader_id: str, reason: str, named_by: str) -> dict:
    """The bureau names the case's lead leader (包案领导) by hand, with a reason: recorded as a
    ``LeaderAssigned`` (``assigned_by: bureau``, the supervisor as actor); the open case's load moves
    from the leader it had to this one. A case without a leader gets one (made important by hand)."""
    d = routing.directory
    if leader_id not in d.leaders:
        raise InvalidInput([FieldError("leader_id", f"unknown leader {leader_id!r}", valid=sorted(d.leaders))])
    now = routing.clock.now()
    lc, c = tables.leader_cases, tables.cases
    with routing.uow.begin() as conn:
        case = conn.execute(select(c.c.brief).where(c.c.case_id == case_id)).first()
        if case is None:
            raise NotFound(f"routing has not seen case {case_id}")
        held = conn.execute(select(lc).where(lc.c.case_id == case_id)).first()
        if held is not None and not held.open:
            raise Conflict(f"case {case_id} is closed: its leader stays {held.leader_id}")
        if held is not None and held.leader_id == leader_id:
            raise Conflict(f"{leader_id} already leads case {case_id}")
        if held is None:
            brief = case.brief
            reasons = domain.importance({**brief, "repeat": brief.get("repeat_of") is not None})
            conn.execute(lc.insert(), {"case_id": case_id, "leader_id": leader_id, "reasons": reasons, "open": True})
        else:
            reasons = list(held.reasons)
            conn.execute(update(lc).where(lc.c.case_id == case_id).values(leader_id=leader_id))
        enqueue(conn, tables.outbox, [ev.LeaderAssigned(
            case_id=case_id, occurred_at=now, actor=ev.Actor(kind="supervisor", id=named_by), leader_id=leader_id,
            reasons=reasons, assigned_by="bureau", note=reason, replaces=held.leader_id if held else None)], now)
    routing.metrics.leaders.labels("bureau").inc()
    return why(routing, case_id)


def why(routing: Routing, case_id: str, unit: str | None = None, leader: str | None = None) -> dict:
    """Every assignment of a case with its reason (the rule, the classifier's guess, or the clerk), the
    units' objections (异议) with the bureau's decisions, and the reviewing bodies (复查/复核机关).

    For a unit (``unit``), only a case assigned to it now or before and not accusing it; for a leader,
    only a case it leads; any other answers as a missing case does."""
    a, r, t, lc = tables.assignments, tables.returns, tables.triage, tables.leader_cases
    with routing.uow.engine.connect() as conn:
        case = conn.execute(select(tables.cases).where(tables.cases.c.case_id == case_id)).first()
        if case is not None and unit is not None and conn.execute(select(a.c.id).where(
                a.c.case_id == case_id, a.c.unit == unit).limit(1)).first() is None:
            case = None
        if case is not None and leader is not None and conn.execute(select(lc.c.leader_id).where(
                lc.c.case_id == case_id)).scalar() != leader:
            case = None
        found = found_of_row(routing, case) if case is not None else Finding()
        if case is None or (unit is not None and unit in found.accused):
            raise NotFound(f"routing has not seen case {case_id}")
        return {
            "case_id": case_id, "category_filed": case.category, "accused": sorted(found.accused),
            "misconduct": found.misconduct,
            "assignments": [dict(x._mapping) for x in conn.execute(select(
                a.c.unit, a.c.role, a.c.review_level, a.c.active, a.c.rule_id, a.c.category, a.c.category_suggested,
                a.c.confidence, a.c.note, a.c.decided_by, a.c.assigned_at).where(a.c.case_id == case_id)
                .order_by(a.c.id))],
            "reviewers": [{"level": x.review_level, "unit": x.unit, "assigned_at": x.assigned_at}
                          for x in conn.execute(select(a.c.review_level, a.c.unit, a.c.assigned_at).where(
                              a.c.case_id == case_id, a.c.role == "reviewer").order_by(a.c.id))],
            "objections": [dict(x._mapping) for x in conn.execute(select(
                r.c.unit, r.c.role, r.c.via, r.c.reason, r.c.returned_at.label("objected_at"), r.c.status,
                r.c.decided_at, r.c.decided_reason).where(r.c.case_id == case_id).order_by(r.c.id))],
            # The objections that moved the case, as older clients read them (退回).
            "returns": [dict(x._mapping) for x in conn.execute(select(r.c.unit, r.c.reason, r.c.returned_at).where(
                r.c.case_id == case_id, r.c.status == "approved").order_by(r.c.id))],
            "triage": [dict(x._mapping) for x in conn.execute(select(
                t.c.reason, t.c.detail, t.c.suggested_category, t.c.confidence, t.c.opened_at, t.c.resolved_unit,
                t.c.resolved_by, t.c.resolved_reason, t.c.resolved_at).where(t.c.case_id == case_id).order_by(t.c.id))],
            "leader": conn.execute(select(lc.c.leader_id).where(lc.c.case_id == case_id)).scalar(),
        }


def triage_queue(routing: Routing) -> list[dict]:
    t, c = tables.triage, tables.cases
    with routing.uow.engine.connect() as conn:
        return [{"case_id": x.case_id, "reason": x.reason, "detail": x.detail, "title": x.brief["title"],
                 "township": x.township, "suggested_category": x.suggested_category, "confidence": x.confidence,
                 "opened_at": x.opened_at}
                for x in conn.execute(select(t, c.c.brief, c.c.township).join(c, c.c.case_id == t.c.case_id)
                                      .where(t.c.resolved_at.is_(None)).order_by(t.c.id))]


def assignment_of(routing: Routing, case_id: str, unit: str) -> dict:
    """For a unit's command: is this case its own now? (answers ``routing.assignment.<unit>``) A
    reviewing body (role ``reviewer``) holds it too: it publishes its opinion (复查/复核意见) as a unit.

    ``error`` tells apart a case routing has never seen (``unknown_case``: a typo, or not yet routed)
    from one it has given to others (``not_assigned``)."""
    a, c = tables.assignments, tables.cases
    with routing.uow.engine.connect() as conn:
        # The latest role, should a unit hold the case twice (a co-handling unit that reviews it too).
        role = conn.execute(select(a.c.role).where(a.c.case_id == case_id, a.c.unit == unit, a.c.active)
                            .order_by(a.c.id.desc())).scalar()
        known = role is not None or conn.execute(select(c.c.case_id).where(c.c.case_id == case_id)).first()
    if role is not None:
        return {"case_id": case_id, "unit": unit, "assigned": True, "role": role}
    if not known:
        return {"case_id": case_id, "unit": unit, "assigned": False, "error": "unknown_case",
                "reason": f"routing has no case {case_id}"}
    return {"case_id": case_id, "unit": unit, "assigned": False, "error": "not_assigned",
            "reason": f"case {case_id} is not assigned to {unit}"}
