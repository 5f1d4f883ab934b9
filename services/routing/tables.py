"""Routing's own tables: the cases it routed, every assignment with its reason (reviewing bodies
too), the units' objections with the bureau's decision, the triage queue, leader load, and refused
department commands."""
from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

from shared.db import UtcDateTime
from shared.inbox import inbox_table
from shared.outbox import outbox_table

metadata = MetaData()
_ID = BigInteger().with_variant(Integer, "sqlite")

cases = Table(
    "cases", metadata,
    Column("case_id", String(32), primary_key=True),
    Column("channel", String(16), nullable=False),
    Column("township", String(64), nullable=False),
    Column("category", String(64)),  # as filed; the category routed on is on the assignment
    Column("accused", JSON, nullable=False),
    Column("repeat_of", String(32)),
    Column("brief", JSON, nullable=False),  # what each assigned unit receives (CaseBrief)
    Column("received_at", UtcDateTime(), nullable=False),
)

assignments = Table(
    "assignments", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("case_id", String(32), nullable=False),
    Column("unit", String(64), nullable=False),
    Column("role", String(8), nullable=False),  # lead (主办), co (协办), reviewer (复查/复核机关)
    Column("review_level", String(16)),  # reviewer only: review (复查) or re_review (复核)
    Column("rule_id", String(64)),
    Column("category", String(64)),
    Column("category_suggested", Boolean, nullable=False),
    Column("confidence", Float),
    Column("note", Text, nullable=False),
    Column("decided_by", String(64)),
    Column("active", Boolean, nullable=False),
    Column("assigned_at", UtcDateTime(), nullable=False),
    Index("ix_assignments_case", "case_id", "active"),
)

# 异议 (Art. 23): a unit's objection that a case is not its own, and the bureau's decision. Only an
# approved one moves the case. Rows from before migration 0002 were free returns (退回): approved,
# with no role, event or decision recorded.
returns = Table(
    "returns", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("case_id", String(32), nullable=False, index=True),
    Column("unit", String(64), nullable=False),
    Column("role", String(8)),  # the unit's role when it objected: lead or co
    Column("via", String(32)),  # the objection's event type: CaseReturned or AcceptanceDecided (forwarded)
    Column("event_id", String(64)),  # the objection's event (ObjectionDecided.objection_event_id names it)
    Column("reason", Text, nullable=False),
    Column("returned_at", UtcDateTime(), nullable=False),  # when routing recorded the objection
    Column("status", String(16), nullable=False),  # pending, approved, rejected
    Column("decided_at", UtcDateTime()),
    Column("decided_reason", Text),
    Column("decision_event_id", String(64)),
)

triage = Table(
    "triage", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("case_id", String(32), nullable=False, index=True),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("suggested_category", String(64)),
    Column("confidence", Float),
    Column("opened_at", UtcDateTime(), nullable=False),
    Column("resolved_unit", String(64)),
    Column("resolved_by", String(64)),
    Column("resolved_reason", Text),
    Column("resolved_at", UtcDateTime()),
)

leader_cases = Table(
    "leader_cases", metadata,
    Column("case_id", String(32), primary_key=True),
    Column("leader_id", String(64), nullable=False, index=True),
    Column("reasons", JSON, nullable=False),
    Column("open", Boolean, nullable=False),
    Index("ix_leader_cases_open", "open", "leader_id"),  # a leader's load: the open rows only
)

refusals = Table(
    "refusals", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("case_id", String(32), nullable=False),
    Column("unit", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("refused_at", UtcDateTime(), nullable=False),
)

inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
