"""A case's lifecycle as a fold over its events, in plain Python.

The state is recomputed from all of a case's events in the order they happened (``occurred_at``),
so events that arrive out of order across subjects end in the same state as ordered ones. An event
that makes no sense where it falls (a reply before the sign-for, a second close) is refused with a
reason and changes nothing.

received → assigned → signed → in_progress → replied → closed → archived, with returned → assigned,
triage → assigned, extension requested → decided, review requested → reopened → replied again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared import events as ev
from shared.policy import DeadlinePolicy

OPEN_STATES = {"received", "assigned", "triage", "returned", "signed", "in_progress", "replied", "reopened"}
FINAL_STATES = {"closed", "archived"}
# Events produced by supervision itself also sit on the timeline; these only record.
NOTES = (ev.CaseReminded, ev.CaseOverdue, ev.CaseEscalated, ev.LeaderAssigned, ev.ProgressReported)


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
    state: str = "new"
    lead: str | None = None
    co: set[str] = field(default_factory=set)
    leader: str | None = None
    received_at: datetime | None = None
    service_type: str | None = None
    signed_at: datetime | None = None
    replied_at: datetime | None = None
    closed_at: datetime | None = None
    satisfied: bool | None = None
    extension: str | None = None  # requested, approved, refused
    review_level: str | None = None
    dues: list[Due] = field(default_factory=list)

    def open_dues(self) -> list[Due]:
        return [d for d in self.dues if d.met_at is None] if self.state in OPEN_STATES else []

    def _meet(self, kinds: set[str], at: datetime) -> None:
        for d in self.dues:
            if d.kind in kinds and d.met_at is None:
                d.met_at = at


def fold(events: list[ev.Event], policy: DeadlinePolicy, agent_days: dict[str, int],
         placed: list[datetime] | None = None) -> tuple[CaseState, list[Verdict]]:
    """Apply events in the order they happened; a verdict per event, in the order given.

    ``placed`` is when each event counts as having happened (see :func:`placed_at`); by default its
    ``occurred_at``."""
    at = placed or [e.occurred_at for e in events]
    order = sorted(range(len(events)), key=lambda i: happened(at[i], events[i].type))
    state = CaseState()
    verdicts: list[Verdict | None] = [None] * len(events)
    for i in order:
        verdicts[i] = apply(state, events[i], at[i], policy, agent_days)
    return state, verdicts  # type: ignore[return-value]


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


# Same instant: the cause before its effect.
_RANK = {"CaseReceived": 0, "CaseAssigned": 10, "CaseNeedsTriage": 10, "UnitSigned": 20, "CaseReplied": 30,
         "PetitionerFeedback": 40, "CaseClosed": 45, "ReviewRequested": 46, "CaseArchived": 60}


def happened(occurred_at: datetime, event_type: str) -> tuple:
    """The order events happened in: time, then cause before effect."""
    return occurred_at, _RANK.get(event_type, 50)


def apply(s: CaseState, e: ev.Event, at: datetime, policy: DeadlinePolicy,  # noqa: C901
          agent_days: dict[str, int]) -> Verdict:
    if s.state == "new" and not isinstance(e, ev.CaseReceived):
        return Verdict(False, "the case has not been received")
    if isinstance(e, NOTES):
        if isinstance(e, ev.LeaderAssigned):
            s.leader = e.leader_id
        if isinstance(e, ev.ProgressReported) and s.state == "signed" and e.unit == s.lead:
            s.state = "in_progress"
        return Verdict(True)
    if isinstance(e, ev.CaseReceived):
        if s.state != "new":
            return Verdict(False, "received twice")
        s.state, s.received_at = "received", at
        s.dues.append(Due("accept", policy.due(at, policy.accept_days), None, "accept within the policy's days"))
        if e.delegation is not None and e.delegation.service_type in agent_days:
            s.service_type = e.delegation.service_type
            s.dues.append(Due("agent", policy.due(at, agent_days[s.service_type]), None,
                              f"delegated: {s.service_type}"))
        return Verdict(True)
    if s.state in FINAL_STATES and not isinstance(e, (ev.CaseArchived, ev.ReviewRequested)):
        return Verdict(False, f"the case is {s.state}")
    if isinstance(e, ev.CaseAssigned):
        if e.role == "co":
            s.co.add(e.unit)
            return Verdict(True)
        if s.state not in ("received", "assigned", "triage", "returned", "signed", "in_progress", "reopened"):
            return Verdict(False, f"cannot assign: the case is {s.state}")
        s.co.discard(e.unit)
        s.lead = e.unit
        if s.state in ("received", "triage", "returned", "assigned"):
            s.state = "assigned"
            s._meet({"sign"}, at)  # a new unit gets its own sign-for due date
            s.dues.append(Due("sign", policy.due(at, policy.sign_days), e.unit, f"assigned to {e.unit}"))
        for d in s.dues:  # the unit now responsible answers for what is due
            if d.met_at is None and d.kind != "sign":
                d.unit = e.unit
        return Verdict(True)
    if isinstance(e, ev.CaseNeedsTriage):
        if s.state not in ("received", "returned", "assigned"):
            return Verdict(False, f"cannot triage: the case is {s.state}")
        s.state, s.lead = "triage", None
        return Verdict(True)
    if isinstance(e, ev.UnitSigned):
        if e.unit in s.co:
            return Verdict(True)
        if e.unit != s.lead:
            return Verdict(False, f"{e.unit} does not hold the case")
        if s.state != "assigned":
            return Verdict(False, f"cannot sign: the case is {s.state}")
        s.state, s.signed_at = "signed", at
        s._meet({"sign", "accept"}, at)
        s.dues.append(Due("reply", policy.due(at, policy.reply_days), e.unit, "reply within the policy's days of acceptance"))
        return Verdict(True)
    if isinstance(e, ev.CaseReturned):
        if e.unit in s.co:
            s.co.discard(e.unit)
            return Verdict(True)
        if e.unit != s.lead or s.state not in ("assigned", "signed", "in_progress"):
            return Verdict(False, f"{e.unit} cannot return a case it does not hold")
        s.state, s.lead = "returned", None
        s._meet({"sign"}, at)
        s.dues = [d for d in s.dues if not (d.kind == "reply" and d.met_at is None)]
        return Verdict(True)
    if isinstance(e, ev.ExtensionRequested):
        if e.unit != s.lead or s.state not in ("signed", "in_progress"):
            return Verdict(False, "only the lead unit of a signed case may ask for an extension")
        if s.extension is not None:
            return Verdict(False, "one extension at most")
        if e.days > policy.max_extension_days:
            return Verdict(False, f"at most {policy.max_extension_days} days")
        s.extension = "requested"
        return Verdict(True)
    if isinstance(e, ev.ExtensionDecided):
        if s.extension != "requested":
            return Verdict(False, "no extension was requested")
        s.extension = "approved" if e.approved else "refused"
        if e.approved:
            for d in s.dues:
                if d.kind == "reply" and d.met_at is None:
                    d.due_at, d.source = d.due_at + timedelta(days=e.days), d.source + f", extended {e.days} days"
        return Verdict(True)
    if isinstance(e, ev.CaseReplied):
        if e.unit != s.lead:
            return Verdict(False, f"{e.unit} does not lead the case")
        if s.state not in ("signed", "in_progress", "reopened"):
            return Verdict(False, f"cannot reply: the case is {s.state}")
        s.state, s.replied_at, s.satisfied = "replied", at, None
        s._meet({"reply", "review", "re_review", "agent", "accept"}, at)
        return Verdict(True)
    if isinstance(e, ev.PetitionerFeedback):
        if s.state != "replied":
            return Verdict(False, "feedback before a reply")
        s.satisfied = e.satisfied
        return Verdict(True)
    if isinstance(e, ev.CaseClosed):
        if s.state != "replied":
            return Verdict(False, f"cannot close: the case is {s.state}")
        s.state, s.closed_at = "closed", at
        return Verdict(True)
    if isinstance(e, ev.CaseArchived):
        if s.state != "closed":
            return Verdict(False, f"cannot archive: the case is {s.state}")
        s.state = "archived"
        return Verdict(True)
    if isinstance(e, ev.ReviewRequested):
        if s.state not in ("replied", "closed") or s.replied_at is None:
            return Verdict(False, f"nothing to review: the case is {s.state}")
        if at > policy.due(s.replied_at, policy.review_request_days):
            return Verdict(False, "asked after the review window")
        if (e.level == "review") != (s.review_level is None):
            return Verdict(False, "复查 first, then 复核, each once")
        s.review_level, s.state, s.closed_at = e.level, "reopened", None
        s.dues.append(Due(e.level, policy.due(at, policy.review_days), s.lead, f"{e.level} requested"))
        return Verdict(True)
    return Verdict(True)  # events supervision only records


# event type → its transition (interim: the one apply(); to become one small function per event).
TRANSITIONS = dict.fromkeys((
    ev.CaseReceived, ev.CaseAssigned, ev.CaseNeedsTriage, ev.LeaderAssigned, ev.UnitSigned, ev.CaseReturned,
    ev.ProgressReported, ev.ExtensionRequested, ev.ExtensionDecided, ev.CaseReplied, ev.PetitionerFeedback,
    ev.ReviewRequested, ev.CaseReminded, ev.CaseOverdue, ev.CaseEscalated, ev.CaseClosed, ev.CaseArchived), apply)


def should_close(s: CaseState, now: datetime, policy: DeadlinePolicy) -> str | None:
    """办结: a reply and a satisfied resident, or no feedback within the window."""
    if s.state != "replied" or s.replied_at is None:
        return None
    if s.satisfied:
        return "satisfied"
    if s.satisfied is None and now >= policy.due(s.replied_at, policy.feedback_days):
        return "no_feedback"
    return None


def should_archive(s: CaseState, now: datetime, policy: DeadlinePolicy) -> bool:
    return s.state == "closed" and s.closed_at is not None and now >= policy.due(s.closed_at, policy.archive_days)


def alerts_due(s: CaseState, now: datetime, policy: DeadlinePolicy) -> list[tuple[str, Due]]:
    """(stage, due) for every reminder, overdue and escalation whose time has come."""
    out = []
    for d in s.open_dues():
        if now >= d.due_at - timedelta(days=policy.remind_before_days):
            out.append(("reminded", d))
        if now >= d.due_at:
            out.append(("overdue", d))
        if now >= d.due_at + timedelta(days=policy.escalate_after_days):
            out.append(("escalated", d))
    return out
