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
from collections.abc import Callable, Mapping
from datetime import date, datetime, timezone
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared import subjects

# A code of the directory (unit, township, category, …) or an id like a drive's: it may become a NATS
# subject token, so never '.', '*' or '>' (shared/directory.py refuses them in the files too).
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Channel = Literal["walk_in", "letter", "phone", "online", "delegated", "night_visit", "screening", "referral"]
CHANNELS: tuple[str, ...] = Channel.__args__  # type: ignore[attr-defined]
DueKind = Literal["accept", "sign", "reply", "review", "re_review", "agent"]


class Actor(BaseModel):
    """Who caused the event: a role and, for staff and services, an id. Never a resident's identity."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["clerk", "resident", "agent", "cadre", "unit", "supervisor", "service", "system"] = Field(
        description=(
            "The role that caused it: clerk (工作人员), resident (信访人), agent (代办员), cadre (驻村干部), unit (责任单位), "
            "supervisor (督查室), service, or system."))
    id: str | None = Field(None, description=(
        "For staff, units and services: their id, code or name. Never a resident's identity."))


_TYPE = "The event type: it names the model, so a consumer can decode any message."

T = TypeVar("T")

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
    # Services that also publish it on a unit's behalf (a unit head's decision made through the API).
    relayed_by: ClassVar[tuple[str, ...]] = ()

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
    name: str = Field(description="The resident's name (信访人姓名).")
    masked_id: str | None = Field(None, description=(
        "The ID number masked, e.g. 110105********002X; absent when none was given."))
    id_hash: str | None = Field(None, description=(
        "Keyed hash (HMAC-SHA256, hex) of the ID number: links a resident's cases without the number."))
    phone: str | None = Field(None, description="The resident's phone (联系电话), when given.")


class Delegation(BaseModel):
    """代办: the agent who filed the case on a resident's behalf, and the service asked for."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    agent_id: Code = Field(description="The agent (代办员) who filed the case (agents.yaml).")
    agency_id: Code = Field(description="The agent's agency (代办机构).")
    service_type: Code = Field(description=(
        "The service asked for; its promised time limit (承诺时限) is a due date of the case."))


class Referral(BaseModel):
    """上级交办: the higher office's document that handed the case down."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    doc_no: str = Field(description="The higher office's document number (交办文号).")
    from_office: str | None = Field(None, description="The office that handed the case down, when known.")


class CaseReceived(CaseEvent):
    """信访件受理登记: a case entered through one of the channels."""

    subject_template: ClassVar[str] = subjects.RECEIVED
    published_by: ClassVar[str] = "intake"
    type: Literal["CaseReceived"] = Field("CaseReceived", description=_TYPE)
    channel: Channel = Field(description=(
        "How the case came in: walk_in (来访), letter (来信), phone (来电), online (网上信访), delegated (代办), night_visit "
        "(驻村夜访), screening (矛盾纠纷排查) or referral (上级交办)."))
    title: str = Field(description="The case's short description (事由).")
    content: str = Field(description="What the resident asks for or reports (信访内容).")
    category: Code | None = Field(None, description=(
        "Category code (问题类别, categories.yaml); absent or other: routing classifies the text."))
    township: Code = Field(description="Code of the township (乡镇) the case belongs to.")
    village: Code | None = Field(None, description="Code of the village (村), when known.")
    people_count: int = Field(1, description="How many people came or signed (人数); 5 or more makes it collective.")
    accused_units: list[Code] = Field([], description="Units the case accuses (被反映单位): routing never gives it to them.")
    accuses_unit: bool | None = Field(None, description=(
        "The clerk's answer to 'does the case accuse a unit?' (检举控告): true, it accuses the units in accused_units "
        "or, failing them, those the text names; false, it accuses none (a unit the text names is a place or the "
        "one the resident turned to); absent or null, not asked: routing reads the text, and sends a case that "
        "names a unit with an accusation word but no conduct word to a clerk (triage accusation_unclear)."))
    resident: ResidentRef = Field(description="The resident (信访人): name, masked ID number and its keyed hash, phone.")
    collective: bool = Field(False, description="Collective petition (集体访): people_count is 5 or more.")
    escalated: bool = Field(False, description="Skipped a level (越级访), as the clerk recorded it.")
    backlog: bool = Field(False, description="Long-standing case (积案), as the clerk recorded it.")
    repeat: bool = Field(False, description=(
        "Repeat petition (重复访): the same resident filed a similar title within the repeat window."))
    repeat_of: str | None = Field(None, description="The most recent earlier case this one repeats.")
    special_period: bool = Field(False, description="Filed in a special-period screening drive (敏感节点专项排查).")
    drive_id: Code | None = Field(None, description="The screening drive (排查) it came from (channel screening).")
    visit_id: str | None = Field(None, description="The night visit (夜访) it came from (channel night_visit).")
    delegation: Delegation | None = Field(None, description="The agent and service (channel delegated, 代办).")
    referral: Referral | None = Field(None, description="The higher office's document (channel referral, 上级交办).")
    # Keyed hash of the resident's query code: supervision checks a progress lookup against it.
    query_code_hash: str | None = Field(None, description=(
        "Keyed hash of the resident's query code (查询码): supervision checks a progress lookup against it."))


class PetitionerFeedback(CaseEvent):
    """信访人评价: satisfied or not with the reply."""

    subject_template: ClassVar[str] = subjects.FEEDBACK
    published_by: ClassVar[str] = "intake"
    type: Literal["PetitionerFeedback"] = Field("PetitionerFeedback", description=_TYPE)
    satisfied: bool = Field(description="True: satisfied with the reply (满意); false: not satisfied (不满意).")
    comment: str = Field("", description="The resident's comment, if any.")


class ReviewRequested(CaseEvent):
    """复查 (review) or 复核 (re-review) requested by the resident."""

    subject_template: ClassVar[str] = subjects.REVIEW_REQUESTED
    published_by: ClassVar[str] = "intake"
    type: Literal["ReviewRequested"] = Field("ReviewRequested", description=_TYPE)
    level: Literal["review", "re_review"] = Field(description="review (复查) first, then re_review (复核).")
    reason: str = Field(description="Why the resident asks for it.")


class DriveOpened(Event):
    """矛盾纠纷排查: a screening drive was opened."""

    subject_template: ClassVar[str] = subjects.DRIVE_OPENED
    published_by: ClassVar[str] = "intake"
    type: Literal["DriveOpened"] = Field("DriveOpened", description=_TYPE)
    drive_id: Code = Field(description="The drive's id, e.g. D2026-001.")
    kind: Literal["quarterly", "special"] = Field(description=(
        "quarterly (季度排查) or special (专项排查, before holidays and sensitive dates)."))
    name: str = Field(description="The drive's name, e.g. 2026年国庆节前矛盾纠纷专项排查.")
    starts_on: date = Field(description="Its first day (county date).")
    ends_on: date = Field(description="Its last day (county date).")


class DriveClosed(Event):
    """排查结束: a screening drive was closed."""

    subject_template: ClassVar[str] = subjects.DRIVE_CLOSED
    published_by: ClassVar[str] = "intake"
    type: Literal["DriveClosed"] = Field("DriveClosed", description=_TYPE)
    drive_id: Code = Field(description="The drive's id, e.g. D2026-001.")


class NightVisitLogged(Event):
    """驻村夜访: a cadre's night visit; each problem collected became a case with this visit_id.

    Not in DESIGN §3's table: scoring needs the households visited, which no case event carries.
    """

    subject_template: ClassVar[str] = subjects.VISIT_LOGGED
    published_by: ClassVar[str] = "intake"
    type: Literal["NightVisitLogged"] = Field("NightVisitLogged", description=_TYPE)
    visit_id: str = Field(description="The visit's id, e.g. NV2026-00001.")
    cadre_unit: Code = Field(description="The unit of the cadre who visited (驻村干部所在单位).")
    township: Code = Field(description="The township visited.")
    village: Code | None = Field(None, description="The village visited, when recorded.")
    visited_on: date = Field(description="The day of the visit (county date).")
    households_visited: int = Field(description="Households visited (走访户数).")
    case_ids: list[str] = Field(description="The cases made of the problems collected, one per problem.")
    cadre_kind: Literal["township_leader", "station_staff"] | None = Field(None, description=(
        "Who visited: a township leader (乡镇领导) or station staff (驻站人员); null when not recorded."))
    visit_format: Literal["one_to_one", "group"] | None = Field(None, description=(
        "How: one household at a time (一对一走访) or households together (多户座谈); null when not recorded."))
    solved_on_spot: int = Field(0, description="Problems raised and solved on the spot (当场解决), no case made.")
    suggestions: int = Field(0, description="Suggestions collected (收集意见建议).")


class CaseBrief(BaseModel):
    """The case as the unit handling it receives it (DESIGN §9): what its role needs. Never the ID
    number or its hash; the lead unit gets the masked ID and the phone, a co-handling unit neither,
    unless the routing rule says ``co_sees_contact``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    title: str = Field(description="The case's short description (事由).")
    content: str = Field(description="What the resident asks for or reports (信访内容).")
    channel: Channel = Field(description=(
        "How the case came in: walk_in (来访), letter (来信), phone (来电), online (网上信访), delegated (代办), night_visit "
        "(驻村夜访), screening (矛盾纠纷排查) or referral (上级交办)."))
    received_at: AwareDatetime = Field(description="When the case was received (受理时间).")
    township: Code = Field(description="Code of the case's township (乡镇).")
    village: Code | None = Field(None, description="Code of the case's village (村), when known.")
    people_count: int = Field(1, description="How many people came or signed (人数).")
    resident_name: str = Field(description="The resident's name (信访人姓名).")
    resident_masked_id: str | None = Field(None, description=(
        "The resident's ID number, masked; for the lead unit (主办), and for a co-handling unit (协办) only when "
        "its routing rule says co_sees_contact."))
    resident_phone: str | None = Field(None, description=(
        "The resident's phone, to contact them; for the lead unit (主办), and for a co-handling unit (协办) only "
        "when its routing rule says co_sees_contact."))
    collective: bool = Field(False, description="Collective petition (集体访): people_count is 5 or more.")
    escalated: bool = Field(False, description="Skipped a level (越级访), as the clerk recorded it.")
    backlog: bool = Field(False, description="Long-standing case (积案), as the clerk recorded it.")
    repeat_of: str | None = Field(None, description="The earlier case this one repeats (重复访), if any.")
    special_period: bool = Field(False, description="Filed in a special-period screening drive (敏感节点专项排查).")
    service_type: Code | None = Field(None, description=(
        "A delegated case (代办): the agent's service type, whose promised time limit (承诺时限) follows the case."))
    referral_doc_no: str | None = Field(None, description="A referral (上级交办): the higher office's document number.")

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

    def for_role(self, role: str, *, co_sees_contact: bool = False) -> CaseBrief:
        """What a unit of ``role`` receives: a co-handling unit gets no phone and no masked ID unless
        its rule says ``co_sees_contact``."""
        if role == "lead" or co_sees_contact:
            return self
        return self.model_copy(update={"resident_masked_id": None, "resident_phone": None})


# --- routing ------------------------------------------------------------------------------------

class CaseAssigned(UnitCaseEvent):
    """交办: the case is given to a unit as lead (主办) or co-handling (协办) unit."""

    subject_template: ClassVar[str] = subjects.ASSIGNED
    published_by: ClassVar[str] = "routing"
    type: Literal["CaseAssigned"] = Field("CaseAssigned", description=_TYPE)
    role: Literal["lead", "co", "reviewer"] = Field(description=(
        "The unit's role: lead (主办), co (协办, co-handling) or reviewer (复查/复核机关: the body that answers a "
        "review or re-review, one level above the unit whose opinion is reviewed)."))
    review_level: Literal["review", "re_review"] | None = Field(None, description=(
        "reviewer only: the level it answers, review (复查) or re_review (复核)."))
    case: CaseBrief = Field(description="The case as the unit needs it: no ID hash, the ID number masked.")
    rule_id: str | None = Field(None, description=(
        "The routing rule that fired (routing.yaml), repeat (the unit that led the earlier case), or triage (a "
        "clerk's decision)."))
    category: Code | None = Field(None, description="The category (问题类别) the case was routed under.")
    category_suggested: bool = Field(False, description=(
        "True when the classifier chose the category (with confidence)."))
    confidence: float | None = Field(None, description=(
        "The classifier's confidence (the winning category's share of keyword hits, 0 to 1), when it chose."))
    note: str = Field("", description=(
        "Why this unit, in words, when the rule alone does not say (e.g. a repeat petition, an accused unit "
        "passed over, a clerk's reason)."))


class CaseNeedsTriage(CaseEvent):
    """No rule matched, the classifier was unsure, or the case came back twice: a clerk decides."""

    subject_template: ClassVar[str] = subjects.TRIAGE
    published_by: ClassVar[str] = "routing"
    type: Literal["CaseNeedsTriage"] = Field("CaseNeedsTriage", description=_TYPE)
    reason: Literal["category_unclear", "no_rule", "returned_twice", "accusation_unclear"] = Field(description=(
        "category_unclear: the classifier was unsure; no_rule: no rule names a unit that may take it; "
        "returned_twice: units returned it (退回) too often; accusation_unclear: the text names a unit with an "
        "accusation word (举报, 投诉, 反映…) but no conduct word, or names the unit that would be given it with a "
        "word that hints at an accusation (亲戚, 私下…), and the clerk did not say whether it accuses it."))
    detail: str = Field("", description="More detail, in words.")
    returned_by: list[Code] = Field([], description="The units that returned it (退回).")
    suggested_category: Code | None = Field(None, description="The classifier's best guess, if any.")
    confidence: float | None = Field(None, description="The classifier's confidence in that guess, 0 to 1.")


class LeaderAssigned(CaseEvent):
    """领导包案: a county leader is made responsible for an important case."""

    subject_template: ClassVar[str] = subjects.LEADER_ASSIGNED
    published_by: ClassVar[str] = "routing"
    type: Literal["LeaderAssigned"] = Field("LeaderAssigned", description=_TYPE)
    leader_id: Code = Field(description="The county leader made responsible (包案领导, leaders.yaml).")
    reasons: list[Literal["backlog", "collective", "escalated", "repeat", "special_period"]] = Field(description=(
        "Why the case is important: backlog (积案), collective (集体访), escalated (越级访), repeat (重复访), special_period"
        " (敏感期排查)."))
    assigned_by: Literal["portfolio", "load", "bureau"] | None = Field(None, description=(
        "How the leader was chosen: portfolio, the leader in charge (分管, leaders.yaml) of the case's lead unit or "
        "category with the fewest open important cases; load, no portfolio covers the case, the leader with the "
        "fewest; bureau, named by the bureau by hand (actor: the supervisor), replacing another. Absent in "
        "older events: by load."))
    note: str = Field("", description="Why this leader, in words: the bureau's reason when it named the leader.")
    replaces: Code | None = Field(None, description="The leader this one replaces (the bureau's naming), if any.")


# --- departments --------------------------------------------------------------------------------

class UnitSigned(UnitCaseEvent):
    """签收."""

    subject_template: ClassVar[str] = subjects.SIGNED
    published_by: ClassVar[str] = "department"
    type: Literal["UnitSigned"] = Field("UnitSigned", description=_TYPE)


class CaseReturned(UnitCaseEvent):
    """异议 (退回申请): the unit objects that the case is not its own, with reasons, within 5 working
    days of its receipt (信访工作条例 Art. 23). The bureau decides (:class:`ObjectionDecided`); until it
    approves, the case stays with the unit and its clock keeps running."""

    subject_template: ClassVar[str] = subjects.RETURNED
    published_by: ClassVar[str] = "department"
    type: Literal["CaseReturned"] = Field("CaseReturned", description=_TYPE)
    reason: str = Field(description="Why the case is not the unit's own (异议理由).")


LegalPath = Literal["litigation", "arbitration", "administrative_review", "other_statutory"]
LEGAL_PATHS = {"litigation": "向人民法院提起诉讼", "arbitration": "申请仲裁", "administrative_review": "申请行政复议",
               "other_statutory": "通过其他法定途径"}


class AcceptanceDecided(UnitCaseEvent):
    """受理决定: the lead unit, having signed for the case, decides within 15 days of its own receipt
    whether to accept it (信访工作条例 Art. 23) and the resident is told in writing (受理告知书 /
    不予受理告知书). ``accepted`` starts the 60-day handling clock; ``not_accepted`` ends the case,
    naming the statutory path (导入法定途径) where the matter belongs to one; ``forwarded`` (not ours)
    is an objection (异议), as :class:`CaseReturned`."""

    subject_template: ClassVar[str] = subjects.ACCEPTANCE
    published_by: ClassVar[str] = "department"
    type: Literal["AcceptanceDecided"] = Field("AcceptanceDecided", description=_TYPE)
    decision: Literal["accepted", "not_accepted", "forwarded"] = Field(description=(
        "accepted (予以受理), not_accepted (不予受理: a reason is required) or forwarded (不属于本单位职责: an objection "
        "to the bureau, with the reason, within 5 working days of receipt)."))
    reason: str = Field("", max_length=2000, description=(
        "Why (受理/不予受理理由); required for not_accepted and forwarded."))
    legal_path: LegalPath | None = Field(None, description=(
        "not_accepted only: the statutory path the matter belongs to (导入法定途径) — litigation (诉讼), arbitration "
        "(仲裁), administrative_review (行政复议) or other_statutory."))


class ProgressReported(UnitCaseEvent):
    """办理进展: the unit reports progress on a case it holds."""

    subject_template: ClassVar[str] = subjects.PROGRESS
    published_by: ClassVar[str] = "department"
    type: Literal["ProgressReported"] = Field("ProgressReported", description=_TYPE)
    note: str = Field(description="The progress, in words (办理进展).")


class ExtensionRequested(UnitCaseEvent):
    """延期申请: at most one, of at most 30 days (checked by supervision against the policy)."""

    subject_template: ClassVar[str] = subjects.EXTENSION_REQUESTED
    published_by: ClassVar[str] = "department"
    type: Literal["ExtensionRequested"] = Field("ExtensionRequested", description=_TYPE)
    days: int = Field(ge=1, description="Days asked for (the policy allows at most 30).")
    reason: str = Field(description="Why more time is needed (延期理由).")


class CaseReplied(UnitCaseEvent):
    """处理意见书: the written handling opinion (答复), by the lead unit; the case counts as 办结 when it
    is issued. In a review (复查) or re-review (复核) it is the reviewing body's opinion (复查/复核意见),
    with ``review_outcome``; a re-review's opinion is final."""

    subject_template: ClassVar[str] = subjects.REPLIED
    published_by: ClassVar[str] = "department"
    type: Literal["CaseReplied"] = Field("CaseReplied", description=_TYPE)
    result: Literal["resolved", "mediated", "partly_resolved", "not_supported", "explained"] = Field(description=(
        "resolved (已解决), mediated (达成调解协议), partly_resolved (部分解决), not_supported (不予支持) or "
        "explained (解释说明)."))
    text: str = Field(description="The reply to the resident (答复意见).")
    review_outcome: Literal["upheld", "changed", "revoked"] | None = Field(None, description=(
        "A reviewing body's opinion only: upheld (维持), changed (变更) or revoked (撤销) the opinion reviewed."))


# --- supervision --------------------------------------------------------------------------------

class ExtensionDecided(UnitCaseEvent):
    """延期审批 by the lead unit's own head (本机关负责人, 信访工作条例 Art. 34): at most 30 days; the
    resident is told the new date and why (延期告知书). Published by the unit itself, or by supervision
    when the head decides through its API."""

    subject_template: ClassVar[str] = subjects.EXTENSION_DECIDED
    published_by: ClassVar[str] = "department"
    relayed_by: ClassVar[tuple[str, ...]] = ("supervision",)
    type: Literal["ExtensionDecided"] = Field("ExtensionDecided", description=_TYPE)
    approved: bool = Field(description="True: the extension is approved (同意延期).")
    days: int = Field(0, description="Days granted (0 when refused).")
    reason: str = Field("", description="Why, in words (above all when refused).")
    new_due_at: AwareDatetime | None = Field(None, description="The new reply due date, when approved.")
    approved_by: str = Field("", max_length=200, description=(
        "The unit's head who decided (本机关负责人), e.g. 局长 or a staff id; never a resident."))


class ObjectionDecided(UnitCaseEvent):
    """异议审核: the bureau (supervision office) approved or rejected a unit's objection. Approved: routing
    routes the case again without the unit (it keeps its history). Rejected: the case stays with the
    unit and its clock keeps running."""

    subject_template: ClassVar[str] = subjects.OBJECTION_DECIDED
    published_by: ClassVar[str] = "supervision"
    type: Literal["ObjectionDecided"] = Field("ObjectionDecided", description=_TYPE)
    approved: bool = Field(description="True: the objection is upheld and the case is routed again (同意退回).")
    reason: str = Field("", max_length=2000, description="Why, in words (above all when rejected).")
    objection_event_id: str | None = Field(None, description="event_id of the objection decided.")


class CaseReminded(UnitCaseEvent):
    """催办: a due date is near."""

    subject_template: ClassVar[str] = subjects.REMINDED
    published_by: ClassVar[str] = "supervision"
    type: Literal["CaseReminded"] = Field("CaseReminded", description=_TYPE)
    due_kind: DueKind = Field(description=(
        "Which due date: accept (受理), sign (签收), reply (办理回报), review (复查), re_review (复核) or agent (代办承诺时限)."))
    due_at: AwareDatetime = Field(description="The due date: the end of the due day, county time.")


class CaseOverdue(UnitCaseEvent):
    """超期."""

    subject_template: ClassVar[str] = subjects.OVERDUE
    published_by: ClassVar[str] = "supervision"
    type: Literal["CaseOverdue"] = Field("CaseOverdue", description=_TYPE)
    due_kind: DueKind = Field(description=(
        "Which due date: accept (受理), sign (签收), reply (办理回报), review (复查), re_review (复核) or agent (代办承诺时限)."))
    due_at: AwareDatetime = Field(description="The due date: the end of the due day, county time.")


class CaseEscalated(UnitCaseEvent):
    """Overdue past the grace period: the lead leader and the supervision office are told."""

    subject_template: ClassVar[str] = subjects.ESCALATED
    published_by: ClassVar[str] = "supervision"
    type: Literal["CaseEscalated"] = Field("CaseEscalated", description=_TYPE)
    due_kind: DueKind = Field(description=(
        "Which due date: accept (受理), sign (签收), reply (办理回报), review (复查), re_review (复核) or agent (代办承诺时限)."))
    due_at: AwareDatetime = Field(description="The due date: the end of the due day, county time.")
    leader_id: Code | None = Field(None, description="The case's lead leader (包案领导) who is told, if it has one.")


class CaseClosed(CaseEvent):
    """办结."""

    subject_template: ClassVar[str] = subjects.CLOSED
    published_by: ClassVar[str] = "supervision"
    type: Literal["CaseClosed"] = Field("CaseClosed", description=_TYPE)
    reason: Literal["satisfied", "no_feedback", "review_upheld", "withdrawn", "not_accepted", "no_review",
                    "re_reviewed"] = Field(description=(
        "satisfied: the resident is satisfied (满意); no_feedback: no feedback within the feedback period; "
        "review_upheld: a review (复查/复核) upheld the reply; withdrawn: the resident withdrew; not_accepted: the "
        "unit did not accept it (不予受理); no_review: the resident was not satisfied and asked for no review within "
        "the time limit (处理意见 final); re_reviewed: the re-review's opinion (复核意见) is final."))


class CaseArchived(CaseEvent):
    """归档: a closed case is archived."""

    subject_template: ClassVar[str] = subjects.ARCHIVED
    published_by: ClassVar[str] = "supervision"
    type: Literal["CaseArchived"] = Field("CaseArchived", description=_TYPE)


class SupervisionNoticeIssued(Event):
    """督办通知 (numbered per year and notice type, 〔2026〕3号) and 交办通知 (numbered per issuing office
    and year with its prefix, 青信联办发〔2026〕1号)."""

    subject_template: ClassVar[str] = subjects.NOTICE_ISSUED
    published_by: ClassVar[str] = "supervision"
    type: Literal["SupervisionNoticeIssued"] = Field("SupervisionNoticeIssued", description=_TYPE)
    notice_no: str = Field(description="The notice number (文号), e.g. 〔2026〕3号.")
    notice_type: Code = Field(description=(
        "overdue (超期督办通知), reminder (催办通知) or important (重要信访件督办通知), numbered per year and type; or "
        "assignment (领导包案交办通知), numbered per issuing office and year with the office's prefix "
        "(青信联办发〔2026〕1号)."))
    year: int = Field(description="The year of the numbering.")
    seq: int = Field(description="Its number within the year and type.")
    units: list[Code] = Field(description="The units it is addressed to.")
    case_ids: list[str] = Field(description="The cases it lists.")
    demands: str = Field(description="What the units are told to do (督办要求).")
    reply_by: date = Field(description="The day by which the units must reply (county date).")


class MeetingDecision(BaseModel):
    """One decision of a joint meeting: what, by which unit, by when (supervision tracks it like a due date)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    n: int = Field(ge=1, description="Its number in the minutes (1, 2, …).")
    text: str = Field(min_length=1, max_length=2000, description="What was decided (议定事项).")
    unit: Code = Field(description="The unit responsible (责任单位).")
    due_on: date = Field(description="The day it must be done by (county date).")


class JointMeetingHeld(Event):
    """联席会议: convened for a prominent problem or a mass incident; the units present, the cases
    discussed and the decisions, each with its responsible unit and deadline."""

    subject_template: ClassVar[str] = subjects.MEETING_HELD
    published_by: ClassVar[str] = "supervision"
    type: Literal["JointMeetingHeld"] = Field("JointMeetingHeld", description=_TYPE)
    meeting_id: str = Field(description="The meeting's id, e.g. JM-2026-3.")
    meeting_no: str = Field(description="Its number in the year, as the minutes give it: 2026年第3次.")
    held_on: date = Field(description="The day it was held (county date).")
    kind: Literal["prominent_problem", "mass_incident"] = Field(description=(
        "prominent_problem (突出问题) or mass_incident (群体性事件)."))
    topic: str = Field(description="What it was convened for (议题).")
    units: list[Code] = Field(description="The units that took part (参会单位).")
    case_ids: list[str] = Field(description="The cases discussed.")
    decisions: list[MeetingDecision] = Field(description="The decisions (议定事项).")


# --- scoring ------------------------------------------------------------------------------------

class UnitScore(BaseModel):
    """One unit's result in a period's scorecards (考核)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    unit: Code = Field(description="The unit's code.")
    score: float = Field(description="Its score: from the base (100), minus the deductions of scoring.yaml.")
    rank: int = Field(description="Its rank among townships or among departments (equal scores share a rank).")


class ScorecardsPublished(Event):
    """考核结果发布: a period is closed and its figures frozen."""

    subject_template: ClassVar[str] = subjects.PERIOD_CLOSED
    published_by: ClassVar[str] = "scoring"
    type: Literal["ScorecardsPublished"] = Field("ScorecardsPublished", description=_TYPE)
    period: str = Field(description="The period closed: 2026, 2026-Q3, 2026-05 or 2026-01-01..2026-03-31.")
    scores: list[UnitScore] = Field(description="Each unit's score and rank, frozen.")


# --- told to one unit alone ------------------------------------------------------------------------

class EventRefused(Event):
    """What became of a unit's event that was not applied: refused where it falls in the case's
    lifecycle, or dead-lettered (undecodable, forged, failing). Published to that unit alone, on
    ``cases.refused.<unit>``, so a department's developer learns of a mistake without a clerk.
    """

    subject_template: ClassVar[str] = subjects.REFUSED
    published_by: ClassVar[str] = "routing, supervision, and any consumer that dead-letters"
    type: Literal["EventRefused"] = Field("EventRefused", description=_TYPE)
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
    type: Literal["UnitNotified"] = Field("UnitNotified", description=_TYPE)
    role: Literal["lead", "co", "reviewer"] = Field(description=(
        "The unit's role in the case: lead (主办), co-handling (协办) or reviewer (复查/复核机关)."))
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
    role: Literal["lead", "co", "reviewer"] | None = Field(None, description="The unit's role, when assigned.")
    error: Literal["unknown_case", "not_assigned", "malformed"] | None = Field(None, description=(
        "Why not, when not assigned: unknown_case — routing has no such case (a typo, or not routed yet); "
        "not_assigned — the case is another unit's; malformed — the request was not {\"case_id\": \"...\"}."))
    reason: str | None = Field(None, description="The same, in words.")


class TimelineQuery(BaseModel):
    """Request on ``timeline.<unit>``: the timeline of a case my unit holds or held."""

    model_config = ConfigDict(extra="ignore")
    case_id: str = Field(min_length=1, max_length=32, description="The case number.")


class TimelineEntry(BaseModel):
    """One event on a case's timeline, as supervision applied or refused it."""

    at: AwareDatetime = Field(description="occurred_at, as its publisher stated it.")
    placed_at: AwareDatetime = Field(description="When it counts as having happened (a department's event stamped "
                                                 "a little before the bus received it counts at the receipt).")
    event: str = Field(description="The event type.")
    event_id: str = Field(description="The event's event_id.")
    unit: str | None = Field(None, description="The unit it concerns, if any.")
    actor: dict | None = Field(None, description="Who caused it.")
    status: Literal["pending", "applied", "refused"] = Field(description=(
        "applied; refused (it makes no sense where it falls: see reason); pending (the case is not received yet)."))
    reason: str | None = Field(None, description="Why it was refused.")


class TimelineAnswer(BaseModel):
    """Supervision's reply to a :class:`TimelineQuery`."""

    case_id: str | None = Field(None, description="The case asked about (absent when the request was malformed).")
    unit: Code = Field(description="The unit that asked (the last token of the request subject).")
    found: bool = Field(description="False when the unit never held the case (or there is no such case).")
    error: Literal["not_found", "malformed"] | None = Field(None, description=(
        "Why nothing was found: not_found — the unit never held the case, or there is no such case; malformed — "
        "the request was not {\"case_id\": \"...\"}."))
    reason: str | None = Field(None, description="The same, in words.")
    timeline: list[TimelineEntry] = Field([], description="Every event of the case, in the order it counts.")


class ResidentStepQuery(BaseModel):
    """Request on ``resident_step.intake``: may the resident take this step on the case now? Intake
    asks before it records feedback or a review request, so a step asked too early or after the
    matter is final is refused at once and the resident's right is not used up."""

    model_config = ConfigDict(extra="ignore")
    case_id: str = Field(min_length=1, max_length=32, description="The case number.")
    step: Literal["feedback", "review", "re_review"] = Field(description=(
        "feedback (评价 of the latest opinion), review (复查) or re_review (复核)."))


class ResidentStepAnswer(BaseModel):
    """Supervision's reply to a :class:`ResidentStepQuery`, from the case's lifecycle (the same fold
    that would apply or refuse the event)."""

    case_id: str | None = Field(None, description="The case asked about (absent when the request was malformed).")
    known: bool = Field(description="False when supervision has not received the case (yet).")
    allowed: bool = Field(description="True when the step fits the case now.")
    reason: str = Field("", description="Why not, in words.")
    state: str | None = Field(None, description="The case's state (assigned, accepted, replied, closed…).")


EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        CaseReceived, PetitionerFeedback, ReviewRequested, DriveOpened, DriveClosed, NightVisitLogged,
        CaseAssigned, CaseNeedsTriage, LeaderAssigned,
        UnitSigned, CaseReturned, AcceptanceDecided, ProgressReported, ExtensionRequested, CaseReplied,
        ExtensionDecided, ObjectionDecided, CaseReminded, CaseOverdue, CaseEscalated, CaseClosed, CaseArchived,
        SupervisionNoticeIssued, JointMeetingHeld, ScorecardsPublished, EventRefused, UnitNotified,
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


def entry_for(table: Mapping[type[Event], T], event: Event) -> T | None:
    """A handler table's entry for ``event``: its own type's, else the nearest base type's (so a
    newer version of an event, or a table keyed by a base such as ``CaseEvent``, finds its entry)."""
    for cls in type(event).__mro__:
        if cls in table:
            return table[cls]
    return None


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
        step = UPCASTERS.get((raw["type"], version))
        if step is None:
            raise UndecodableEvent(f"{raw['type']}: no upcaster from schema_version {version}")
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
