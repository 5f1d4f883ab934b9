"""A case's lifecycle as a fold over its events, in plain Python: one verdict on every event, the
same in every service that folds a case (supervision keeps the case's deadlines with it; scoring
counts only what it applied), so a figure never counts what the lifecycle refused.

The state is recomputed from all of a case's events in the order they happened (``occurred_at``),
so events that arrive out of order across subjects end in the same state as ordered ones. An event
that makes no sense where it falls (a reply before the sign-for, a second close) is refused with a
reason and changes nothing.

received → assigned → signed → accepted (受理) → in_progress → replied (处理意见书: 办结) → closed (final)
→ archived; or signed → not_accepted (不予受理) → closed. Side paths: an objection (异议) within 5
working days of the unit's receipt, decided by the bureau (approved: returned → assigned again);
triage → assigned; an extension requested before the due date and decided by the unit's own head;
a review (复查) and then a re-review (复核), each answered by the body one level up (the ``reviewer``
routing assigns), after which the matter is final. The articles behind each step are in the README,
"Procedure".

Each event type has one transition in :data:`TRANSITIONS`: a small function that checks the event
against the case and changes it, or refuses it with a reason. The guards common to all of them live
in :func:`apply`: nothing but the receipt counts before the case is received, and a closed or
archived case takes only its archiving, a review request and the notes.
"""
from __future__ import annotations

import enum
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime, timedelta
from typing import Any

from shared import events as ev
from shared.policy import DeadlinePolicy


class State(enum.StrEnum):
    """Where a case stands. The values are the strings stored in ``cases.state``; a member equals
    its string, so comparisons and stored rows read the same as before."""

    NEW = "new"  # supervision has not seen the receipt: the case's events wait for it
    RECEIVED = "received"  # 受理登记
    ASSIGNED = "assigned"  # 交办: waiting for the lead unit's 签收
    TRIAGE = "triage"  # 人工分流: a clerk decides who handles it
    RETURNED = "returned"  # 退回 by the lead unit: to be assigned again
    SIGNED = "signed"  # 签收: the lead unit has the case; its acceptance decision (受理) is due
    ACCEPTED = "accepted"  # 受理: the 60-day handling clock runs
    NOT_ACCEPTED = "not_accepted"  # 不予受理: the resident is told, and the case closes
    IN_PROGRESS = "in_progress"  # 办理中: the lead unit reported progress
    REPLIED = "replied"  # 处理意见书 issued (办结): satisfaction is recorded; a review may be asked for
    REOPENED = "reopened"  # 复查 / 复核 requested: the reviewing body's opinion is due
    CLOSED = "closed"  # 办结
    ARCHIVED = "archived"  # 归档


OPEN_STATES = frozenset({State.RECEIVED, State.ASSIGNED, State.TRIAGE, State.RETURNED, State.SIGNED,
                         State.ACCEPTED, State.NOT_ACCEPTED, State.IN_PROGRESS, State.REPLIED, State.REOPENED})
# Where the lead unit handles the case (before its opinion).
HANDLING = frozenset({State.SIGNED, State.ACCEPTED, State.IN_PROGRESS})
FINAL_STATES = frozenset({State.CLOSED, State.ARCHIVED})


@dataclass
class Due:
    """One due date and where it comes from; ``met_at`` once the unit did what was due."""

    kind: str  # accept, sign, reply, review, re_review, agent
    due_at: datetime
    unit: str | None
    source: str
    met_at: datetime | None = None


@dataclass
class Verdict:
    applied: bool
    reason: str = ""


@dataclass
class CaseState:
    state: State = State.NEW
    lead: str | None = None
    co: set[str] = field(default_factory=set)
    leader: str | None = None
    received_at: datetime | None = None
    service_type: str | None = None
    signed_at: datetime | None = None
    acceptance: str | None = None  # accepted, not_accepted (受理决定)
    decided_at: datetime | None = None  # when the acceptance was decided
    replied_at: datetime | None = None
    closed_at: datetime | None = None
    satisfied: bool | None = None
    extension: str | None = None  # requested, approved, refused
    review_level: str | None = None  # the latest review asked for: review (复查), re_review (复核)
    opinion_level: str | None = None  # whose opinion is the latest: None (the lead's), review, re_review
    received_by: dict[str, datetime] = field(default_factory=dict)  # unit → its own receipt (交办)
    objections: dict[str, datetime] = field(default_factory=dict)  # unit → its objection awaiting the bureau
    reviewers: dict[str, str] = field(default_factory=dict)  # review level → the body answering it
    dues: list[Due] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = State(self.state)  # a stored string becomes its member

    def open_dues(self) -> list[Due]:
        return [d for d in self.dues if d.met_at is None] if self.state in OPEN_STATES else []

    def meet(self, kinds: set[str], at: datetime) -> None:
        """Every open due date of these kinds is met at ``at``."""
        for d in self.dues:
            if d.kind in kinds and d.met_at is None:
                d.met_at = at

    def drop(self, kinds: set[str]) -> None:
        """Open due dates of these kinds no longer bind anyone (the unit is relieved of the case)."""
        self.dues = [d for d in self.dues if not (d.kind in kinds and d.met_at is None)]

    def open_due(self, kind: str) -> Due | None:
        return next((d for d in self.dues if d.kind == kind and d.met_at is None), None)

    @property
    def final(self) -> bool:
        """No further review is possible: not accepted, or the re-review's opinion given (Art. 36).
        (A closed case whose review window has passed is final too; that needs the time: see
        supervision's ``is_final``.)"""
        return self.acceptance == "not_accepted" or self.opinion_level == "re_review"


# --- a folded state as plain JSON (supervision keeps each case's fold with its row) ---------------

def state_to_dict(s: CaseState) -> dict:
    """Every field of the state as JSON values: times in ISO 8601, sets as sorted lists, dues as
    objects (``state_from_dict`` reads it back equal)."""
    return _encoder(CaseState)(s)


def state_from_dict(d: Mapping[str, Any]) -> CaseState:
    """The state ``state_to_dict`` wrote. A dict with other fields than :class:`CaseState` has (one
    written before a field was added) raises ValueError: the caller folds the case again instead."""
    if d.keys() != _STATE_FIELDS:
        raise ValueError(f"not a stored CaseState: fields {sorted(set(d) ^ _STATE_FIELDS)} differ")
    return _decoder(CaseState)(d)


# Each field's (de)coder follows from its type, once per type: a field added to CaseState or Due is
# kept with no change here.

@functools.cache
def _encoder(hint: Any) -> Callable[[Any], Any]:  # noqa: ANN401 - a type hint
    origin, args = typing.get_origin(hint), [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (types.UnionType, typing.Union):  # X | None
        inner = _encoder(args[0])
        return lambda v: None if v is None else inner(v)
    if origin in (set, frozenset):
        inner = _encoder(args[0])
        return lambda v: sorted(inner(x) for x in v)
    if origin is dict:
        inner = _encoder(args[1])
        return lambda v: {k: inner(x) for k, x in v.items()}
    if origin is list:
        inner = _encoder(args[0])
        return lambda v: [inner(x) for x in v]
    if hint is datetime:
        return datetime.isoformat
    if is_dataclass(hint):
        coders = [(f.name, _encoder(t)) for f, t in _typed_fields(hint)]
        return lambda v: {name: code(getattr(v, name)) for name, code in coders}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return lambda v: v.value
    return lambda v: v


@functools.cache
def _decoder(hint: Any) -> Callable[[Any], Any]:  # noqa: ANN401 - a type hint
    origin, args = typing.get_origin(hint), [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (types.UnionType, typing.Union):
        inner = _decoder(args[0])
        return lambda v: None if v is None else inner(v)
    if origin in (set, frozenset):
        inner = _decoder(args[0])
        return lambda v: origin(inner(x) for x in v)
    if origin is dict:
        inner = _decoder(args[1])
        return lambda v: {k: inner(x) for k, x in v.items()}
    if origin is list:
        inner = _decoder(args[0])
        return lambda v: [inner(x) for x in v]
    if hint is datetime:
        return datetime.fromisoformat
    if is_dataclass(hint):
        coders = [(f.name, _decoder(t)) for f, t in _typed_fields(hint)]
        return lambda v: hint(**{name: code(v[name]) for name, code in coders})
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    return lambda v: v


def _typed_fields(cls: type) -> list[tuple[Any, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in fields(cls)]


_STATE_FIELDS = frozenset(f.name for f in fields(CaseState))


@dataclass(frozen=True)
class Context:
    """What a transition needs besides the case and the event: the deadline policy, and the time
    limit in days of each delegated (代办) service type."""

    policy: DeadlinePolicy
    agent_days: Mapping[str, int]


# (state, event, at, ctx) → verdict; it changes the state only when it applies the event.
Transition = Callable[[CaseState, Any, datetime, Context], Verdict]


def fold(events: list[ev.Event], policy: DeadlinePolicy, agent_days: dict[str, int],
         placed: list[datetime] | None = None) -> tuple[CaseState, list[Verdict]]:
    """Apply events in the order they happened; a verdict per event, in the order given.

    ``placed`` is when each event counts as having happened (see :func:`placed_at`); by default its
    ``occurred_at``."""
    at = placed or [e.occurred_at for e in events]
    order = in_order(events, at)
    state = CaseState()
    verdicts: list[Verdict | None] = [None] * len(events)
    for i in order:
        verdicts[i] = apply(state, events[i], at[i], policy, agent_days)
    return state, verdicts  # type: ignore[return-value]


def in_order(events: list[ev.Event], placed: list[datetime]) -> list[int]:
    """The indexes of ``events`` in the order they happened (what :func:`fold` applies them in)."""
    return sorted(range(len(events)), key=lambda i: happened(placed[i], events[i].type))


def placed_at(event: ev.Event, received_at: datetime | None, tolerance: timedelta) -> datetime:
    """When an event counts as having happened on the case's timeline.

    A department's server clock may be a few minutes behind the bureau's: its sign-for, stamped
    before the assignment it answers, would be refused as "not assigned yet". So a department's
    event that the bus received no more than ``tolerance`` after its own ``occurred_at`` is placed
    at the bus's receipt time. Further behind (a unit that was offline), its own time stands; every
    other event is placed at its ``occurred_at``.
    """
    if event.published_by != "department" or received_at is None:
        return event.occurred_at
    return received_at if timedelta(0) < received_at - event.occurred_at <= tolerance else event.occurred_at


# Same instant: the cause before its effect. A return (退回) comes before the re-assignment or triage
# it causes, which routing stamps at the return's own time when its clock is not ahead.
_RANK = {"CaseReceived": 0, "CaseReturned": 4, "ObjectionDecided": 5, "CaseAssigned": 10, "CaseNeedsTriage": 10, "UnitSigned": 20,
         "AcceptanceDecided": 25, "CaseReplied": 30,
         "PetitionerFeedback": 40, "CaseClosed": 45, "ReviewRequested": 46, "CaseArchived": 60}


def happened(occurred_at: datetime, event_type: str) -> tuple:
    """The order events happened in: time, then cause before effect."""
    return occurred_at, _RANK.get(event_type, 50)


# Notes only record (LeaderAssigned names the leader; a first progress report starts the work): they
# count in any state once the case is received.
NOTES = (ev.CaseReminded, ev.CaseOverdue, ev.CaseEscalated, ev.LeaderAssigned, ev.ProgressReported)
# What a closed or archived case still takes, or refuses with a reason of its own.
AFTER_FINAL = (*NOTES, ev.CaseReceived, ev.CaseArchived, ev.ReviewRequested)


def apply(state: CaseState, event: ev.Event, at: datetime, policy: DeadlinePolicy,
          agent_days: Mapping[str, int]) -> Verdict:
    """One event on the case: the guards common to every event, then its transition. An event type
    without a transition is only recorded."""
    if state.state == State.NEW and not isinstance(event, ev.CaseReceived):
        return Verdict(False, "the case has not been received")
    if state.state in FINAL_STATES and not isinstance(event, AFTER_FINAL):
        return Verdict(False, f"the case is {state.state}")
    transition = ev.entry_for(TRANSITIONS, event)
    return transition(state, event, at, Context(policy, agent_days)) if transition else Verdict(True)


# --- the transitions, one per event type, in lifecycle order --------------------------------------

def received(s: CaseState, e: ev.CaseReceived, at: datetime, ctx: Context) -> Verdict:
    """受理登记: the case exists. A delegated case (代办) is to be answered within its service type's
    promised limit (in ``agent_calendar``: working days by default)."""
    if s.state != State.NEW:
        return Verdict(False, "received twice")
    s.state, s.received_at = State.RECEIVED, at
    if e.delegation is not None and e.delegation.service_type in ctx.agent_days:
        s.service_type = e.delegation.service_type
        s.dues.append(Due("agent", ctx.policy.due(at, ctx.agent_days[s.service_type],
                                                  calendar=ctx.policy.agent_calendar), None,
                          f"delegated: {s.service_type}"))
    return Verdict(True)


def assigned(s: CaseState, e: ev.CaseAssigned, at: datetime, ctx: Context) -> Verdict:
    """交办: a co-handling unit (协办) joins the case; a lead unit (主办) takes it over and answers for
    what is due; a reviewer (复查/复核机关) is named to answer a review. A lead given a case not yet
    signed for has its own sign-for (签收) and acceptance (受理, Art. 23: 15 days from its own receipt)
    due dates; one that takes over a signed case carries on where it stands."""
    if e.role == "reviewer":
        level = e.review_level or "review"
        s.reviewers[level] = e.unit
        for d in s.dues:
            if d.kind == level and d.met_at is None:
                d.unit = e.unit
        return Verdict(True)
    if e.role == "co":
        s.co.add(e.unit)
        s.received_by[e.unit] = at
        return Verdict(True)
    if s.state not in OPEN_STATES - {State.REPLIED, State.NOT_ACCEPTED}:
        return Verdict(False, f"cannot assign: the case is {s.state}")
    s.co.discard(e.unit)
    s.lead = e.unit
    s.received_by[e.unit] = at
    if s.state in (State.RECEIVED, State.TRIAGE, State.RETURNED, State.ASSIGNED):
        s.state = State.ASSIGNED
        s.drop({"sign", "accept"})  # a new unit gets its own
        s.dues.append(Due("sign", ctx.policy.due(at, ctx.policy.sign_days, calendar=ctx.policy.sign_calendar),
                          e.unit, f"assigned to {e.unit}"))
        s.dues.append(Due("accept", ctx.policy.due(at, ctx.policy.accept_days), e.unit,
                          "decide on acceptance within the policy's days of the unit's receipt (Art. 23)"))
    for d in s.dues:  # the unit now responsible answers for what is due
        if d.met_at is None and d.kind not in ("sign", "review", "re_review"):
            d.unit = e.unit
    return Verdict(True)


def triaged(s: CaseState, e: ev.CaseNeedsTriage, at: datetime, ctx: Context) -> Verdict:
    """人工分流: no unit could be chosen (or the case came back too often); a clerk decides, and the
    case has no lead until then."""
    if s.state not in (State.RECEIVED, State.RETURNED, State.ASSIGNED):
        return Verdict(False, f"cannot triage: the case is {s.state}")
    s.state, s.lead = State.TRIAGE, None
    s.drop({"sign", "accept"})
    return Verdict(True)


def leader_assigned(s: CaseState, e: ev.LeaderAssigned, at: datetime, ctx: Context) -> Verdict:
    """领导包案: a county leader answers for the case (escalations go to them); a note, in any state."""
    s.leader = e.leader_id
    return Verdict(True)


def signed(s: CaseState, e: ev.UnitSigned, at: datetime, ctx: Context) -> Verdict:
    """签收: the lead unit has the case, which meets its sign-for due date. Until it records its
    acceptance decision, the handling opinion is due the policy's days after the sign-for; the
    decision restarts that clock (Art. 34: from acceptance). A co-handling unit's sign-for only
    records."""
    if e.unit in s.co:
        return Verdict(True)
    if e.unit != s.lead:
        return Verdict(False, f"{e.unit} does not hold the case")
    if s.state != State.ASSIGNED:
        return Verdict(False, f"cannot sign: the case is {s.state}")
    s.state, s.signed_at = State.SIGNED, at
    s.meet({"sign"}, at)
    s.dues.append(Due("reply", ctx.policy.due(at, ctx.policy.reply_days), e.unit,
                      "the handling opinion within the policy's days (from the sign-for until acceptance is decided)"))
    return Verdict(True)


def acceptance_decided(s: CaseState, e: ev.AcceptanceDecided, at: datetime, ctx: Context) -> Verdict:
    """受理决定 (Art. 23): the lead unit that signed for the case accepts it — the handling opinion is
    then due the policy's days from acceptance (Art. 34) — or does not (不予受理: the case closes), or
    says it is not its own (``forwarded``: an objection, as :func:`returned`)."""
    if e.decision == "forwarded":
        return objected(s, e, at, ctx)
    if e.unit != s.lead:
        return Verdict(False, f"{e.unit} does not lead the case")
    if s.acceptance is not None:
        return Verdict(False, f"the acceptance was decided already ({s.acceptance})")
    if s.state == State.ASSIGNED:
        return Verdict(False, "sign for the case first (签收), then decide on its acceptance")
    if s.state not in HANDLING:
        return Verdict(False, f"cannot decide on acceptance: the case is {s.state}")
    if e.decision == "not_accepted" and not e.reason.strip():
        return Verdict(False, "not_accepted needs a reason (不予受理理由), told to the resident in writing")
    s.acceptance, s.decided_at = e.decision, at
    s.meet({"accept"}, at)
    if e.decision == "not_accepted":
        s.state = State.NOT_ACCEPTED
        s.drop({"reply"})
        return Verdict(True)
    if s.state == State.SIGNED:
        s.state = State.ACCEPTED
    reply = s.open_due("reply")
    if reply is not None and s.extension != "approved":
        reply.due_at, reply.source = (ctx.policy.due(at, ctx.policy.reply_days),
                                      "the handling opinion within the policy's days of acceptance (Art. 34)")
    return Verdict(True)


def returned(s: CaseState, e: ev.CaseReturned, at: datetime, ctx: Context) -> Verdict:
    """异议 (Art. 23): the unit objects that the case is not its own."""
    return objected(s, e, at, ctx)


def objected(s: CaseState, e: ev.CaseReturned | ev.AcceptanceDecided, at: datetime, ctx: Context) -> Verdict:
    """异议: a lead or co-handling unit says the case is not its own, with reasons, within the
    objection days (5 working days, Art. 23) of its own receipt, and before it accepted the case.
    It goes to the bureau (:func:`objection_decided`); until then nothing else changes."""
    if e.unit != s.lead and e.unit not in s.co:
        return Verdict(False, f"{e.unit} cannot object to a case it does not hold")
    if e.unit == s.lead and (s.state not in {State.ASSIGNED} | HANDLING or s.acceptance is not None):
        return Verdict(False, f"cannot object: the case is {s.acceptance or s.state}")
    if not e.reason.strip():
        return Verdict(False, "an objection needs its reasons (异议理由)")
    if e.unit in s.objections:
        return Verdict(False, "an objection is already waiting for the bureau's decision")
    since = s.received_by.get(e.unit, s.received_at)
    limit = ctx.policy.due(since, ctx.policy.objection_days, calendar=ctx.policy.objection_calendar)
    if at > limit:
        return Verdict(False, f"objections are due within {ctx.policy.objection_days} "
                              f"{'working ' if ctx.policy.objection_calendar == 'working_days' else ''}days of "
                              f"receipt (Art. 23): the case stays with {e.unit}")
    s.objections[e.unit] = at
    return Verdict(True)


def objection_decided(s: CaseState, e: ev.ObjectionDecided, at: datetime, ctx: Context) -> Verdict:
    """异议审核 by the bureau: approved, the unit is relieved of the case (a lead's case is routed
    again, keeping its history, and its due dates go with it); rejected, the case stays and its
    clock keeps running."""
    if e.unit not in s.objections:
        return Verdict(False, f"no objection of {e.unit} is waiting")
    del s.objections[e.unit]
    if not e.approved:
        return Verdict(True)
    if e.unit in s.co:
        s.co.discard(e.unit)
    elif e.unit == s.lead and s.state in {State.ASSIGNED} | HANDLING:
        s.state, s.lead = State.RETURNED, None
        s.drop({"sign", "accept", "reply"})
    return Verdict(True)


def progress_reported(s: CaseState, e: ev.ProgressReported, at: datetime, ctx: Context) -> Verdict:
    """办理进展: a note; the lead unit's first report on a signed or accepted case puts it in progress
    (办理中)."""
    if s.state in (State.SIGNED, State.ACCEPTED) and e.unit == s.lead:
        s.state = State.IN_PROGRESS
    return Verdict(True)


def extension_requested(s: CaseState, e: ev.ExtensionRequested, at: datetime, ctx: Context) -> Verdict:
    """延期申请 (Art. 34): the lead unit, before the opinion is due, asks once for at most the policy's
    days more, with reasons."""
    if e.unit != s.lead or s.state not in HANDLING:
        return Verdict(False, "only the lead unit handling the case may ask for an extension")
    if s.extension is not None:
        return Verdict(False, "one extension at most")
    if e.days > ctx.policy.max_extension_days:
        return Verdict(False, f"at most {ctx.policy.max_extension_days} days")
    reply = s.open_due("reply")
    if reply is not None and at >= reply.due_at:
        return Verdict(False, "an extension is asked for before the due date (Art. 34)")
    s.extension = "requested"
    return Verdict(True)


def extension_decided(s: CaseState, e: ev.ExtensionDecided, at: datetime, ctx: Context) -> Verdict:
    """延期审批 by the lead unit's own head (本机关负责人, Art. 34): an approval moves the open reply due
    date by at most the policy's days, counted in the policy's mode."""
    if s.extension != "requested":
        return Verdict(False, "no extension was requested")
    if e.unit != s.lead:
        return Verdict(False, f"the head of the lead unit ({s.lead}) decides an extension, not {e.unit}")
    if e.approved and not 0 < e.days <= ctx.policy.max_extension_days:
        return Verdict(False, f"an extension is 1 to {ctx.policy.max_extension_days} days")
    s.extension = "approved" if e.approved else "refused"
    if e.approved:
        for d in s.dues:
            if d.kind == "reply" and d.met_at is None:
                d.due_at, d.source = ctx.policy.extended(d.due_at, e.days), d.source + f", extended {e.days} days"
    return Verdict(True)


def replied(s: CaseState, e: ev.CaseReplied, at: datetime, ctx: Context) -> Verdict:
    """处理意见书 (Art. 34): the lead unit's opinion on a case it handles — the case counts as 办结 —
    meets every due date but the sign-for's; or, on a reopened case, the reviewing body's opinion
    (复查/复核意见, Art. 35, 36). The resident's 评价 is awaited afresh."""
    if s.state == State.REOPENED:
        level = s.review_level or "review"
        reviewer = s.reviewers.get(level)
        if e.unit != reviewer:
            return Verdict(False, f"the {level} is answered by the body one level up "
                                  f"({reviewer or 'not named yet'}), not {e.unit}")
        s.opinion_level = level
    elif e.unit != s.lead:
        return Verdict(False, f"{e.unit} does not lead the case")
    elif s.state not in HANDLING:
        return Verdict(False, f"cannot reply: the case is {s.state}")
    else:
        s.opinion_level = None
    s.state, s.replied_at, s.satisfied = State.REPLIED, at, None
    s.meet({"reply", "review", "re_review", "agent", "accept"}, at)
    return Verdict(True)


def feedback(s: CaseState, e: ev.PetitionerFeedback, at: datetime, ctx: Context) -> Verdict:
    """信访人评价: satisfied or not with the opinion — a measure, not a gate (supervision's
    ``should_close`` decides what follows)."""
    if s.state != State.REPLIED:
        return Verdict(False, "feedback before a reply")
    s.satisfied = e.satisfied
    return Verdict(True)


def review_requested(s: CaseState, e: ev.ReviewRequested, at: datetime, ctx: Context) -> Verdict:
    """复查 (Art. 35), then 复核 (Art. 36), each once, asked within the window after the opinion: the
    case reopens (even a closed one) and the reviewing body's opinion is due. After the re-review
    the matter is final."""
    if s.final:
        return Verdict(False, "the matter is final: 复核意见 given or not accepted (Art. 36); not reviewed again")
    if s.state not in (State.REPLIED, State.CLOSED) or s.replied_at is None:
        return Verdict(False, f"nothing to review: the case is {s.state}")
    if at > ctx.policy.due(s.replied_at, ctx.policy.review_request_days):
        return Verdict(False, "asked after the review window")
    if (e.level == "review") != (s.review_level is None):
        return Verdict(False, "复查 first, then 复核, each once")
    s.review_level, s.state, s.closed_at = e.level, State.REOPENED, None
    s.dues.append(Due(e.level, ctx.policy.due(at, ctx.policy.review_days), s.reviewers.get(e.level),
                      f"{e.level} requested"))
    return Verdict(True)


def noted(s: CaseState, e: ev.CaseEvent, at: datetime, ctx: Context) -> Verdict:
    """催办 (reminded), 超期 (overdue), 升级督办 (escalated): supervision's own alerts only record."""
    return Verdict(True)


def closed(s: CaseState, e: ev.CaseClosed, at: datetime, ctx: Context) -> Verdict:
    """办结 and final: an opinion given (the resident satisfied, no feedback, no review within the time
    limit, or the re-review's opinion), or the case not accepted."""
    if s.state not in (State.REPLIED, State.NOT_ACCEPTED):
        return Verdict(False, f"cannot close: the case is {s.state}")
    s.state, s.closed_at = State.CLOSED, at
    return Verdict(True)


def archived(s: CaseState, e: ev.CaseArchived, at: datetime, ctx: Context) -> Verdict:
    """归档: a closed case, some time after it closed."""
    if s.state != State.CLOSED:
        return Verdict(False, f"cannot archive: the case is {s.state}")
    s.state = State.ARCHIVED
    return Verdict(True)


# Event type → its transition. Its keys are what scoring's consumer subscribes to; less supervision's
# own events (on its timeline the moment it decides them), what supervision's consumer does.
TRANSITIONS: dict[type[ev.Event], Transition] = {
    ev.CaseReceived: received,
    ev.CaseAssigned: assigned,
    ev.CaseNeedsTriage: triaged,
    ev.LeaderAssigned: leader_assigned,
    ev.UnitSigned: signed,
    ev.CaseReturned: returned,
    ev.AcceptanceDecided: acceptance_decided,
    ev.ObjectionDecided: objection_decided,
    ev.ProgressReported: progress_reported,
    ev.ExtensionRequested: extension_requested,
    ev.ExtensionDecided: extension_decided,
    ev.CaseReplied: replied,
    ev.PetitionerFeedback: feedback,
    ev.ReviewRequested: review_requested,
    ev.CaseReminded: noted,
    ev.CaseOverdue: noted,
    ev.CaseEscalated: noted,
    ev.CaseClosed: closed,
    ev.CaseArchived: archived,
}
