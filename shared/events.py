"""The event catalogue (DESIGN §3): every event as a versioned pydantic model.

Each event carries ``event_id`` (also its ``Nats-Msg-Id``), ``occurred_at`` (UTC), ``schema_version``
and the ``actor``; case events carry ``case_id`` (the case number). ``type`` names the model, so a
consumer can decode any message with :func:`decode`.

The stream is kept forever and replayed, so every payload ever published must stay readable:

- each event type has its own ``schema_version``. A change that breaks a payload bumps it and adds
  one :func:`upcaster` per step, which turns a payload of the old version into the next one;
  :func:`decode` reads every version ever published and hands over the current model;
- :func:`decode` is a tolerant reader: it ignores fields it does not know, so a producer may add an
  optional field before its consumers are upgraded (adding one needs no bump);
- a version newer than this code knows, or the envelope without ``event_id``, cannot be read:
  consumers dead-letter it (a consumer never invents an id, or a retried publish would apply twice).

``tests/fixtures/events/`` holds real payloads of every type as published by earlier code, never
edited; a test decodes them all.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable
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


# What every payload must carry, whoever publishes it; the JSON schemas mark them required.
ENVELOPE = ("type", "schema_version", "event_id", "occurred_at", "actor")


def _envelope_required(schema: dict) -> None:
    schema["required"] = list(ENVELOPE) + [f for f in schema.get("required", []) if f not in ENVELOPE]


class Event(BaseModel):
    # Our own code builds events strictly (a misspelt field is a bug); decode() reads tolerantly.
    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_envelope_required)
    subject_template: ClassVar[str]
    # Who publishes it: a service's name, or "department" for the units' own events.
    published_by: ClassVar[str]

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=64,
                          description="Unique id of this event, also its Nats-Msg-Id header: a retried publish "
                                      "with the same id is stored once. Required; a UUID is a good choice.")
    schema_version: Literal[1] = Field(1, description="Version of this event type's payload (each type has its own).")
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(timezone.utc),
                                       description="When it happened, with a time zone (UTC preferred).")
    actor: Actor = Field(description="Who caused it: a role and, for staff and services, an id.")

    @property
    def subject(self) -> str:
        return self.subject_template.format(unit=getattr(self, "unit", ""))

    @classmethod
    def version(cls) -> int:
        return cls.model_fields["schema_version"].default


class CaseEvent(Event):
    case_id: str = Field(min_length=1, max_length=32, description="The case number (信访件编号), e.g. QS-2026-000123.")


class UnitCaseEvent(CaseEvent):
    unit: Code = Field(description="Code of the unit (责任单位) the event is about; also the last token of "
                                   "its subject.")


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
    published_by: ClassVar[str] = "intake"
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
    published_by: ClassVar[str] = "intake"
    type: Literal["PetitionerFeedback"] = "PetitionerFeedback"
    satisfied: bool
    comment: str = ""


class ReviewRequested(CaseEvent):
    """复查 (review) or 复核 (re-review) requested by the resident."""

    subject_template: ClassVar[str] = subjects.REVIEW_REQUESTED
    published_by: ClassVar[str] = "intake"
    type: Literal["ReviewRequested"] = "ReviewRequested"
    level: Literal["review", "re_review"]
    reason: str


class DriveOpened(Event):
    """矛盾纠纷排查: a screening drive was opened."""

    subject_template: ClassVar[str] = subjects.DRIVE_OPENED
    published_by: ClassVar[str] = "intake"
    type: Literal["DriveOpened"] = "DriveOpened"
    drive_id: Code
    kind: Literal["quarterly", "special"]
    name: str
    starts_on: date
    ends_on: date


class DriveClosed(Event):
    subject_template: ClassVar[str] = subjects.DRIVE_CLOSED
    published_by: ClassVar[str] = "intake"
    type: Literal["DriveClosed"] = "DriveClosed"
    drive_id: Code


class NightVisitLogged(Event):
    """驻村夜访: a cadre's night visit; each problem collected became a case with this visit_id.

    Not in DESIGN §3's table: scoring needs the households visited, which no case event carries.
    """

    subject_template: ClassVar[str] = subjects.VISIT_LOGGED
    published_by: ClassVar[str] = "intake"
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
    published_by: ClassVar[str] = "routing"
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
    published_by: ClassVar[str] = "routing"
    type: Literal["CaseNeedsTriage"] = "CaseNeedsTriage"
    reason: Literal["category_unclear", "no_rule", "returned_twice"]
    detail: str = ""
    returned_by: list[Code] = []
    suggested_category: Code | None = None
    confidence: float | None = None


class LeaderAssigned(CaseEvent):
    """领导包案: a county leader is made responsible for an important case."""

    subject_template: ClassVar[str] = subjects.LEADER_ASSIGNED
    published_by: ClassVar[str] = "routing"
    type: Literal["LeaderAssigned"] = "LeaderAssigned"
    leader_id: Code
    reasons: list[Literal["backlog", "collective", "escalated", "repeat", "special_period"]]


# --- departments --------------------------------------------------------------------------------

class UnitSigned(UnitCaseEvent):
    """签收."""

    subject_template: ClassVar[str] = subjects.SIGNED
    published_by: ClassVar[str] = "department"
    type: Literal["UnitSigned"] = "UnitSigned"


class CaseReturned(UnitCaseEvent):
    """退回: the unit says the case is not its own."""

    subject_template: ClassVar[str] = subjects.RETURNED
    published_by: ClassVar[str] = "department"
    type: Literal["CaseReturned"] = "CaseReturned"
    reason: str


class ProgressReported(UnitCaseEvent):
    subject_template: ClassVar[str] = subjects.PROGRESS
    published_by: ClassVar[str] = "department"
    type: Literal["ProgressReported"] = "ProgressReported"
    note: str


class ExtensionRequested(UnitCaseEvent):
    """延期申请: at most one, of at most 30 days (checked by supervision against the policy)."""

    subject_template: ClassVar[str] = subjects.EXTENSION_REQUESTED
    published_by: ClassVar[str] = "department"
    type: Literal["ExtensionRequested"] = "ExtensionRequested"
    days: int = Field(ge=1)
    reason: str


class CaseReplied(UnitCaseEvent):
    """办理回报 / 答复."""

    subject_template: ClassVar[str] = subjects.REPLIED
    published_by: ClassVar[str] = "department"
    type: Literal["CaseReplied"] = "CaseReplied"
    result: Literal["resolved", "partly_resolved", "not_supported", "explained"]
    text: str


# --- supervision --------------------------------------------------------------------------------

class ExtensionDecided(UnitCaseEvent):
    subject_template: ClassVar[str] = subjects.EXTENSION_DECIDED
    published_by: ClassVar[str] = "supervision"
    type: Literal["ExtensionDecided"] = "ExtensionDecided"
    approved: bool
    days: int = 0
    reason: str = ""
    new_due_at: AwareDatetime | None = None


class CaseReminded(UnitCaseEvent):
    """催办: a due date is near."""

    subject_template: ClassVar[str] = subjects.REMINDED
    published_by: ClassVar[str] = "supervision"
    type: Literal["CaseReminded"] = "CaseReminded"
    due_kind: DueKind
    due_at: AwareDatetime


class CaseOverdue(UnitCaseEvent):
    """超期."""

    subject_template: ClassVar[str] = subjects.OVERDUE
    published_by: ClassVar[str] = "supervision"
    type: Literal["CaseOverdue"] = "CaseOverdue"
    due_kind: DueKind
    due_at: AwareDatetime


class CaseEscalated(UnitCaseEvent):
    """Overdue past the grace period: the lead leader and the supervision office are told."""

    subject_template: ClassVar[str] = subjects.ESCALATED
    published_by: ClassVar[str] = "supervision"
    type: Literal["CaseEscalated"] = "CaseEscalated"
    due_kind: DueKind
    due_at: AwareDatetime
    leader_id: Code | None = None


class CaseClosed(CaseEvent):
    """办结."""

    subject_template: ClassVar[str] = subjects.CLOSED
    published_by: ClassVar[str] = "supervision"
    type: Literal["CaseClosed"] = "CaseClosed"
    reason: Literal["satisfied", "no_feedback", "review_upheld", "withdrawn"]


class CaseArchived(CaseEvent):
    subject_template: ClassVar[str] = subjects.ARCHIVED
    published_by: ClassVar[str] = "supervision"
    type: Literal["CaseArchived"] = "CaseArchived"


class SupervisionNoticeIssued(Event):
    """督办通知, numbered per year and notice type, e.g. 〔2026〕3号."""

    subject_template: ClassVar[str] = subjects.NOTICE_ISSUED
    published_by: ClassVar[str] = "supervision"
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
    published_by: ClassVar[str] = "scoring"
    type: Literal["ScorecardsPublished"] = "ScorecardsPublished"
    period: str
    scores: list[UnitScore]


# --- told to one unit alone ------------------------------------------------------------------------

class EventRefused(Event):
    """What became of a unit's event that was not applied: refused where it falls in the case's
    lifecycle, or dead-lettered (undecodable, forged, failing). Published to that unit alone, on
    ``cases.refused.<unit>``, so a department's developer learns of a mistake without a clerk.
    """

    subject_template: ClassVar[str] = subjects.REFUSED
    published_by: ClassVar[str] = "routing, supervision, and any consumer that dead-letters"
    type: Literal["EventRefused"] = "EventRefused"
    unit: Code = Field(description="The unit that published the refused event (the last token of its subject).")
    case_id: str | None = Field(None, description="The case the refused event named, when it could be read.")
    refused_event_id: str | None = Field(None, description="event_id of the refused event, when it could be read.")
    refused_type: str | None = Field(None, description="type of the refused event, when it could be read.")
    refused_subject: str = Field(description="The subject the refused event was published on.")
    kind: Literal["refused", "forged", "undecodable", "rejected", "failed"] = Field(description=(
        "refused: it makes no sense where it falls in the case (e.g. a reply before the sign-for); "
        "forged: its subject is not the one its type and unit imply; undecodable: not a valid event of a known "
        "type and version; rejected: it names a code the county does not have; failed: it failed repeatedly."))
    reason: str = Field(description="Why, in words a developer can act on.")
    by: str = Field(description="The service that refused it.")

    @classmethod
    def of(cls, event: Event | None, *, unit: str, subject: str, kind: str, reason: str, by: str,
           occurred_at: datetime | None = None, stream_seq: int | None = None) -> EventRefused:
        """The refusal of ``event`` (None: it could not be read; ``stream_seq`` then names it). Its id
        is derived from the refused event's, so every service refusing the same event publishes the
        same refusal and the stream keeps one."""
        key = event.event_id if event is not None else f"seq:{stream_seq}"
        return cls(event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"xinfang:refused:{key}")),
                   occurred_at=occurred_at or datetime.now(timezone.utc), actor=Actor(kind="service", id=by),
                   unit=unit, case_id=getattr(event, "case_id", None),
                   refused_event_id=event.event_id if event else None, refused_type=event.type if event else None,
                   refused_subject=subject, kind=kind, reason=reason[:2000], by=by)


class UnitNotified(UnitCaseEvent):
    """告知: what the resident or the bureau did about a case this unit holds — the resident's
    feedback, a review request (复查/复核), the close (办结), the archiving — forwarded to the unit on
    ``cases.notified.<unit>``, since those events themselves are on bureau-wide subjects."""

    subject_template: ClassVar[str] = subjects.NOTIFIED
    published_by: ClassVar[str] = "supervision"
    type: Literal["UnitNotified"] = "UnitNotified"
    role: Literal["lead", "co"] = Field(description="The unit's role in the case: lead (主办) or co-handling (协办).")
    event: Annotated[PetitionerFeedback | ReviewRequested | CaseClosed | CaseArchived,
                     Field(discriminator="type", description="The event, as it was published.")]


# --- the department's request to routing (core NATS request-reply, not stored) --------------------

class AssignmentQuery(BaseModel):
    """Request on ``routing.assignment.<unit>``: is this case assigned to my unit now?"""

    model_config = ConfigDict(extra="ignore")
    case_id: str = Field(min_length=1, max_length=32, description="The case number.")


class AssignmentAnswer(BaseModel):
    """Routing's reply to an :class:`AssignmentQuery`."""

    model_config = ConfigDict(extra="ignore")
    case_id: str | None = Field(None, description="The case asked about (absent when the request was malformed).")
    unit: Code = Field(description="The unit that asked (the last token of the request subject).")
    assigned: bool = Field(description="True when the case is the unit's own now.")
    role: Literal["lead", "co"] | None = Field(None, description="The unit's role, when assigned.")
    error: Literal["unknown_case", "not_assigned", "malformed"] | None = Field(None, description=(
        "Why not, when not assigned: unknown_case — routing has no such case (a typo, or not routed yet); "
        "not_assigned — the case is another unit's; malformed — the request was not {\"case_id\": \"...\"}."))
    reason: str | None = Field(None, description="The same, in words.")


EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        CaseReceived, PetitionerFeedback, ReviewRequested, DriveOpened, DriveClosed, NightVisitLogged,
        CaseAssigned, CaseNeedsTriage, LeaderAssigned,
        UnitSigned, CaseReturned, ProgressReported, ExtensionRequested, CaseReplied,
        ExtensionDecided, CaseReminded, CaseOverdue, CaseEscalated, CaseClosed, CaseArchived,
        SupervisionNoticeIssued, ScorecardsPublished, EventRefused, UnitNotified,
    )
}

# Published by the units themselves, on their own subjects (``cases.<verb>.<unit>``).
DEPARTMENT_EVENTS: tuple[type[UnitCaseEvent], ...] = tuple(
    c for c in EVENT_TYPES.values() if c.published_by == "department")  # type: ignore[misc]


class UndecodableEvent(ValueError):
    """The message is not an event this code can read: unknown type, a version newer than this code,
    no ``event_id``, or an invalid payload. Retrying cannot fix it, so consumers dead-letter it at once.
    """


# (type, version) → a function turning that version's payload (a dict) into the next version's.
Upcaster = Callable[[dict], dict]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the step ``from_version`` → ``from_version + 1`` of ``event_type``'s payload."""
    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = fn
        return fn
    return register


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


def upcast(raw: dict) -> tuple[type[Event], dict]:
    """The payload's model and the payload brought up to that model's version."""
    cls = EVENT_TYPES.get(raw.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise UndecodableEvent(f"unknown event type {raw.get('type')!r}; known: {', '.join(EVENT_TYPES)}")
    version, current = raw.get("schema_version"), cls.version()
    if type(version) is not int or not 1 <= version <= current:
        raise UndecodableEvent(f"{cls.__name__}: unknown schema_version {version!r} (this code reads 1 to {current})")
    while version < current:
        step = UPCASTERS.get((cls.__name__, version))
        if step is None:
            raise UndecodableEvent(f"{cls.__name__}: no upcaster from schema_version {version}")
        raw = {**step(dict(raw)), "schema_version": version + 1}
        version += 1
    return cls, raw


def decode_dict(raw: dict) -> Event:
    """An event as a dict (a message's JSON, or a stored payload) as its current model."""
    cls, raw = upcast(raw)
    if not isinstance(raw.get("event_id"), str) or not raw["event_id"]:
        raise UndecodableEvent(f"{cls.__name__}: event_id is required (it is also the Nats-Msg-Id)")
    if "occurred_at" not in raw:
        raise UndecodableEvent(f"{cls.__name__}: occurred_at is required")
    try:
        return cls.model_validate(raw, extra="ignore")  # tolerant reader: unknown fields are skipped
    except ValidationError as exc:
        raise UndecodableEvent(f"{cls.__name__}: {_fields(exc)}") from None


def _fields(exc: ValidationError) -> str:
    """The failing fields by name, without echoing the payload (it may hold personal data)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(payload)'}: {e['msg']}" for e in exc.errors())


def decode(data: bytes) -> Event:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise UndecodableEvent(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise UndecodableEvent("not a JSON object")
    return decode_dict(raw)
