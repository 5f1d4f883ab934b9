"""驻村夜访: a cadre logs a night visit; each problem collected becomes a case (channel night_visit)."""
from __future__ import annotations

from services.intake import domain, tables
from services.intake.schemas import CaseAccepted, CaseSubmission, VisitLog, VisitLogged
from services.intake.service import Draft, Intake, allocate, answer_row, register, request_hash, stored_answers
from shared import events as ev
from shared.db import lock_keys
from shared.errors import Conflict, FieldError, InvalidInput
from shared.outbox import enqueue


def log_visit(intake: Intake, visit: VisitLog, staff_id: str | None, idempotency_key: str | None) -> VisitLogged:
    d = intake.directory
    errors: list[FieldError] = []
    if visit.cadre_unit not in d.units:
        errors.append(domain.code_error("cadre_unit", visit.cadre_unit, d.units, "/api/v1/directory", what="unit"))
    if visit.visited_on > domain.local_date(intake.clock.now()):
        errors.append(FieldError("visited_on", "is in the future"))
    submissions = [_submission(visit, i) for i in range(len(visit.problems))]
    for i, sub in enumerate(submissions):
        for e in domain.check_submission(sub, d):
            if e.field in ("township", "village") and i > 0:
                continue  # reported once, for the visit itself
            name = e.field if e.field in ("township", "village") else f"problems[{i}].{e.field}"
            errors.append(FieldError(name, e.message, e.valid, e.see))
    if not submissions:
        errors += [e for e in domain.check_submission(_submission(visit, None), d)
                   if e.field in ("township", "village")]
    if errors:
        raise InvalidInput(errors)

    actor = ev.Actor(kind="cadre", id=staff_id)
    key = f"visit:{idempotency_key}" if idempotency_key else None
    now = intake.clock.now()
    with intake.uow.begin() as conn:
        if key is not None:
            lock_keys(conn, "intake:idempotency", [key])  # one log at once per key (service.register)
        if key is not None and (seen := stored_answers(conn, intake, [key]).get(key)) is not None:
            body_hash, answer = seen
            if body_hash != request_hash(visit):
                raise Conflict("this Idempotency-Key was used with another body")
            return VisitLogged.model_validate(answer)
        year = domain.local_year(now)
        visit_id = f"NV{year}-{allocate(conn, f'visit:{year}', 1):05d}"
        conn.execute(tables.visits.insert(), {
            "visit_id": visit_id, "cadre_name": visit.cadre_name, "cadre_unit": visit.cadre_unit,
            "township": visit.township, "village": visit.village, "visited_on": visit.visited_on,
            "households_visited": visit.households_visited, "logged_at": now, "cadre_kind": visit.cadre_kind,
            "visit_format": visit.visit_format, "solved_on_spot": visit.solved_on_spot,
            "suggestions": visit.suggestions})
        drafts = [Draft(CaseSubmission.model_validate({**s, "visit_id": visit_id}), actor) for s in submissions]
        cases: list[CaseAccepted] = register(conn, intake, drafts) if drafts else []  # type: ignore[assignment]
        for i, refused in enumerate(cases):
            if isinstance(refused, Conflict):  # 不再受理: the whole visit is refused, nothing stored
                raise Conflict(f"problems[{i}]: {refused.message}", {**refused.details, "problem": i})
        enqueue(conn, tables.outbox, [ev.NightVisitLogged(
            visit_id=visit_id, occurred_at=now, actor=actor, cadre_unit=visit.cadre_unit, township=visit.township,
            village=visit.village, visited_on=visit.visited_on, households_visited=visit.households_visited,
            case_ids=[c.case_number for c in cases], cadre_kind=visit.cadre_kind, visit_format=visit.visit_format,
            solved_on_spot=visit.solved_on_spot, suggestions=visit.suggestions)], now)
        answer = VisitLogged(visit_id=visit_id, cases=cases)
        if key is not None:
            conn.execute(tables.idempotency_keys.insert(), answer_row(intake, key, request_hash(visit), answer, now))
    return answer


def _submission(visit: VisitLog, i: int | None) -> dict:
    """The case a problem becomes; ``visit_id`` is a placeholder until the visit is numbered."""
    problem = visit.problems[i].model_dump() if i is not None else {"title": "", "content": ""}
    return {**problem, "channel": "night_visit", "township": visit.township, "village": visit.village,
            "visit_id": "pending"}
