"""Intake's tables. The full resident ID number lives here and nowhere else in the system."""
from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Date, Index, Integer, MetaData, String, Table, Text

from shared.db import UtcDateTime
from shared.outbox import outbox_table
from shared.ratelimit import failures_table
from shared.sequences import counters_table

metadata = MetaData()

cases = Table(
    "cases", metadata,
    Column("number", String(32), primary_key=True),
    Column("year", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("title", String(200), nullable=False),
    Column("content", Text, nullable=False),
    Column("category", String(64)),
    Column("township", String(64), nullable=False),
    Column("village", String(64)),
    Column("people_count", Integer, nullable=False),
    Column("accused_units", JSON, nullable=False),
    # The clerk's answer: does the case accuse a unit (检举控告)? Null: not asked (routing reads the text).
    Column("accuses_unit", Boolean),
    Column("resident_name", String(50), nullable=False),
    Column("resident_id_number", String(18)),
    Column("resident_id_hash", String(64)),
    Column("resident_masked_id", String(18)),
    Column("resident_phone", String(20)),
    Column("resident_address", String(200)),
    Column("collective", Boolean, nullable=False),
    Column("escalated", Boolean, nullable=False),
    Column("backlog", Boolean, nullable=False),
    Column("repeat_of", String(32)),
    Column("special_period", Boolean, nullable=False),
    Column("drive_id", String(64)),
    Column("visit_id", String(64)),
    Column("agent_id", String(64)),
    Column("agency_id", String(64)),
    Column("service_type", String(64)),
    Column("referral_doc_no", String(64)),
    Column("referral_from", String(100)),
    # Keyed hash of the resident's query code (query-code key, shared/keys.py); the code itself is
    # handed out once, in the 201 answer, and kept only sealed in an idempotent answer.
    Column("query_code_hash", String(64), nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("actor_id", String(64)),
    Index("ix_cases_resident", "resident_id_hash", "received_at"),
    Index("ix_cases_drive", "drive_id"),
    Index("ix_cases_year_seq", "year", "seq", unique=True),
)

# Gap-free sequences ("case:2026", "drive:2026", "visit:2026"): incremented inside the transaction
# that uses the number, so a rollback returns it.
counters = counters_table(metadata)

# Idempotency-Key → the answer first given, replayed for the same body; 409 for another body.
# The query codes in an answer are sealed (AES-GCM under the query-code key, bound to the key).
idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("key", String(250), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

drives = Table(
    "drives", metadata,
    Column("drive_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(100), nullable=False),
    Column("starts_on", Date, nullable=False),
    Column("ends_on", Date, nullable=False),
    Column("status", String(8), nullable=False),
    Column("opened_at", UtcDateTime(), nullable=False),
    Column("closed_at", UtcDateTime()),
)

visits = Table(
    "visits", metadata,
    Column("visit_id", String(64), primary_key=True),
    Column("cadre_name", String(50), nullable=False),
    Column("cadre_unit", String(64), nullable=False),
    Column("township", String(64), nullable=False),
    Column("village", String(64), nullable=False),
    Column("visited_on", Date, nullable=False),
    Column("households_visited", Integer, nullable=False),
    Column("logged_at", UtcDateTime(), nullable=False),
    Column("cadre_kind", String(16)),  # township_leader, station_staff (migration 0004)
    Column("visit_format", String(16)),  # one_to_one, group
    Column("solved_on_spot", Integer, nullable=False),
    Column("suggestions", Integer, nullable=False),
)

feedback = Table(
    "feedback", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("case_number", String(32), nullable=False, index=True),
    Column("satisfied", Boolean, nullable=False),
    Column("comment", Text, nullable=False),
    Column("recorded_at", UtcDateTime(), nullable=False),
)

review_requests = Table(
    "review_requests", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("case_number", String(32), nullable=False, index=True),
    Column("level", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("recorded_at", UtcDateTime(), nullable=False),
)

outbox = outbox_table(metadata)

# Wrong query codes on the resident's routes, per case and per client, for the last hour.
resident_failures = failures_table(metadata)
