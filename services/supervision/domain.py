"""Supervision's own rules over a case's lifecycle, in plain Python: when a replied case closes,
when a closed one is archived, which reminders, overdue and escalations are due.

The lifecycle itself (the states, the due dates, :func:`fold` and its transitions) lives in
``shared/lifecycle.py``, since scoring folds every case with the very same function; its names are
re-exported here, so supervision's modules keep reading them as ``domain.X``.
"""
from __future__ import annotations

from datetime import datetime

from shared.lifecycle import (
    _RANK,
    AFTER_FINAL,
    FINAL_STATES,
    NOTES,
    OPEN_STATES,
    TRANSITIONS,
    CaseState,
    Context,
    Due,
    State,
    Transition,
    Verdict,
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
    "_RANK", "AFTER_FINAL", "FINAL_STATES", "NOTES", "OPEN_STATES", "TRANSITIONS", "CaseState", "Context", "Due", "State",
    "Transition", "Verdict", "alerts_due", "apply", "archived", "assigned", "closed", "extension_decided",
    "extension_requested", "feedback", "fold", "happened", "leader_assigned", "noted", "placed_at",
    "progress_reported", "received", "replied", "returned", "review_requested", "should_archive", "should_close",
    "signed", "triaged",
]


def should_close(s: CaseState, now: datetime, policy: DeadlinePolicy) -> str | None:
    """办结: a reply and a satisfied resident, or no feedback within the window."""
    if s.state != State.REPLIED or s.replied_at is None:
        return None
    if s.satisfied:
        return "satisfied"
    if s.satisfied is None and now >= policy.due(s.replied_at, policy.feedback_days, roll=False):
        return "no_feedback"
    return None


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
