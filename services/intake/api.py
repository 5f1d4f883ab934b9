"""Intake's HTTP routes: each translates a request into a use-case call, nothing more."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, UploadFile, status

from services.intake import drives, forms, service, visits
from services.intake.schemas import (
    Acknowledged,
    CaseAccepted,
    CaseSubmission,
    CaseView,
    DriveIn,
    DriveView,
    FeedbackIn,
    ImportChunk,
    ImportReport,
    ReviewIn,
    VisitLog,
    VisitLogged,
)
from services.intake.service import Intake
from shared import events as ev
from shared.forms import attachment
from shared.http import Guard, NotAllowed
from shared.ratelimit import RESIDENT_ERRORS
from shared.tokens import Principal

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                              description="the same key and body give the same case")]
guard = Guard("intake")  # roles per route: shared/access.py


def client_address(request: Request) -> str:
    """The client the resident's limits count (behind a proxy: uvicorn's --forwarded-allow-ips)."""
    return request.client.host if request.client else "unknown"


async def get_intake(request: Request) -> Intake:  # async: FastAPI would run a plain def in a worker thread
    return request.app.state.intake


Ctx = Annotated[Intake, Depends(get_intake)]


def _clerk(who: Principal) -> ev.Actor:
    """The actor of a clerk's action: the token's staff id, never what the caller writes."""
    return ev.Actor(kind="clerk", id=who.staff_id)


def build_router(intake: Intake) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.post("/cases", status_code=status.HTTP_201_CREATED, response_model=CaseAccepted, tags=["cases"],
                 summary="Register a case from any channel (a clerk; an agent: its own delegated cases)")
    async def submit_case(body: CaseSubmission, ctx: Ctx, response: Response, key: IdempotencyKey = None,
                          who: Principal = guard("POST /api/v1/cases")) -> CaseAccepted:
        if who.agent_id is not None:
            if body.channel != "delegated" or body.delegation is None or body.delegation.agent_id != who.agent_id:
                raise NotAllowed(f"an agent token files delegated cases naming itself ({who.agent_id}) only")
            key = f"agent:{who.agent_id}:{key}" if key else None  # an agent's keys are its own
        accepted, replayed = await service.submit_case(ctx, body, service.actor_for(body, who), key)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return accepted

    @router.get("/cases/{number}", response_model=CaseView, tags=["cases"])
    def get_case(number: str, ctx: Ctx, who: Principal = guard("GET /api/v1/cases/{number}")) -> CaseView:
        return service.get_case(ctx, number, agent_id=who.agent_id)

    @router.get("/cases/{number}/registration.docx", tags=["cases"], summary="信访事项登记表: the case's registration form")
    def registration(number: str, ctx: Ctx, who: Principal = guard("GET /api/v1/cases/{number}/registration.docx")):
        return attachment(forms.registration(ctx, number, agent_id=who.agent_id), f"{number}-登记表", "docx")

    @router.post("/cases/{number}/feedback", status_code=201, response_model=Acknowledged, tags=["residents"],
                 responses=RESIDENT_ERRORS,
                 summary="The resident's satisfaction with the reply (case number + query code)")
    def feedback(number: str, body: FeedbackIn, ctx: Ctx, request: Request) -> Acknowledged:
        return service.record_feedback(ctx, number, body, client_address(request))

    @router.post("/cases/{number}/reviews", status_code=201, response_model=Acknowledged, tags=["residents"],
                 responses=RESIDENT_ERRORS,
                 summary="Ask for review (复查) or re-review (复核) (case number + query code)")
    def review(number: str, body: ReviewIn, ctx: Ctx, request: Request) -> Acknowledged:
        return service.request_review(ctx, number, body, client_address(request))

    @router.post("/visits", status_code=201, response_model=VisitLogged, tags=["night visits"],
                 summary="Log a night visit; each problem becomes a case")
    def log_visit(body: VisitLog, ctx: Ctx, key: IdempotencyKey = None,
                  who: Principal = guard("POST /api/v1/visits")) -> VisitLogged:
        return visits.log_visit(ctx, body, who.staff_id, key)

    @router.post("/drives", status_code=201, response_model=DriveView, tags=["drives"])
    def open_drive(body: DriveIn, ctx: Ctx, who: Principal = guard("POST /api/v1/drives")) -> DriveView:
        return drives.open_drive(ctx, body, _clerk(who))

    @router.get("/drives", response_model=list[DriveView], dependencies=[guard("GET /api/v1/drives")],
                tags=["drives"])
    def list_drives(ctx: Ctx) -> list[DriveView]:
        return drives.list_drives(ctx)

    @router.get("/drives/{drive_id}", response_model=DriveView, dependencies=[guard("GET /api/v1/drives/{drive_id}")],
                tags=["drives"])
    def get_drive(drive_id: str, ctx: Ctx) -> DriveView:
        return drives.get_drive(ctx, drive_id)

    @router.post("/drives/{drive_id}/close", response_model=DriveView, tags=["drives"])
    def close_drive(drive_id: str, ctx: Ctx, who: Principal = guard("POST /api/v1/drives/{drive_id}/close")) -> DriveView:
        return drives.close_drive(ctx, drive_id, _clerk(who))

    @router.post("/drives/{drive_id}/rows", response_model=ImportReport, tags=["drives"],
                 summary="Import a chunk of a drive's rows (what `xinfang import` sends)")
    def import_rows(drive_id: str, body: ImportChunk, ctx: Ctx,
                    who: Principal = guard("POST /api/v1/drives/{drive_id}/rows")) -> ImportReport:
        drives.get_drive(ctx, drive_id)
        with drives.counted(ctx):
            return drives.import_rows(ctx, drive_id, body.source, [(r.row, r.values) for r in body.rows], _clerk(who))

    @router.post("/drives/{drive_id}/import", response_model=ImportReport, tags=["drives"],
                 summary="Upload a drive's disputes as CSV or XLSX")
    def upload(drive_id: str, file: UploadFile, ctx: Ctx,
               who: Principal = guard("POST /api/v1/drives/{drive_id}/import")) -> ImportReport:
        with drives.counted(ctx):
            return drives.import_file(ctx, drive_id, file.file, file.filename or "", _clerk(who))

    @router.get("/directory", tags=["directory"], summary="Townships, villages, categories, units, service types")
    def directory(ctx: Ctx) -> dict:
        d = ctx.directory
        return {
            "county": d.county.model_dump(),
            "townships": [{"code": t.code, "name": t.name, "villages": [v.model_dump() for v in t.villages]}
                          for t in d.townships.values()],
            "units": [{"code": u.code, "name": u.name, "kind": u.kind} for u in d.units.values()],
            "categories": [{"code": c.code, "name": c.name} for c in d.categories.values()],
            "service_types": [s.model_dump() for s in d.service_types.values()],
        }

    @router.get("/directory/agents", tags=["directory"], summary="Delegated agents and their agencies")
    def agents(ctx: Ctx) -> list[dict]:
        return [{"agency": a.code, "name": a.name, "township": a.township, "service_types": a.service_types,
                 "agents": [ag.model_dump() for ag in a.agents]} for a in ctx.directory.agencies.values()]

    return router
