"""Routing's HTTP routes: why a case went where it went, the triage queue, and the dry run."""
from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field

from services.routing import domain, forms, service
from services.routing.service import Routing
from shared.errors import FieldError, InvalidInput
from shared.events import Channel, Code
from shared.forms import attachment
from shared.http import Guard
from shared.text import FIRST_DAY, LAST_DAY, InputModel
from shared.tokens import Principal

guard = Guard("routing")  # roles per route: shared/access.py


def get_routing(request: Request) -> Routing:
    return request.app.state.routing


Ctx = Annotated[Routing, Depends(get_routing)]


class TriageDecision(InputModel):
    unit: Code = Field(description="The unit that takes the case; never a government (人民政府), which answers reviews")
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    decided_by: Annotated[str | None, Field(max_length=64, description=(
        "ignored, accepted for older clients: the decision is recorded as the token's staff id"))] = None


class LeaderNaming(InputModel):
    leader_id: Code = Field(description="The county leader (leaders.yaml) who leads the case from now on (包案领导)")
    reason: Annotated[str, Field(min_length=1, max_length=1000, description="Why this leader, not the one chosen")]


class DraftCase(InputModel):
    """A case as it would arrive; nothing is created."""

    channel: Channel
    township: Code
    category: Code | None = None
    title: Annotated[str, Field(min_length=1, max_length=100)]
    content: Annotated[str, Field(max_length=5000)] = ""
    accused_units: list[Code] = []
    accuses_unit: bool | None = Field(None, description=(
        "the clerk's answer: does the case accuse a unit? true, false, or omitted (not asked)"))
    repeat_of_unit: Code | None = Field(None, description="for a repeat petition: the unit that handled the earlier case")


def _known_codes(routing: Routing, body: DraftCase) -> None:
    """The dry run's codes name the county's own townships, categories and units (422 otherwise)."""
    d = routing.directory
    errors = [] if body.township in d.townships else [FieldError("township", f"unknown township {body.township!r}",
                                                                  see="/api/v1/directory")]
    if body.category is not None and body.category not in d.categories:
        errors.append(FieldError("category", f"unknown category {body.category!r}", see="/api/v1/directory"))
    errors += [FieldError(f"accused_units[{i}]", f"unknown unit {u!r}", see="/api/v1/directory")
               for i, u in enumerate(body.accused_units) if u not in d.units]
    if body.repeat_of_unit is not None and body.repeat_of_unit not in d.units:
        errors.append(FieldError("repeat_of_unit", f"unknown unit {body.repeat_of_unit!r}", see="/api/v1/directory"))
    if errors:
        raise InvalidInput(errors)


def build_router(routing: Routing) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/routing/{case_id}", tags=["routing"],
                summary="Why a case went where it went: the rule, the classifier's guess, or the clerk; the units' "
                        "objections (异议) with the bureau's decisions, and the reviewing bodies (复查/复核机关)")
    def why(case_id: str, ctx: Ctx, who: Principal = guard("GET /api/v1/routing/{case_id}")) -> dict:
        return service.why(ctx, case_id, unit=who.unit, leader=who.leader_id)

    @router.get("/routing/{case_id}/assignment-slip.docx", tags=["forms"],
                summary="受理分流指派通知单: the slip that hands the case to its units")
    def assignment_slip(case_id: str, ctx: Ctx,
                        who: Principal = guard("GET /api/v1/routing/{case_id}/assignment-slip.docx")) -> Response:
        return attachment(forms.assignment_slip(ctx, case_id, unit=who.unit, leader=who.leader_id),
                          f"{case_id}-指派通知单", "docx")

    @router.get("/forms/reception-day.xlsx", tags=["forms"], dependencies=[guard("GET /api/v1/forms/reception-day.xlsx")],
                summary="大接访交办表: a leaders' reception day's cases, each with its units and leader")
    def reception_day(ctx: Ctx, day: date = Query(..., alias="date", ge=FIRST_DAY, le=LAST_DAY), leader: Code | None = None) -> Response:
        return attachment(forms.reception_day(ctx, day, leader), f"大接访交办表-{day.isoformat()}", "xlsx")

    @router.get("/triage", dependencies=[guard("GET /api/v1/triage")], tags=["triage"],
                summary="Cases waiting for a clerk to name a unit")
    def triage_queue(ctx: Ctx) -> list[dict]:
        return service.triage_queue(ctx)

    @router.post("/triage/{case_id}/decision", tags=["triage"],
                 summary="Assign a case from triage to the named unit (who and why are recorded)")
    def decide(case_id: str, body: TriageDecision, ctx: Ctx,
               who: Principal = guard("POST /api/v1/triage/{case_id}/decision")) -> dict:
        return service.decide_triage(ctx, case_id, body.unit, body.reason, who.staff_id)

    @router.post("/routing/{case_id}/leader", tags=["routing"],
                 summary="Name another lead leader (包案领导) for a case, with a reason: recorded as LeaderAssigned "
                         "(assigned_by bureau, the token's staff id as actor); the case's load moves with it")
    def name_leader(case_id: str, body: LeaderNaming, ctx: Ctx,
                    who: Principal = guard("POST /api/v1/routing/{case_id}/leader")) -> dict:
        return service.name_leader(ctx, case_id, body.leader_id, body.reason, who.staff_id)

    @router.post("/routing/explain", dependencies=[guard("POST /api/v1/routing/explain")], tags=["routing"],
                 summary="Dry run: where a draft case would go, without creating anything")
    def explain(body: DraftCase, ctx: Ctx) -> dict:
        _known_codes(ctx, body)
        facts = domain.CaseFacts(body.channel, body.township, body.category, body.title, body.content,
                                 frozenset(body.accused_units), body.accuses_unit)
        result = service.explain(ctx, facts, body.repeat_of_unit)
        d = result.decision
        return {"lead": d.lead, "co": list(d.co), "rule_id": d.rule_id, "note": d.note,
                "category": result.category, "category_suggested": result.category_suggested,
                "confidence": result.confidence, "accused": result.accused, "triage": result.triage_reason}

    return router
