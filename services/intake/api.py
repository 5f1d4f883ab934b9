"""Intake's HTTP routes: each translates a request into a use-case call, nothing more."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, UploadFile, status

from services.intake import drives, service, visits
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
from shared.http import require_role

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                              description="the same key and body give the same case")]
StaffId = Annotated[str | None, Header(alias="X-Staff-Id", max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                                       description="the clerk's or cadre's staff id, recorded as the actor")]


def get_intake(request: Request) -> Intake:
    return request.app.state.intake


Ctx = Annotated[Intake, Depends(get_intake)]


def build_router(intake: Intake) -> APIRouter:
    clerk = [Depends(require_role("clerk", intake.settings.clerk_token))]
    router = APIRouter(prefix="/api/v1")

    @router.post("/cases", status_code=status.HTTP_201_CREATED, response_model=CaseAccepted, dependencies=clerk,
                 tags=["cases"], summary="Register a case from any channel")
    def submit_case(body: CaseSubmission, ctx: Ctx, response: Response, key: IdempotencyKey = None,
                    staff: StaffId = None) -> CaseAccepted:
        accepted, replayed = service.submit_case(ctx, body, service.actor_for(body, staff), key)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return accepted

    @router.get("/cases/{number}", response_model=CaseView, dependencies=clerk, tags=["cases"])
    def get_case(number: str, ctx: Ctx) -> CaseView:
        return service.get_case(ctx, number)

    @router.post("/cases/{number}/feedback", status_code=201, response_model=Acknowledged, tags=["residents"],
                 summary="The resident's satisfaction with the reply (case number + query code)")
    def feedback(number: str, body: FeedbackIn, ctx: Ctx) -> Acknowledged:
        return service.record_feedback(ctx, number, body)

    @router.post("/cases/{number}/reviews", status_code=201, response_model=Acknowledged, tags=["residents"],
                 summary="Ask for review (复查) or re-review (复核) (case number + query code)")
    def review(number: str, body: ReviewIn, ctx: Ctx) -> Acknowledged:
        return service.request_review(ctx, number, body)

    @router.post("/visits", status_code=201, response_model=VisitLogged, dependencies=clerk, tags=["night visits"],
                 summary="Log a night visit; each problem becomes a case")
    def log_visit(body: VisitLog, ctx: Ctx, key: IdempotencyKey = None, staff: StaffId = None) -> VisitLogged:
        return visits.log_visit(ctx, body, staff, key)

    @router.post("/drives", status_code=201, response_model=DriveView, dependencies=clerk, tags=["drives"])
    def open_drive(body: DriveIn, ctx: Ctx, staff: StaffId = None) -> DriveView:
        return drives.open_drive(ctx, body, ev.Actor(kind="clerk", id=staff))

    @router.get("/drives", response_model=list[DriveView], dependencies=clerk, tags=["drives"])
    def list_drives(ctx: Ctx) -> list[DriveView]:
        return drives.list_drives(ctx)

    @router.get("/drives/{drive_id}", response_model=DriveView, dependencies=clerk, tags=["drives"])
    def get_drive(drive_id: str, ctx: Ctx) -> DriveView:
        return drives.get_drive(ctx, drive_id)

    @router.post("/drives/{drive_id}/close", response_model=DriveView, dependencies=clerk, tags=["drives"])
    def close_drive(drive_id: str, ctx: Ctx, staff: StaffId = None) -> DriveView:
        return drives.close_drive(ctx, drive_id, ev.Actor(kind="clerk", id=staff))

    @router.post("/drives/{drive_id}/rows", response_model=ImportReport, dependencies=clerk, tags=["drives"],
                 summary="Import a chunk of a drive's rows (what `xinfang import` sends)")
    def import_rows(drive_id: str, body: ImportChunk, ctx: Ctx, staff: StaffId = None) -> ImportReport:
        drives.get_drive(ctx, drive_id)
        return drives.import_rows(ctx, drive_id, body.source, [(r.row, r.values) for r in body.rows],
                                  ev.Actor(kind="clerk", id=staff))

    @router.post("/drives/{drive_id}/import", response_model=ImportReport, dependencies=clerk, tags=["drives"],
                 summary="Upload a drive's disputes as CSV or XLSX")
    def upload(drive_id: str, file: UploadFile, ctx: Ctx, staff: StaffId = None) -> ImportReport:
        return drives.import_file(ctx, drive_id, file.file, file.filename or "", ev.Actor(kind="clerk", id=staff))

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
