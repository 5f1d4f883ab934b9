"""What intake accepts and answers over HTTP (and what a bulk-import row becomes).

Shape checks live here (types, sizes, formats); rules that need the directory or the database
live in ``domain.py`` and ``service.py``.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from services.intake import domain
from services.intake.importer import COLUMNS
from shared.events import Channel, Code
from shared.text import Day, InputModel, normalise_id_number, normalise_phone

Text = Annotated[str, Field(min_length=1)]


class _In(InputModel):
    """Every input of intake's API (shared/text.py: invisible characters stripped, controls refused)."""


class ResidentIn(_In):
    """信访人. The full ID number stays in intake; events carry a masked form and a keyed hash."""

    name: Annotated[str, Field(min_length=1, max_length=50)]
    id_number: str | None = Field(None, description="18-character resident ID (GB 11643), checksum verified")
    phone: str | None = Field(None, description="mobile 1xxxxxxxxxx or landline 0xxx-xxxxxxx")
    address: Annotated[str, Field(max_length=200)] | None = None

    @field_validator("id_number")
    @classmethod
    def _id_number(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        v = normalise_id_number(v)  # ４１０１…, ｘ, spaces: the same person's number links
        problem = domain.resident_id_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        v = normalise_phone(v)  # +86 138 1234 5678 → 13812345678
        problem = domain.phone_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class DelegationIn(_In):
    """代办: the agent filing for a villager, and the service asked for."""

    agent_id: Code
    service_type: Code


class ReferralIn(_In):
    """上级交办: the higher office's document number."""

    doc_no: Annotated[str, Field(min_length=1, max_length=64)]
    from_office: Annotated[str, Field(max_length=100)] | None = None


class CaseSubmission(_In):
    channel: Channel
    resident: ResidentIn
    title: Annotated[str, Field(min_length=2, max_length=domain.MAX_TITLE, description="事由")]
    content: Annotated[str, Field(min_length=1, max_length=domain.MAX_CONTENT)]
    township: Code
    village: Code | None = None
    category: Code | None = Field(None, description="omit to let routing classify the text")
    people_count: Annotated[int, Field(ge=1, le=10000)] = 1
    accused_units: Annotated[list[Code], Field(max_length=5)] = Field(
        default_factory=list, description="units the complaint accuses (检举); routing never sends it to them")
    accuses_unit: bool | None = Field(None, description=(
        "the clerk's answer to 'does the case accuse a unit?' (检举控告): true, the units in accused_units or, failing "
        "them, those the text names; false, none (a unit the text names is a place); omit when not asked: routing "
        "reads the text and asks a clerk (triage) when it names a unit with 举报/投诉/反映 but no conduct word"))
    escalated: bool = Field(False, description="越级访: the resident went over the proper level")
    backlog: bool = Field(False, description="积案: a long-unresolved matter")
    delegation: DelegationIn | None = Field(None, description="required for channel delegated")
    drive_id: Code | None = Field(None, description="required for channel screening")
    referral: ReferralIn | None = Field(None, description="required for channel referral")
    visit_id: Code | None = Field(None, description="required for channel night_visit: the logged visit")


class Flags(BaseModel):
    collective: bool
    escalated: bool
    backlog: bool
    repeat: bool
    special_period: bool


class CaseAccepted(BaseModel):
    """The answer to a submission. Keep the query code: it is the resident's key to the case."""

    case_number: str
    query_code: str
    received_at: datetime
    channel: Channel
    repeat_of: str | None
    flags: Flags


class CaseView(BaseModel):
    """A case as a clerk sees it (the ID number masked)."""

    case_number: str
    channel: Channel
    received_at: datetime
    title: str
    content: str
    township: str
    village: str | None
    category: str | None
    people_count: int
    accused_units: list[str]
    accuses_unit: bool | None = None  # the clerk's answer: does the case accuse a unit? None: not asked
    resident_name: str
    resident_masked_id: str | None
    resident_phone: str | None
    repeat_of: str | None
    flags: Flags
    drive_id: str | None
    visit_id: str | None
    delegation: dict | None
    referral: dict | None


class ProblemIn(_In):
    """One problem a cadre collected on a night visit; it becomes a case."""

    resident: ResidentIn
    title: Annotated[str, Field(min_length=2, max_length=domain.MAX_TITLE)]
    content: Annotated[str, Field(min_length=1, max_length=domain.MAX_CONTENT)]
    category: Code | None = None
    people_count: Annotated[int, Field(ge=1, le=10000)] = 1
    accused_units: Annotated[list[Code], Field(max_length=5)] = Field(default_factory=list)


class VisitLog(_In):
    """驻村夜访 log."""

    cadre_name: Annotated[str, Field(min_length=1, max_length=50)]
    cadre_unit: Code
    township: Code
    village: Code
    visited_on: Day
    households_visited: Annotated[int, Field(ge=0, le=10000)]
    problems: Annotated[list[ProblemIn], Field(max_length=200)] = Field(default_factory=list)
    # who visited and how, as the bureau reports them: township leaders (乡镇领导) and station staff
    # (驻站人员); one household at a time (一对一走访) or households together (多户座谈)
    cadre_kind: Literal["township_leader", "station_staff"] | None = None
    visit_format: Literal["one_to_one", "group"] | None = None
    # problems raised and solved on the spot (当场解决: no case made), suggestions collected (意见建议)
    solved_on_spot: Annotated[int, Field(ge=0, le=10000)] = 0
    suggestions: Annotated[int, Field(ge=0, le=10000)] = 0


class VisitLogged(BaseModel):
    visit_id: str
    cases: list[CaseAccepted]


class DriveIn(_In):
    """矛盾纠纷排查: quarterly, or special-period (before holidays and sensitive dates)."""

    kind: Literal["quarterly", "special"]
    name: Annotated[str, Field(min_length=2, max_length=100)]
    starts_on: Day
    ends_on: Day


class DriveView(BaseModel):
    drive_id: str
    kind: Literal["quarterly", "special"]
    name: str
    starts_on: date
    ends_on: date
    status: Literal["open", "closed"]
    cases: int


class ImportRowIn(_In):
    row: Annotated[int, Field(ge=1)]
    values: dict[str, str | int | float | bool | None] = Field(description=(
        "The row's cells by column (importer.COLUMNS: name, id_number, township, title…); nothing else: the drive "
        "is the one in the path"))

    @field_validator("values")
    @classmethod
    def _known_columns(cls, values: dict) -> dict:
        unknown = sorted(set(values) - set(COLUMNS))
        if unknown:
            raise ValueError(f"unknown column(s) {', '.join(unknown)}; the columns are {', '.join(COLUMNS)}")
        return values


class ImportChunk(_In):
    """Rows of one file sent in chunks; ``source`` (the file's hash) makes a re-run idempotent."""

    source: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9]+$")]
    rows: Annotated[list[ImportRowIn], Field(min_length=1, max_length=2000)]

    @field_validator("rows")
    @classmethod
    def _each_row_once(cls, rows: list[ImportRowIn]) -> list[ImportRowIn]:
        seen, twice = set(), set()
        for r in rows:
            (twice if r.row in seen else seen).add(r.row)
        if twice:
            raise ValueError(f"row number(s) {', '.join(map(str, sorted(twice)))} appear more than once")
        return rows


class RowError(BaseModel):
    row: int
    field: str
    message: str


class ImportReport(BaseModel):
    """Which rows are in (``case_numbers``: row → case, new or imported before), which were refused
    and why (``errors``, the first ``XF_IMPORT_MAX_ERRORS``; ``refused_rows`` counts them all)."""

    rows: int = 0
    created: int = 0
    already_imported: int = 0
    refused_rows: int = 0
    case_numbers: dict[int, str] = Field(default_factory=dict)
    errors: list[RowError] = Field(default_factory=list)
    errors_total: int = Field(0, description="every row error, also those past the list's cap")
    warnings: list[str] = Field(default_factory=list, description="e.g. columns the bureau does not use, ignored")
    encoding: str | None = Field(None, description="how the file was read: utf-8, utf-8-sig, gb18030, utf-16, xlsx")


class FeedbackIn(_In):
    """信访人评价 of the reply, by case number + query code."""

    query_code: Annotated[str, Field(min_length=4, max_length=16)]
    satisfied: bool
    comment: Annotated[str, Field(max_length=1000)] = ""


class ReviewIn(_In):
    """复查 (review) or 复核 (re-review) request, by case number + query code."""

    query_code: Annotated[str, Field(min_length=4, max_length=16)]
    level: Literal["review", "re_review"]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class Acknowledged(BaseModel):
    case_number: str
    recorded_at: datetime
