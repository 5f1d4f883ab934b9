"""Every NATS subject of the system, in one place (DESIGN §3, "Subjects").

``cases.<event>.<unit>`` for events that concern one unit, so a department subscribes to
``cases.*.<its code>`` and NATS permissions can pin what it may publish. ``cases.<event>`` for
bureau-internal events.
"""
from __future__ import annotations

RECEIVED = "cases.received"
ASSIGNED = "cases.assigned.{unit}"
TRIAGE = "cases.triage"
LEADER_ASSIGNED = "cases.leader_assigned"
SIGNED = "cases.signed.{unit}"
RETURNED = "cases.returned.{unit}"
ACCEPTANCE = "cases.acceptance.{unit}"
PROGRESS = "cases.progress.{unit}"
EXTENSION_REQUESTED = "cases.extension_requested.{unit}"
REPLIED = "cases.replied.{unit}"
EXTENSION_DECIDED = "cases.extension_decided.{unit}"
OBJECTION_DECIDED = "cases.objection_decided.{unit}"
FEEDBACK = "cases.feedback"
REVIEW_REQUESTED = "cases.review_requested"
REMINDED = "cases.reminded.{unit}"
OVERDUE = "cases.overdue.{unit}"
ESCALATED = "cases.escalated.{unit}"
CLOSED = "cases.closed"
ARCHIVED = "cases.archived"
NOTICE_ISSUED = "supervision.notice_issued"
MEETING_HELD = "supervision.meeting_held"
DRIVE_OPENED = "drives.opened"
DRIVE_CLOSED = "drives.closed"
VISIT_LOGGED = "visits.logged"
PERIOD_CLOSED = "scoring.period_closed"
# To one unit alone: what became of its refused events, and what others did about its cases.
REFUSED = "cases.refused.{unit}"
NOTIFIED = "cases.notified.{unit}"

# Everything above is kept in one stream, so any projection can be rebuilt by replaying it.
STREAM_SUBJECTS = ["cases.>", "supervision.>", "drives.>", "visits.>", "scoring.>"]

# Poison messages go here with the error, one subject per consuming service, in a stream of their own.
DEAD_LETTER = "deadletter.{service}"
DEAD_LETTER_STREAM = "DEADLETTER"
DEAD_LETTER_SUBJECTS = ["deadletter.>"]


# Core NATS request-reply (not stored, so outside the stream's subjects): a unit asks routing
# whether a case is assigned to it, and supervision for the timeline of a case it holds or held.
ASSIGNMENT_QUERY = "routing.assignment.{unit}"
TIMELINE_QUERY = "timeline.{unit}"
# Intake asks supervision whether a resident's step fits the case now.
RESIDENT_STEP_QUERY = "resident_step.intake"


def for_unit(unit: str) -> str:
    """What a unit subscribes to: every event about its own cases."""
    return f"cases.*.{unit}"


def wildcard(template: str) -> str:
    """A subject template as a filter over every unit: ``cases.signed.{unit}`` → ``cases.signed.*``."""
    return template.format(unit="*")


def unit_of(subject: str, templates: list[str]) -> str | None:
    """The unit a subject names, if it is one of ``templates`` (``cases.signed.forestry`` → forestry)."""
    head, _, unit = subject.rpartition(".")
    return unit if unit and any(t == f"{head}.{{unit}}" for t in templates) else None
