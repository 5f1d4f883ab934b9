"""Supervision's HTTP routes: timelines, open and due cases, extensions, notices, the resident's
progress lookup, and (in time-travel mode) the clock."""
from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.supervision import notices, service
from services.supervision.service import Supervision
from shared.clock import ManualClock
from shared.events import Code
from shared.http import require_role


def get_sup(request: Request) -> Supervision:
    return request.app.state.supervision


Ctx = Annotated[Supervision, Depends(get_sup)]
StaffId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ExtensionDecision(_In):
    approved: bool
    days: Annotated[int, Field(ge=0, le=365)] = 0
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    decided_by: StaffId


class NoticeIn(_In):
    notice_type: Literal["overdue", "reminder", "important"] = "overdue"
    units: list[Code] | None = Field(None, description="omit for every unit with overdue cases")
    case_ids: list[str] | None = Field(None, description="omit for all their overdue cases")
    demands: Annotated[str, Field(min_length=1, max_length=2000)]
    reply_by: date
    issued_by: StaffId


class NoticeReply(_In):
    unit: Code
    text: Annotated[str, Field(min_length=1, max_length=5000)]


class ProgressQuery(_In):
    case_id: Annotated[str, Field(min_length=1, max_length=32)]
    query_code: Annotated[str, Field(min_length=4, max_length=16)]


class ClockAdvance(_In):
    days: Annotated[int, Field(ge=0, le=3660)] = 0
    hours: Annotated[int, Field(ge=0, le=24 * 3660)] = 0


def build_router(sup: Supervision) -> APIRouter:
    clerk = [Depends(require_role("clerk", sup.settings.clerk_token))]
    supervisor = [Depends(require_role("supervisor", sup.settings.supervisor_token))]
    r = APIRouter(prefix="/api/v1")

    @r.get("/cases", dependencies=clerk, tags=["cases"], summary="Open cases, by lead unit and state")
    def open_cases(ctx: Ctx, unit: str | None = None, state: str | None = None) -> list[dict]:
        return service.cases_by(ctx, unit, state)

    @r.get("/cases/{case_id}", dependencies=clerk, tags=["cases"], summary="A case's state and due dates")
    def case(case_id: str, ctx: Ctx) -> dict:
        return service.case_view(ctx, case_id)

    @r.get("/cases/{case_id}/timeline", dependencies=clerk, tags=["cases"],
           summary="Every event of a case, who and when, and whether it was applied or refused")
    def timeline(case_id: str, ctx: Ctx) -> list[dict]:
        return service.timeline(ctx, case_id)

    @r.get("/due", dependencies=clerk, tags=["deadlines"], summary="Due dates falling within `days`")
    def due_soon(ctx: Ctx, days: int = 3, unit: str | None = None) -> list[dict]:
        return service.due_list(ctx, overdue=False, within_days=days, unit=unit)

    @r.get("/overdue", dependencies=clerk, tags=["deadlines"], summary="Due dates passed and not met")
    def overdue(ctx: Ctx, unit: str | None = None) -> list[dict]:
        return service.due_list(ctx, overdue=True, unit=unit)

    @r.post("/cases/{case_id}/extension", dependencies=supervisor, tags=["deadlines"],
            summary="Approve or refuse a unit's extension request (延期审批)")
    def extension(case_id: str, body: ExtensionDecision, ctx: Ctx) -> dict:
        return service.decide_extension(ctx, case_id, body.approved, body.days, body.reason, body.decided_by)

    @r.post("/notices", status_code=201, dependencies=supervisor, tags=["notices"],
            summary="Issue a numbered supervision notice (督办通知) listing overdue cases")
    def issue(body: NoticeIn, ctx: Ctx) -> dict:
        return notices.issue_notice(ctx, body.notice_type, body.units, body.case_ids, body.demands, body.reply_by,
                                    body.issued_by)

    @r.get("/notices", dependencies=clerk, tags=["notices"])
    def list_notices(ctx: Ctx) -> list[dict]:
        return notices.list_notices(ctx)

    @r.get("/notices/{notice_id}", dependencies=clerk, tags=["notices"])
    def get_notice(notice_id: str, ctx: Ctx) -> dict:
        return notices.get_notice(ctx, notice_id)

    @r.get("/notices/{notice_id}/document.{kind}", dependencies=clerk, tags=["notices"],
           summary="The notice as Markdown (md) or Word (docx)")
    def document(notice_id: str, kind: Literal["md", "docx"], ctx: Ctx) -> Response:
        body = notices.notice_document(ctx, notice_id, kind)
        media = ("application/vnd.openxmlformats-officedocument.wordprocessingml.document" if kind == "docx"
                 else "text/markdown; charset=utf-8")
        return Response(body, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{notice_id}.{kind}"'})

    @r.post("/notices/{notice_id}/replies", dependencies=clerk, tags=["notices"],
            summary="Record a unit's reply to a notice")
    def reply(notice_id: str, body: NoticeReply, ctx: Ctx) -> dict:
        return notices.record_reply(ctx, notice_id, body.unit, body.text)

    @r.post("/progress", tags=["residents"], summary="The resident's progress lookup (case number + query code)")
    def progress(body: ProgressQuery, ctx: Ctx) -> dict:
        return service.resident_progress(ctx, body.case_id, body.query_code)

    @r.post("/sweep", dependencies=supervisor, tags=["deadlines"], summary="Sweep the deadlines now")
    async def sweep(ctx: Ctx) -> dict:
        return {"sent": await asyncio.to_thread(service.sweep, ctx), "now": ctx.clock.now()}

    @r.post("/clock/advance", dependencies=supervisor, tags=["time travel"],
            summary="Time-travel mode only: move supervision's clock, then sweep")
    async def advance(body: ClockAdvance, ctx: Ctx) -> dict:
        if not ctx.settings.time_travel or not isinstance(ctx.clock, ManualClock):
            raise HTTPException(404, "time travel is off (XF_TIME_TRAVEL)")
        ctx.clock.advance(timedelta(days=body.days, hours=body.hours))
        return {"sent": await asyncio.to_thread(service.sweep, ctx), "now": ctx.clock.now()}

    return r
