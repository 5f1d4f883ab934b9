"""Supervision's HTTP routes: timelines, open and due cases, extensions, notices, the resident's
progress lookup, and (in time-travel mode) the clock."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import Field

from services.supervision import meetings, notices, queries, service
from services.supervision.service import Supervision
from shared.clock import ManualClock
from shared.errors import NotFound
from shared.events import Code
from shared.forms import attachment
from shared.http import Guard, NotAllowed
from shared.ratelimit import RESIDENT_ERRORS
from shared.text import Day, InputModel
from shared.tokens import Principal

guard = Guard("supervision")  # roles per route: shared/access.py


def get_sup(request: Request) -> Supervision:
    return request.app.state.supervision


Ctx = Annotated[Supervision, Depends(get_sup)]
# Kept for older clients and ignored: a decision is recorded as the token's staff id.
IgnoredStaffId = Annotated[str | None, Field(max_length=64, description=(
    "ignored, accepted for older clients: recorded as the token's staff id"))]


class _In(InputModel):
    """Every input of supervision's API (shared/text.py)."""


class ExtensionDecision(_In):
    """延期审批 by the lead unit's own head (本机关负责人)."""

    approved: bool
    days: Annotated[int, Field(ge=0, le=365)] = 0
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    decided_by: IgnoredStaffId = None


class ObjectionDecision(_In):
    """异议审核 by the bureau: the unit that objected, approved (re-routed) or rejected, and why."""

    unit: Code
    approved: bool
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


class NoticeIn(_In):
    notice_type: Literal["overdue", "reminder", "important", "assignment"] = Field("overdue", description=(
        "overdue, reminder, important: 督办通知 listing overdue cases; assignment: 交办通知 handing the important "
        "cases in case_ids to their lead units and leaders (包案)"))
    units: list[Code] | None = Field(None, description="omit for every unit with overdue cases (not for assignment)")
    case_ids: list[str] | None = Field(None, description="omit for all their overdue cases; assignment: the cases")
    office: Code | None = Field(None, description="assignment: the issuing office (its notice_prefix numbers it)")
    title: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(None, description=(
        "assignment: the notice's title, e.g. 关于国庆期间信访矛盾纠纷领导包案督办的通知"))
    demands: Annotated[str, Field(min_length=1, max_length=2000)]
    reply_by: Day
    issued_by: IgnoredStaffId = None


class DecisionIn(_In):
    text: Annotated[str, Field(min_length=1, max_length=2000)]
    unit: Code
    due_on: Day


class MeetingIn(_In):
    """联席会议: what was convened for, who came, which cases, what was decided."""

    held_on: Day
    kind: Literal["prominent_problem", "mass_incident"]
    topic: Annotated[str, Field(min_length=1, max_length=500)]
    units: Annotated[list[Code], Field(min_length=1, max_length=100)]
    case_ids: Annotated[list[str], Field(max_length=500)] = []
    decisions: Annotated[list[DecisionIn], Field(max_length=100)] = []


class DecisionDone(_In):
    note: Annotated[str, Field(min_length=1, max_length=5000)]


class NoticeReply(_In):
    unit: Code
    text: Annotated[str, Field(min_length=1, max_length=5000)]


class ProgressQuery(_In):
    case_id: Annotated[str, Field(min_length=1, max_length=32)]
    query_code: Annotated[str, Field(min_length=4, max_length=16)]


class ClockAdvance(_In):
    days: Annotated[int, Field(ge=0, le=3660)] = 0
    hours: Annotated[int, Field(ge=0, le=24 * 3660)] = 0


def _own_unit(who: Principal, asked: str | None) -> str | None:
    """A unit token lists its own cases: ``unit=`` is its code or omitted."""
    if who.unit is None:
        return asked
    if asked not in (None, who.unit):
        raise NotAllowed(f"a unit token lists its own cases ({who.unit}) only")
    return who.unit


def build_router(sup: Supervision) -> APIRouter:
    r = APIRouter(prefix="/api/v1")

    @r.get("/cases", tags=["cases"], summary="Open cases, by lead unit and state")
    def open_cases(ctx: Ctx, unit: str | None = None, state: str | None = None,
                   who: Principal = guard("GET /api/v1/cases")) -> list[dict]:
        return queries.cases_by(ctx, _own_unit(who, unit), state, leader=who.leader_id)

    @r.get("/cases/{case_id}", tags=["cases"], summary="A case's state and due dates")
    def case(case_id: str, ctx: Ctx, who: Principal = guard("GET /api/v1/cases/{case_id}")) -> dict:
        return queries.case_view(ctx, case_id, unit=who.unit, leader=who.leader_id)

    @r.get("/cases/{case_id}/timeline", tags=["cases"],
           summary="Every event of a case, who and when, and whether it was applied or refused")
    def timeline(case_id: str, ctx: Ctx, who: Principal = guard("GET /api/v1/cases/{case_id}/timeline")) -> list[dict]:
        if who.unit is not None:  # the unit's view: other units' steps without their ids, as on timeline.<unit>
            view = queries.unit_timeline(ctx, case_id, who.unit)
            if not view["found"]:
                raise NotFound(f"supervision has not seen case {case_id}")
            return view["timeline"]
        if who.leader_id is not None:
            queries.case_view(ctx, case_id, leader=who.leader_id)  # a leader: only a case it leads
        return queries.timeline(ctx, case_id)

    @r.get("/due", tags=["deadlines"], summary="Due dates falling within `days`")
    def due_soon(ctx: Ctx, days: Annotated[int, Query(ge=0, le=366)] = 3, unit: str | None = None, who: Principal = guard("GET /api/v1/due")) -> list[dict]:
        return queries.due_list(ctx, overdue=False, within_days=days, unit=_own_unit(who, unit), leader=who.leader_id)

    @r.get("/overdue", tags=["deadlines"], summary="Due dates passed and not met")
    def overdue(ctx: Ctx, unit: str | None = None, who: Principal = guard("GET /api/v1/overdue")) -> list[dict]:
        return queries.due_list(ctx, overdue=True, unit=_own_unit(who, unit), leader=who.leader_id)

    @r.post("/cases/{case_id}/extension", tags=["procedure"],
            summary="The unit head approves or refuses its unit's extension request (延期审批, Art. 34)")
    def extension(case_id: str, body: ExtensionDecision, ctx: Ctx,
                  who: Principal = guard("POST /api/v1/cases/{case_id}/extension")) -> dict:
        return service.decide_extension(ctx, case_id, who.unit, body.approved, body.days, body.reason,
                                        who.staff_id or f"{who.unit}:head")

    @r.post("/cases/{case_id}/objection", tags=["procedure"],
            summary="The bureau approves or rejects a unit's objection (异议审核, Art. 23)")
    def objection(case_id: str, body: ObjectionDecision, ctx: Ctx,
                  who: Principal = guard("POST /api/v1/cases/{case_id}/objection")) -> dict:
        return service.decide_objection(ctx, case_id, body.unit, body.approved, body.reason, who.staff_id)

    @r.get("/cases/{case_id}/documents", tags=["procedure"],
           summary="The written notices of a case (受理/不予受理告知书, 延期告知书, 处理意见书, 复查/复核意见书)")
    def case_documents(case_id: str, ctx: Ctx, who: Principal = guard("GET /api/v1/cases/{case_id}/documents")) -> list[dict]:
        queries.case_view(ctx, case_id, unit=who.unit, leader=who.leader_id)  # 404 unless the caller may see it
        return queries.documents_of(ctx, case_id)

    @r.get("/cases/{case_id}/documents/{doc_id}.{kind}", tags=["procedure"], summary="A notice as text or Word (docx)")
    def case_document(case_id: str, doc_id: str, kind: Literal["txt", "docx"], ctx: Ctx,
                      who: Principal = guard("GET /api/v1/cases/{case_id}/documents/{doc_id}.{kind}")) -> Response:
        queries.case_view(ctx, case_id, unit=who.unit, leader=who.leader_id)
        return attachment(queries.document_of(ctx, case_id, doc_id, kind), doc_id, kind)

    @r.post("/notices", status_code=201, tags=["notices"],
            summary="Issue a numbered notice: 督办通知 listing overdue cases, or 交办通知 handing out leader cases")
    def issue(body: NoticeIn, ctx: Ctx, who: Principal = guard("POST /api/v1/notices")) -> dict:
        if body.notice_type == notices.ASSIGNMENT:
            return notices.issue_assignment(ctx, body.case_ids or [], body.demands, body.reply_by, who.staff_id,
                                            body.office, body.title)
        return notices.issue_notice(ctx, body.notice_type, body.units, body.case_ids, body.demands, body.reply_by,
                                    who.staff_id)

    @r.get("/notices", dependencies=[guard("GET /api/v1/notices")], tags=["notices"])
    def list_notices(ctx: Ctx) -> list[dict]:
        return notices.list_notices(ctx)

    @r.get("/notices/{notice_id}", dependencies=[guard("GET /api/v1/notices/{notice_id}")], tags=["notices"])
    def get_notice(notice_id: str, ctx: Ctx) -> dict:
        return notices.get_notice(ctx, notice_id)

    @r.get("/notices/{notice_id}/document.{kind}", dependencies=[guard("GET /api/v1/notices/{notice_id}/document.{kind}")],
           tags=["notices"], summary="The notice as Markdown (md) or Word (docx)")
    def document(notice_id: str, kind: Literal["md", "docx"], ctx: Ctx) -> Response:
        return attachment(notices.notice_document(ctx, notice_id, kind), notice_id, kind)

    @r.post("/notices/{notice_id}/replies", tags=["notices"],
            summary="Record a unit's reply to a notice (a unit token: its own reply)")
    def reply(notice_id: str, body: NoticeReply, ctx: Ctx,
              who: Principal = guard("POST /api/v1/notices/{notice_id}/replies")) -> dict:
        if who.unit is not None:
            if body.unit != who.unit:
                raise NotAllowed(f"a unit token replies as its own unit ({who.unit}) only")
            if who.unit not in notices.get_notice(ctx, notice_id)["units"]:
                raise NotFound(f"no notice {notice_id}")
        return notices.record_reply(ctx, notice_id, body.unit, body.text)

    @r.post("/progress", tags=["residents"], summary="The resident's progress lookup (case number + query code)",
            responses=RESIDENT_ERRORS)
    def progress(body: ProgressQuery, ctx: Ctx, request: Request) -> dict:
        client = request.client.host if request.client else "unknown"  # behind a proxy: --forwarded-allow-ips
        return queries.resident_progress(ctx, body.case_id, body.query_code, client)

    @r.post("/progress/documents/{doc_id}.docx", tags=["residents"], responses=RESIDENT_ERRORS,
            summary="A notice of the resident's case as Word (docx), with the case number and query code")
    def progress_document(doc_id: str, body: ProgressQuery, ctx: Ctx, request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        queries.resident_progress(ctx, body.case_id, body.query_code, client)  # the same checks and limits
        return attachment(queries.document_of(ctx, body.case_id, doc_id, "docx"), doc_id, "docx")

    @r.post("/sweep", dependencies=[guard("POST /api/v1/sweep")], tags=["deadlines"], summary="Sweep the deadlines now")
    async def sweep(ctx: Ctx) -> dict:
        return {"sent": await asyncio.to_thread(service.sweep, ctx), "now": ctx.clock.now()}

    @r.post("/meetings", status_code=201, tags=["meetings"],
            summary="Record a joint meeting (联席会议), its decisions tracked like due dates; published")
    def hold(body: MeetingIn, ctx: Ctx, who: Principal = guard("POST /api/v1/meetings")) -> dict:
        return meetings.hold(ctx, body.held_on, body.kind, body.topic, body.units, body.case_ids,
                             [x.model_dump() for x in body.decisions], who.staff_id)

    @r.get("/meetings", dependencies=[guard("GET /api/v1/meetings")], tags=["meetings"])
    def list_meetings(ctx: Ctx) -> list[dict]:
        return meetings.listing(ctx)

    @r.get("/meetings/decisions", tags=["meetings"],
           summary="The meetings' decisions: open, overdue (to chase) or done; a unit token its own")
    def decisions(ctx: Ctx, status: Literal["open", "overdue", "done"] | None = None, unit: Code | None = None,
                  who: Principal = guard("GET /api/v1/meetings/decisions")) -> list[dict]:
        return meetings.decisions(ctx, status, _own_unit(who, unit))

    @r.get("/meetings/{meeting_id}", dependencies=[guard("GET /api/v1/meetings/{meeting_id}")], tags=["meetings"])
    def get_meeting(meeting_id: str, ctx: Ctx) -> dict:
        return meetings.get(ctx, meeting_id)

    @r.get("/meetings/{meeting_id}/minutes.docx", dependencies=[guard("GET /api/v1/meetings/{meeting_id}/minutes.docx")],
           tags=["meetings"], summary="会议纪要 (DOCX)")
    def minutes(meeting_id: str, ctx: Ctx) -> Response:
        return attachment(meetings.minutes(ctx, meeting_id), f"{meeting_id}-会议纪要", "docx")

    @r.post("/meetings/{meeting_id}/decisions/{n}/done", tags=["meetings"],
            summary="A decision carried out (落实): a unit token reports its own")
    def decision_done(meeting_id: str, n: Annotated[int, Path(ge=1, le=10_000)], body: DecisionDone, ctx: Ctx,
                      who: Principal = guard("POST /api/v1/meetings/{meeting_id}/decisions/{n}/done")) -> dict:
        return meetings.done(ctx, meeting_id, n, body.note, unit=who.unit)

    # Keep this last: every route above exists in every mode; the ones below only in XF_MODE demo or test.
    if not (sup.settings.time_travel and isinstance(sup.clock, ManualClock)):
        return r  # time travel exists only in XF_MODE demo or test

    @r.post("/clock/advance", dependencies=[guard("POST /api/v1/clock/advance")], tags=["time travel"],
            summary="Time-travel mode only (XF_MODE demo or test): move supervision's clock forward, then sweep")
    async def advance(body: ClockAdvance, ctx: Ctx) -> dict:
        ctx.clock.advance(timedelta(days=body.days, hours=body.hours))  # never backwards: days, hours ≥ 0
        return {"sent": await asyncio.to_thread(service.sweep, ctx), "now": ctx.clock.now()}

    return r
