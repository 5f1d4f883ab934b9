"""Supervision's own rules over a case's lifecycle, in plain Python: when a replied case closes,
when a closed one is archived, which reminders, overdue and escalations are due.

The lifecycle itself (the states, the due dates, :func:`fold` and its transitions) lives in
``shared/lifecycle.py``, since scoring folds every case with the very same function; its names are
re-exported here, so supervision's modules keep reading them as ``domain.X``.
"""
from __future__ import annotations

from datetime import datetime, timezone

from shared.lifecycle import (
    _RANK,
    AFTER_FINAL,
    FINAL_STATES,
    HANDLING,
    NOTES,
    OPEN_STATES,
    TRANSITIONS,
    CaseState,
    Context,
    Due,
    State,
    Transition,
    Verdict,
    acceptance_decided,
    apply,
    archived,
    assigned,
    closed,
    extension_decided,
    extension_requested,
    feedback,
    fold,
    happened,
    leader_assigned,
    noted,
    objected,
    objection_decided,
    placed_at,
    progress_reported,
    received,
    replied,
    returned,
    review_requested,
    signed,
    triaged,
)
from shared.policy import DeadlinePolicy

__all__ = [  # what supervision's modules and tests read as domain.X
    "_RANK", "AFTER_FINAL", "as_utc", "FINAL_STATES", "HANDLING", "NOTES", "OPEN_STATES", "TRANSITIONS", "CaseState", "Context", "Due", "State",
    "Transition", "Verdict", "acceptance_decided", "alerts_due", "apply", "archived", "assigned", "closed", "extension_decided",
    "extension_requested", "feedback", "fold", "happened", "is_final", "leader_assigned", "noted", "objected",
    "objection_decided", "placed_at",
    "next_check_at", "progress_reported", "received", "replied", "returned", "review_requested", "should_archive",
    "should_close",
    "signed", "triaged",
]


def as_utc(at: datetime) -> datetime:
    """A stored time as an aware UTC datetime (a naive one from SQLite is UTC)."""
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


# Closed at once, when the case is folded; the others by a sweep, when their time comes.
CLOSE_AT_ONCE = frozenset({"satisfied", "not_accepted", "re_reviewed"})


def should_close(s: CaseState, now: datetime, policy: DeadlinePolicy) -> str | None:
    """Why the case closes now, if it does: not accepted (不予受理); the re-review's opinion, which is
    final (Art. 36); a satisfied resident; no feedback within the feedback window; or a resident not
    satisfied who asked for no review within the time limit (Art. 35: the opinion stands). A
    resident's dissatisfaction never holds a case open."""
    if s.state == State.NOT_ACCEPTED:
        return "not_accepted"
    if s.state != State.REPLIED or s.replied_at is None:
        return None
    if s.opinion_level == "re_review":
        return "re_reviewed"
    if s.satisfied:
        return "satisfied"
    if s.satisfied is None and now >= policy.due(s.replied_at, policy.feedback_days, roll=False):
        return "no_feedback"
    if s.satisfied is False and now >= policy.due(s.replied_at, policy.review_request_days):
        return "no_review"
    return None


def is_final(s: CaseState, now: datetime, policy: DeadlinePolicy) -> bool:
    """终结: closed, and no review can follow — not accepted, the re-review's opinion given, or the
    review window of the last opinion passed."""
    if s.state not in FINAL_STATES:
        return False
    return s.final or (s.replied_at is not None and now > policy.due(s.replied_at, policy.review_request_days))


def should_archive(s: CaseState, now: datetime, policy: DeadlinePolicy) -> bool:
    """归档 is due: the case closed ``archive_days`` ago."""
    return s.state == State.CLOSED and s.closed_at is not None and now >= policy.due(s.closed_at, policy.archive_days, roll=False)


def alerts_due(s: CaseState, now: datetime, policy: DeadlinePolicy) -> list[tuple[str, Due]]:
    """(stage, due) for every reminder, overdue and escalation whose time has come."""
    out = []
    for d in s.open_dues():
        if now >= policy.remind_at(d.due_at):
            out.append(("reminded", d))
        if now >= d.due_at:
            out.append(("overdue", d))
        if now >= policy.escalate_at(d.due_at):
            out.append(("escalated", d))
    return out


# What is due at any time: a close that waits for nothing but the case's own state.
ALWAYS = datetime.min.replace(tzinfo=timezone.utc)


def check_times(s: CaseState, policy: DeadlinePolicy) -> list[datetime]:
    """Every moment from which something is due for the case as it stands: each stage of each open
    due date (``alerts_due``), its close (``should_close``; ``ALWAYS`` when it waits for no time)
    and its archiving (``should_archive``). Each stays due from its moment on."""
    times = [t for d in s.open_dues() for t in (policy.remind_at(d.due_at), d.due_at, policy.escalate_at(d.due_at))]
    if s.state == State.NOT_ACCEPTED:
        times.append(ALWAYS)
    elif s.state == State.REPLIED and s.replied_at is not None:
        if s.opinion_level == "re_review" or s.satisfied:
            times.append(ALWAYS)
        elif s.satisfied is None:
            times.append(policy.due(s.replied_at, policy.feedback_days, roll=False))
        else:
            times.append(policy.due(s.replied_at, policy.review_request_days))
    elif s.state == State.CLOSED and s.closed_at is not None:
        times.append(policy.due(s.closed_at, policy.archive_days, roll=False))
    return times


def next_check_at(s: CaseState, policy: DeadlinePolicy, after: datetime | None = None) -> datetime | None:
    """When a sweep next has anything to do for the case: the earliest moment from which a reminder,
    overdue or escalation, a close or the archiving is due, of those not due yet at ``after`` (a sweep
    at ``after`` did those); None when nothing can be, as the case stands."""
    return min((t for t in check_times(s, policy) if after is None or t > after), default=None)
