"""The event catalogue (DESIGN §3): every event as a versioned pydantic model.

Each event carries ``event_id`` (also its ``Nats-Msg-Id``), ``occurred_at`` (UTC), ``schema_version``
and the ``actor``; case events carry ``case_id`` (the case number). ``type`` names the model, so a
consumer can decode any message with :func:`decode`. A change that breaks a payload bumps
``schema_version``; a consumer meeting a version it does not know dead-letters the message.
"""
from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timezone
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared import subjects

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Channel = Literal["walk_in", "letter", "phone", "online", "delegated", "night_visit", "screening", "referral"]
CHANNELS: tuple[str, ...] = Channel.__args__  # type: ignore[attr-defined]
DueKind = Literal["accept", "sign", "reply", "review", "re_review", "agent"]


class Actor(BaseModel):
    """Who caused the event: a role and, for staff and services, an id. Never a resident's identity."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["clerk", "resident", "agent", "cadre", "unit", "supervisor", "service", "system"]
    id: str | None = None


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    subject_template: ClassVar[str]

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: Literal[1] = 1
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    actor: Actor

    @property
    def subject(self) -> str:
        return self.subject_template.format(unit=getattr(self, "unit", ""))


class CaseEvent(Event):
    case_id: str


class UnitCaseEvent(CaseEvent):
    unit: Code


# --- intake -------------------------------------------------------------------------------------

class ResidentRef(BaseModel):
    """What leaves intake of a resident: the masked ID and its keyed hash, never the full number."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    masked_id: str | None = None
    id_hash: str | None = None
    phone: str | None = None


class Delegation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    agent_id: Code
    agency_id: Code
    service_type: Code


class Referral(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    doc_no: str
    from_office: str | None = None


class CaseReceived(CaseEvent):
    """信访件受理登记: a case entered through one of the channels."""

    subject_template: ClassVar[str] = subjects.RECEIVED
    type: Literal["CaseReceived"] = "CaseReceived"
    channel: Channel
    title: str
    content: str
    category: Code | None = None
    township: Code
    village: Code | None = None
    people_count: int = 1
    accused_units: list[Code] = []
    resident: ResidentRef
    collective: bool = False
    escalated: bool = False
    backlog: bool = False
    repeat: bool = False
    repeat_of: str | None = None
    special_period: bool = False
    drive_id: Code | None = None
    visit_id: str | None = None
    delegation: Delegation | None = None
    referral: Referral | None = None
    # Keyed hash of the resident's query code: supervision checks a progress lookup against it.
    query_code_hash: str | None = None


class PetitionerFeedback(CaseEvent):
    """信访人评价: satisfied or not with the reply."""

    subject_template: ClassVar[str] = subjects.FEEDBACK
    type: Literal["PetitionerFeedback"] = "PetitionerFeedback"
    satisfied: bool
    comment: str = ""


class ReviewRequested(CaseEvent):
    """复查 (review) or 复核 (re-review) requested by the resident."""

    subject_template: ClassVar[str] = subjects.REVIEW_REQUESTED
    type: Literal["ReviewRequested"] = "ReviewRequested"
    level: Literal["review", "re_review"]
    reason: str


class DriveOpened(Event):
    """矛盾纠纷排查: a screening drive was opened."""

    subject_template: ClassVar[str] = subjects.DRIVE_OPENED
    type: Literal["DriveOpened"] = "DriveOpened"
    drive_id: Code
    kind: Literal["quarterly", "special"]
    name: str
    starts_on: date
    ends_on: date


class DriveClosed(Event):
    subject_template: ClassVar[str] = subjects.DRIVE_CLOSED
    type: Literal["DriveClosed"] = "DriveClosed"
    drive_id: Code


class NightVisitLogged(Event):
    """驻村夜访: a cadre's night visit; each problem collected became a case with this visit_id.

    Not in DESIGN §3's table: scoring needs the households visited, which no case event carries.
    """

    subject_template: ClassVar[str] = subjects.VISIT_LOGGED
    type: Literal["NightVisitLogged"] = "NightVisitLogged"
    visit_id: str
    cadre_unit: Code
    township: Code
    village: Code | None = None
    visited_on: date
    households_visited: int
    case_ids: list[str]


class CaseBrief(BaseModel):
    """The case as the unit handling it receives it (DESIGN §9): what it needs, the ID number masked."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    title: str
    content: str
    channel: Channel
    received_at: AwareDatetime
    township: Code
    village: Code | None = None
    people_count: int = 1
    resident_name: str
    resident_masked_id: str | None = None
    resident_phone: str | None = None
    collective: bool = False
    escalated: bool = False
    backlog: bool = False
    repeat_of: str | None = None
    special_period: bool = False
    service_type: Code | None = None  # a delegated case: the agent's promised time limit follows it
    referral_doc_no: str | None = None

    @classmethod
    def of(cls, case: CaseReceived) -> CaseBrief:
        r = case.resident
        return cls(title=case.title, content=case.content, channel=case.channel, received_at=case.occurred_at,
                   township=case.township, village=case.village, people_count=case.people_count,
                   resident_name=r.name, resident_masked_id=r.masked_id, resident_phone=r.phone,
                   collective=case.collective, escalated=case.escalated, backlog=case.backlog,
                   repeat_of=case.repeat_of, special_period=case.special_period,
                   service_type=case.delegation.service_type if case.delegation else None,
                   referral_doc_no=case.referral.doc_no if case.referral else None)


# --- routing ------------------------------------------------------------------------------------

class CaseAssigned(UnitCaseEvent):
    """交办: the case is given to a unit as lead (主办) or co-handling (协办) unit."""

    subject_template: ClassVar[str] = subjects.ASSIGNED
    type: Literal["CaseAssigned"] = "CaseAssigned"
    role: Literal["lead", "co"]
    case: CaseBrief
    rule_id: str | None = None  # the routing rule that fired, "repeat", or "triage"
    category: Code | None = None
    category_suggested: bool = False  # the classifier chose the category (with ``confidence``)
    confidence: float | None = None
    note: str = ""


class CaseNeedsTriage(CaseEvent):
    """No rule matched, the classifier was unsure, or the case came back twice: a clerk decides."""

    subject_template: ClassVar[str] = subjects.TRIAGE
    type: Literal["CaseNeedsTriage"] = "CaseNeedsTriage"
    reason: Literal["category_unclear", "no_rule", "returned_twice"]
    detail: str = ""
    returned_by: list[Code] = []
    suggested_category: Code | None = None
    confidence: float | None = None


class LeaderAssigned(CaseEvent):
    """领导包案: a county leader is made responsible for an important case."""

    subject_template: ClassVar[str] = subjects.LEADER_ASSIGNED
    type: Literal["LeaderAssigned"] = "LeaderAssigned"
    leader_id: Code
    reasons: list[Literal["backlog", "collective", "escalated", "repeat", "special_period"]]


# --- departments --------------------------------------------------------------------------------

class UnitSigned(UnitCaseEvent):
    """签收."""

    subject_template: ClassVar[str] = subjects.SIGNED
    type: Literal["UnitSigned"] = "UnitSigned"


class CaseReturned(UnitCaseEvent):
    """退回: the unit says the case is not its own."""

    subject_template: ClassVar[str] = subjects.RETURNED
    type: Literal["CaseReturned"] = "CaseReturned"
    reason: str


class ProgressReported(UnitCaseEvent):
    subject_template: ClassVar[str] = subjects.PROGRESS
    type: Literal["ProgressReported"] = "ProgressReported"
    note: str


class ExtensionRequested(UnitCaseEvent):
    """延期申请: at most one, of at most 30 days (checked by supervision against the policy)."""

    subject_template: ClassVar[str] = subjects.EXTENSION_REQUESTED
    type: Literal["ExtensionRequested"] = "ExtensionRequested"
    days: int = Field(ge=1)
    reason: str


class CaseReplied(UnitCaseEvent):
    """办理回报 / 答复."""

    subject_template: ClassVar[str] = subjects.REPLIED
    type: Literal["CaseReplied"] = "CaseReplied"
    result: Literal["resolved", "partly_resolved", "not_supported", "explained"]
    text: str


# --- supervision --------------------------------------------------------------------------------

class ExtensionDecided(UnitCaseEvent):
    subject_template: ClassVar[str] = subjects.EXTENSION_DECIDED
    type: Literal["ExtensionDecided"] = "ExtensionDecided"
    approved: bool
    days: int = 0
    reason: str = ""
    new_due_at: AwareDatetime | None = None


class CaseReminded(UnitCaseEvent):
    """催办: a due date is near."""

    subject_template: ClassVar[str] = subjects.REMINDED
    type: Literal["CaseReminded"] = "CaseReminded"
    due_kind: DueKind
    due_at: AwareDatetime


class CaseOverdue(UnitCaseEvent):
    """超期."""

    subject_template: ClassVar[str] = subjects.OVERDUE
    type: Literal["CaseOverdue"] = "CaseOverdue"
    due_kind: DueKind
    due_at: AwareDatetime


class CaseEscalated(UnitCaseEvent):
    """Overdue past the grace period: the lead leader and the supervision office are told."""

    subject_template: ClassVar[str] = subjects.ESCALATED
    type: Literal["CaseEscalated"] = "CaseEscalated"
    due_kind: DueKind
    due_at: AwareDatetime
    leader_id: Code | None = None


class CaseClosed(CaseEvent):
    """办结."""

    subject_template: ClassVar[str] = subjects.CLOSED
    type: Literal["CaseClosed"] = "CaseClosed"
    reason: Literal["satisfied", "no_feedback", "review_upheld", "withdrawn"]


class CaseArchived(CaseEvent):
    subject_template: ClassVar[str] = subjects.ARCHIVED
    type: Literal["CaseArchived"] = "CaseArchived"


class SupervisionNoticeIssued(Event):
    """督办通知, numbered per year and notice type, e.g. 〔2026〕3号."""

    subject_template: ClassVar[str] = subjects.NOTICE_ISSUED
    type: Literal["SupervisionNoticeIssued"] = "SupervisionNoticeIssued"
    notice_no: str
    notice_type: Code
    year: int
    seq: int
    units: list[Code]
    case_ids: list[str]
    demands: str
    reply_by: date


# --- scoring ------------------------------------------------------------------------------------

class UnitScore(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    unit: Code
    score: float
    rank: int


class ScorecardsPublished(Event):
    """考核结果发布: a period is closed and its figures frozen."""

    subject_template: ClassVar[str] = subjects.PERIOD_CLOSED
    type: Literal["ScorecardsPublished"] = "ScorecardsPublished"
    period: str
    scores: list[UnitScore]


EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        CaseReceived, PetitionerFeedback, ReviewRequested, DriveOpened, DriveClosed, NightVisitLogged,
        CaseAssigned, CaseNeedsTriage, LeaderAssigned,
        UnitSigned, CaseReturned, ProgressReported, ExtensionRequested, CaseReplied,
        ExtensionDecided, CaseReminded, CaseOverdue, CaseEscalated, CaseClosed, CaseArchived,
        SupervisionNoticeIssued, ScorecardsPublished,
    )
}


class UndecodableEvent(ValueError):
    """The message is not an event this code knows: unknown type or version, or invalid payload.

    Retrying cannot fix it, so consumers send it to the dead-letter subject at once.
    """


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


def decode_dict(raw: dict) -> Event:
    """An event stored as a dict (e.g. on a timeline) back as its model."""
    return EVENT_TYPES[raw["type"]].model_validate(raw)


def decode(data: bytes) -> Event:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise UndecodableEvent(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UndecodableEvent("not a JSON object")
    cls = EVENT_TYPES.get(raw.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise UndecodableEvent(f"unknown event type {raw.get('type')!r}")
    version = raw.get("schema_version")
    if version != cls.model_fields["schema_version"].default:
        raise UndecodableEvent(f"{cls.__name__}: unknown schema_version {version!r}")
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise UndecodableEvent(f"{cls.__name__}: {exc}") from None
