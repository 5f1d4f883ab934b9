"""Scoring's HTTP routes: reports for any period and filter (JSON, CSV, XLSX, Markdown), and
closing a period."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from services.scoring import annual, reports, service
from services.scoring.service import Scoring
from shared.forms import attachment
from shared.http import Guard
from shared.text import InputModel
from shared.tokens import Principal

guard = Guard("scoring")  # roles per route: shared/access.py


def get_scoring(request: Request) -> Scoring:
    return request.app.state.scoring


Ctx = Annotated[Scoring, Depends(get_scoring)]


def filters(unit: str | None = None, township: str | None = None, channel: str | None = None,
            category: str | None = None, drive: str | None = None, leader: str | None = None) -> dict:
    """Any of: the lead unit, township, channel, category, drive or lead leader."""
    return {"unit": unit, "township": township, "channel": channel, "category": category, "drive": drive,
            "leader": leader}


Filters = Annotated[dict, Depends(filters)]


class CloseIn(InputModel):
    closed_by: Annotated[str | None, Field(max_length=64, description=(
        "ignored, accepted for older clients: recorded as the token's staff id"))] = None


def build_router(scoring: Scoring) -> APIRouter:
    r = APIRouter(prefix="/api/v1")

    @r.get("/reports/{period}", dependencies=[guard("GET /api/v1/reports/{period}")], tags=["reports"],
           summary="Figures, channels, scorecards, accountability and narrative (period: 2026, 2026-Q3, 2026-05, "
                   "2026-01-01..2026-03-31)")
    def report(period: str, ctx: Ctx, f: Filters) -> dict:
        ctx.metrics.reports.labels("json").inc()
        return service.report(ctx, period, f)

    @r.get("/reports/{period}/report.{fmt}", dependencies=[guard("GET /api/v1/reports/{period}/report.{fmt}")],
           tags=["reports"],
           summary="The same report as CSV or XLSX (the figures), or the annual report (信访工作总结) as Markdown or DOCX")
    def download(period: str, fmt: Literal["csv", "xlsx", "md", "docx"], ctx: Ctx, f: Filters) -> Response:
        body = service.report(ctx, period, f)
        ctx.metrics.reports.labels(fmt).inc()
        content = {"csv": reports.to_csv, "xlsx": reports.to_xlsx, "md": annual.to_markdown,
                   "docx": annual.to_docx}[fmt](body)
        return attachment(content, f"report-{period}", fmt)

    @r.get("/scorecards/{period}", dependencies=[guard("GET /api/v1/scorecards/{period}")], tags=["reports"])
    def scorecards(period: str, ctx: Ctx) -> dict:
        return service.report(ctx, period)["scorecards"]

    @r.get("/accountability/{period}", dependencies=[guard("GET /api/v1/accountability/{period}")], tags=["reports"])
    def accountability(period: str, ctx: Ctx) -> list[dict]:
        return service.report(ctx, period)["accountability"]

    @r.post("/periods/{period}/close", tags=["reports"],
            summary="Freeze a period's figures and publish ScorecardsPublished")
    def close(period: str, ctx: Ctx, body: CloseIn | None = None,  # noqa: ARG001 - nothing in it counts now
              who: Principal = guard("POST /api/v1/periods/{period}/close")) -> dict:
        return service.close_period(ctx, period, who.staff_id)

    return r
