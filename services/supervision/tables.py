"""Supervision's tables: every case event on a timeline, each case's folded state and due dates,
the alerts already sent (once per due date and stage), and supervision notices."""
from __future__ import annotations

from sqlalchemy import (
                        JSON,
                        BigInteger,
                        Column,
                        Date,
                        Index,
                        Integer,
                        LargeBinary,
                        MetaData,
                        PrimaryKeyConstraint,
                        String,
                        Table,
                        Text,
                        text,
)

from shared.db import UtcDateTime
from shared.inbox import inbox_table
from shared.outbox import outbox_table
from shared.ratelimit import failures_table
from shared.sequences import counters_table

metadata = MetaData()

timeline = Table(
    "timeline", metadata,
    Column("event_id", String(64), primary_key=True),
    Column("case_id", String(32), nullable=False),
    Column("occurred_at", UtcDateTime(), nullable=False),  # as the publisher stated it
    Column("placed_at", UtcDateTime(), nullable=False),  # when it counts as having happened (domain.placed_at)
    Column("type", String(64), nullable=False),
    Column("unit", String(64)),
    Column("payload", JSON, nullable=False),
    Column("status", String(8), nullable=False),  # pending (the case not received yet), applied, refused
    Column("reason", Text, nullable=False),
    Index("ix_timeline_case", "case_id", "occurred_at"),
)

cases = Table(
    "cases", metadata,
    Column("case_id", String(32), primary_key=True),
    Column("state", String(16), nullable=False, index=True),
    Column("lead", String(64), index=True),
    Column("co", JSON, nullable=False),
    Column("leader", String(64)),
    Column("received_at", UtcDateTime()),
    Column("replied_at", UtcDateTime()),
    Column("closed_at", UtcDateTime()),
    Column("satisfied", String(8)),  # yes, no, or null: no feedback yet
    Column("dues", JSON, nullable=False),
    Column("query_code_hash", String(64)),
    # Where the case stands in the procedure: acceptance, objections, extension, reviewers, finality.
    Column("procedure", JSON),
    # The case's fold (lifecycle.state_to_dict), carried forward event by event, and the mark
    # (domain.happened: time, rank) of the latest event folded into it; NULL on rows from before.
    Column("fold", JSON),
    Column("folded_at", UtcDateTime()),
    Column("folded_rank", Integer),
    # When a sweep next has anything to do for the case (domain.next_check_at); NULL: nothing can.
    Column("next_check_at", UtcDateTime(), index=True),
    # The rows with no fold yet (from before folds were kept), which a sweep folds: few, so indexed alone.
    Index("ix_cases_unfolded", "case_id", sqlite_where=text("folded_at IS NULL"),
          postgresql_where=text("folded_at IS NULL")),
)

# One row per (case, due date, stage) ever sent: the sweep inserts before it publishes, so a due
# date fires once however often sweeps run and however many replicas run them.
alerts = Table(
    "alerts", metadata,
    Column("case_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("sent_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("case_id", "kind", "due_at", "stage"),
)

notices = Table(
    "notices", metadata,
    Column("notice_id", String(64), primary_key=True),  # <type>-<year>-<seq>
    Column("notice_no", String(32), nullable=False),  # 〔2026〕3号
    Column("notice_type", String(32), nullable=False),
    Column("year", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("units", JSON, nullable=False),
    Column("case_ids", JSON, nullable=False),
    Column("demands", Text, nullable=False),
    Column("reply_by", Date, nullable=False),
    Column("issued_by", String(64)),
    Column("issued_at", UtcDateTime(), nullable=False),
    Column("markdown", Text, nullable=False),
    Column("docx", LargeBinary, nullable=False),
)

notice_replies = Table(
    "notice_replies", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("notice_id", String(64), nullable=False, index=True),
    Column("unit", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("replied_at", UtcDateTime(), nullable=False),
)

# The written notices a case's steps produce (受理/不予受理告知书, 延期告知书, 处理意见书, 复查/复核意见书):
# one per event, as text (the resident's progress lookup) and DOCX (printed and sent).
documents = Table(
    "documents", metadata,
    Column("doc_id", String(80), primary_key=True),
    Column("case_id", String(32), nullable=False, index=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("title", String(200), nullable=False),
    Column("unit", String(64)),
    Column("issued_at", UtcDateTime(), nullable=False),
    Column("text", Text, nullable=False),
    Column("docx", LargeBinary, nullable=False),
)

# 联席会议: a joint meeting, its minutes (会议纪要), and each decision tracked like a due date.
meetings = Table(
    "meetings", metadata,
    Column("meeting_id", String(32), primary_key=True),  # JM-<year>-<seq>
    Column("meeting_no", String(32), nullable=False),  # 2026年第3次
    Column("held_on", Date, nullable=False),
    Column("kind", String(32), nullable=False),  # prominent_problem, mass_incident
    Column("topic", Text, nullable=False),
    Column("units", JSON, nullable=False),
    Column("case_ids", JSON, nullable=False),
    Column("convened_by", String(64)),
    Column("recorded_at", UtcDateTime(), nullable=False),
    Column("docx", LargeBinary, nullable=False),
)

meeting_decisions = Table(
    "meeting_decisions", metadata,
    Column("meeting_id", String(32), nullable=False),
    Column("n", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("unit", String(64), nullable=False, index=True),
    Column("due_on", Date, nullable=False),
    Column("done_at", UtcDateTime()),
    Column("done_note", Text),
    PrimaryKeyConstraint("meeting_id", "n"),
)

counters = counters_table(metadata)
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)

# Wrong query codes on the resident's progress lookup, per case and per client, for the last hour.
resident_failures = failures_table(metadata)
