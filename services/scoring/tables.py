"""Scoring's projection: each case's lifecycle events and one row of facts per case (counted from
the events the case's fold applied), plus night visits and drives, all rebuilt from the stream.
Frozen periods are kept apart: a rebuild does not touch what was published."""
from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Date, Integer, MetaData, String, Table

from shared.db import UtcDateTime
from shared.inbox import inbox_table
from shared.outbox import outbox_table

metadata = MetaData()

case_facts = Table(
    "case_facts", metadata,
    Column("case_id", String(32), primary_key=True),
    # A case has a row once its CaseReceived has arrived (before that it is pending: nothing counts).
    Column("received_at", UtcDateTime(), index=True),
    Column("channel", String(16)),
    Column("township", String(64)),
    Column("category", String(64)),
    Column("drive_id", String(64)),
    Column("agent_id", String(64)),
    Column("agency_id", String(64)),
    Column("visit_id", String(64)),
    Column("people_count", Integer),
    Column("collective", Boolean),
    Column("escalated", Boolean),
    Column("backlog", Boolean),
    Column("repeat_of", String(32)),
    Column("special_period", Boolean),
    Column("lead_unit", String(64)),
    Column("lead_assigned_at", UtcDateTime()),
    Column("leader_id", String(64)),
    Column("signed_at", UtcDateTime()),
    Column("acceptance", String(16)),  # accepted, not_accepted (migration 0003)
    Column("decided_at", UtcDateTime()),
    Column("replied_at", UtcDateTime()),  # the lead unit's handling opinion (办结)
    Column("closed_at", UtcDateTime()),
    Column("last_review_at", UtcDateTime()),
    Column("reviewed_at", UtcDateTime()),  # the reviewing bodies' opinions and their outcomes
    Column("review_outcome", String(16)),
    Column("re_reviewed_at", UtcDateTime()),
    Column("re_review_outcome", String(16)),
    Column("feedback_at", UtcDateTime()),
    Column("satisfied", Boolean),
    Column("overdue_kinds", JSON, nullable=False),
    Column("escalated_overdue", Boolean, nullable=False),
    Column("extensions", Integer, nullable=False),
    Column("reviews", Integer, nullable=False),
    Column("re_reviews", Integer, nullable=False),
    Column("objections", JSON, nullable=False),  # the units that objected (异议)
    Column("objections_rejected", Integer, nullable=False),
    Column("returns", JSON, nullable=False),  # the units whose objection was approved (退回)
    Column("charges", JSON, nullable=False),  # [breach, unit] charged at the moment (migration 0004)
    Column("result", String(16)),  # the lead unit's opinion: resolved, mediated… (migration 0006)
)

# Every lifecycle event of every case, as the bus delivered it: a batch re-folds each case it touches
# from here (shared/lifecycle.py), and the case's facts count only the events the fold applied.
case_events = Table(
    "case_events", metadata,
    Column("event_id", String(64), primary_key=True),
    Column("case_id", String(32), nullable=False, index=True),
    Column("type", String(64), nullable=False),
    Column("occurred_at", UtcDateTime(), nullable=False),  # as the publisher stated it
    Column("placed_at", UtcDateTime(), nullable=False),  # when it counts as having happened (lifecycle.placed_at)
    Column("payload", JSON, nullable=False),
)

visits = Table(
    "visits", metadata,
    Column("visit_id", String(64), primary_key=True),
    Column("cadre_unit", String(64), nullable=False),
    Column("township", String(64), nullable=False),
    Column("visited_on", Date, nullable=False),
    Column("households_visited", Integer, nullable=False),
    Column("case_ids", JSON, nullable=False),
    Column("cadre_kind", String(16)),  # migration 0005
    Column("visit_format", String(16)),
    Column("solved_on_spot", Integer, nullable=False),
    Column("suggestions", Integer, nullable=False),
)

drives = Table(
    "drives", metadata,
    Column("drive_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(100), nullable=False),
)

# Numbered notices (交办通知 and 督办通知) and joint meetings (联席会议), for the reports and 一票否决.
notices = Table(
    "notices", metadata,
    Column("notice_type", String(32), primary_key=True),
    Column("notice_no", String(64), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("issued_at", UtcDateTime(), nullable=False),
    Column("units", JSON, nullable=False),
    Column("case_ids", JSON, nullable=False),
)

meetings = Table(
    "meetings", metadata,
    Column("meeting_id", String(64), primary_key=True),
    Column("meeting_no", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("held_on", Date, nullable=False),
    Column("units", JSON, nullable=False),
    Column("case_ids", JSON, nullable=False),
)

# Not part of the projection: what a closed period published stays as it was.
frozen_periods = Table(
    "frozen_periods", metadata,
    Column("period", String(32), primary_key=True),
    Column("report", JSON, nullable=False),
    Column("closed_at", UtcDateTime(), nullable=False),
)

PROJECTION = (case_facts, case_events, visits, drives, notices, meetings)
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
