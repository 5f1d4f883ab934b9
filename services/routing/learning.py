"""Routing learns from the clerks: every clerk's triage decision (``CaseAssigned`` with rule ``triage``)
and every approved objection (the unit that finally accepted the case: ``AcceptanceDecided``
accepted after an ``ObjectionDecided`` approved) is a labelled example, recorded in the examples
table as it arrives on the bus, idempotently by event id.

An example's label is a unit (what the clerk decided), plus a category when a clerk gave one: the
category filed at intake or named in the decision (never the classifier's own suggestion). The
classifier learns a category: one the clerk gave whose rule leads to that unit, else the categories
whose rule gives that unit the lead for the case's township and channel (shared by the corpus model's
belief among them). A case teaches once: its latest example counts.

Every replica's model is the corpus plus this table (:class:`ExampleSource`), reloaded when the table
changed; ``xinfang routing retrain`` (:class:`Replay`) rebuilds the table from the stream.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from sqlalchemy import BigInteger, Column, Connection, Engine, Integer, String, Table, Text, delete, select

from services.routing import domain, tables
from services.routing.classifier import Example
from services.routing.classifier import ExampleSource as _Source
from services.routing.domain import CaseFacts
from shared import events as ev
from shared.db import UtcDateTime
from shared.directory import Directory
from shared.rules import RoutingConfig

# The ids only grow (SQLite's AUTOINCREMENT, PostgreSQL's sequence): the largest one marks the
# table's state, so a replica notices a new example, or a retrain, with one cheap query.
examples = Table(
    "examples", tables.metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),  # the event that taught it
    Column("case_id", String(32), nullable=False, index=True),
    Column("source", String(16), nullable=False),  # triage (a clerk's decision) or objection (the unit that took it)
    Column("title", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("township", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("unit", String(64), nullable=False),
    Column("category", String(64)),  # given by a clerk (filed or decided), else null
    Column("occurred_at", UtcDateTime(), nullable=False),
    sqlite_autoincrement=True,
)


def leads(facts: CaseFacts, config: RoutingConfig, directory: Directory, **route: object) -> Callable[[str], str | None]:
    """category → the lead unit the rules give a case like ``facts`` (its township and channel) filed
    under it (``route``: :func:`services.routing.domain.route`'s keywords: accused, excluded units)."""
    def lead_of(category: str) -> str | None:
        return domain.route(replace(facts, category=category), config, directory, **route).lead
    return lead_of


def example_of(row: dict, config: RoutingConfig, directory: Directory) -> Example | None:
    """What an example row teaches: its given category if that category's rule leads to the unit,
    else the categories whose rule does (none: nothing to learn, e.g. the discipline commission)."""
    facts = CaseFacts(row["channel"], row["township"], None, row["title"], row["content"])
    lead_of = leads(facts, config, directory)
    if row["category"] in directory.categories and lead_of(row["category"]) == row["unit"]:
        return Example(row["title"], row["content"], row["category"])
    candidates = tuple(c for c in sorted(directory.categories) if lead_of(c) == row["unit"])
    return Example(row["title"], row["content"], None, candidates) if candidates else None


def latest_per_case(rows: Iterable[dict]) -> list[dict]:
    """A case teaches once: its latest example (by the time of the event, then its id)."""
    latest: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r["occurred_at"], r["event_id"])):
        latest[row["case_id"]] = row
    return [latest[k] for k in sorted(latest)]


def teaching(rows: Iterable[dict], config: RoutingConfig, directory: Directory) -> list[Example]:
    out = [example_of(r, config, directory) for r in latest_per_case(rows)]
    return [e for e in out if e is not None]


def fingerprint(taught: Iterable[Example]) -> str:
    """The same for the same examples in any order (what ``retrain`` and a replica's model learn)."""
    keys = sorted(json.dumps(e.key, ensure_ascii=False) for e in taught)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


COLUMNS = ("event_id", "case_id", "source", "title", "content", "township", "channel", "unit", "category",
           "occurred_at")


class ExampleSource(_Source):
    """The examples table, for the classifier: its mark (largest id, count) and what it teaches.

    Read outside any transaction (the driver's own connection, autocommit): the classifier is asked
    inside the consumer's transaction, and on SQLite every transaction takes the write lock at BEGIN,
    so a second one would wait for the first. Committed examples only, which is what a replica sees."""

    def __init__(self, engine: Engine, config: RoutingConfig, directory: Directory) -> None:
        self.engine, self.config, self.directory = engine, config, directory

    def _read(self, sql: str) -> list[tuple]:
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(sql)
            rows = cursor.fetchall()
            cursor.close()
            raw.rollback()  # PostgreSQL's driver opened a transaction for the read
            return rows
        finally:
            raw.close()

    def mark(self) -> tuple:
        return tuple(self._read("SELECT max(id), count(*) FROM examples")[0])

    def examples(self) -> list[Example]:
        rows = self._read(f"SELECT {', '.join(COLUMNS)} FROM examples")
        return teaching([dict(zip(COLUMNS, r)) for r in rows], self.config, self.directory)


# --- live: from routing's consumer, inside its transaction --------------------------------------

def _given(event: ev.CaseAssigned, filed: str | None) -> str | None:
    """The category a clerk gave: the decision's own (not the classifier's suggestion), else the filed one."""
    if event.category not in domain.UNCATEGORISED and not event.category_suggested:
        return event.category
    return filed if filed not in domain.UNCATEGORISED else None


def _record(conn: Connection, row: dict) -> None:
    if conn.execute(select(examples.c.id).where(examples.c.event_id == row["event_id"])).first() is None:
        conn.execute(examples.insert(), row)


def _row(event: ev.Event, source: str, case: dict, unit: str, category: str | None) -> dict:
    return {"event_id": event.event_id, "case_id": event.case_id, "source": source, "title": case["title"],
            "content": case["content"], "township": case["township"], "channel": case["channel"], "unit": unit,
            "category": category, "occurred_at": event.occurred_at}


def _case(conn: Connection, case_id: str) -> dict | None:
    row = conn.execute(select(tables.cases).where(tables.cases.c.case_id == case_id)).first()
    if row is None:
        return None
    return {"title": row.brief["title"], "content": row.brief["content"], "township": row.township,
            "channel": row.channel, "category": row.category}


def triage_decided(conn: Connection, event: ev.CaseAssigned) -> None:
    """A clerk named the lead unit of a case in triage: an example (the case's text, the unit)."""
    if event.rule_id != "triage" or event.role != "lead":
        return
    case = _case(conn, event.case_id)
    if case is not None:
        _record(conn, _row(event, "triage", case, event.unit, _given(event, case["category"])))


def accepted(conn: Connection, event: ev.AcceptanceDecided) -> None:
    """The lead unit accepted a case after another unit's objection was approved: the unit that
    finally took it is an example."""
    if event.decision != "accepted":
        return
    r, a = tables.returns, tables.assignments
    approved = conn.execute(select(r.c.id).where(r.c.case_id == event.case_id, r.c.status == "approved",
                                                 r.c.unit != event.unit).limit(1)).first()
    leads_it = conn.execute(select(a.c.id).where(a.c.case_id == event.case_id, a.c.unit == event.unit, a.c.active,
                                                 a.c.role == "lead").limit(1)).first()
    case = _case(conn, event.case_id)
    if approved and leads_it and case is not None:
        filed = case["category"] if case["category"] not in domain.UNCATEGORISED else None
        _record(conn, _row(event, "objection", case, event.unit, filed))


# --- retrain: the same examples from the stream -------------------------------------------------

@dataclass
class _Case:
    text: dict
    holders: set[str] = field(default_factory=set)  # assigned lead or co, not since approved away
    leads: set[str] = field(default_factory=set)  # every unit ever assigned the lead
    pending: set[str] = field(default_factory=set)  # units whose objection waits for the bureau
    approved: set[str] = field(default_factory=set)  # units whose objection was approved
    accepted: list[tuple[dict, str]] = field(default_factory=list)  # (example, unit) after an approved objection


@dataclass
class Replay:
    """Routing's record of the cases, as far as learning needs it, folded from the stream in order:
    the examples the live consumer recorded (:func:`triage_decided`, :func:`accepted`).

    The stream's order is not routing's: routing publishes an assignment through its outbox, a
    moment after it committed it, and a unit acts on what routing's database says (it asks routing
    first), so the unit's objection or acceptance may be stored before the assignment it answers.
    The fold therefore never waits for an assignment: an objection counts as waiting whoever held
    the case, and an acceptance counts once the unit is found to have been given the lead."""

    cases: dict[str, _Case] = field(default_factory=dict)
    triaged: list[dict] = field(default_factory=list)

    @property
    def rows(self) -> list[dict]:
        taken = [row for case in self.cases.values() for row, unit in case.accepted if unit in case.leads]
        return list({r["event_id"]: r for r in self.triaged + taken}.values())

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.CaseReceived):
            if event.case_id not in self.cases:  # a second receipt is refused
                self.cases[event.case_id] = _Case({"title": event.title, "content": event.content,
                                                   "township": event.township, "channel": event.channel,
                                                   "category": event.category})
            return
        case = self.cases.get(getattr(event, "case_id", None))
        if case is None:
            return
        if isinstance(event, ev.CaseAssigned) and event.role in ("lead", "co"):
            case.holders.add(event.unit)
            if event.role == "lead":
                case.leads.add(event.unit)
            if event.rule_id == "triage" and event.role == "lead":
                self.triaged.append(_row(event, "triage", case.text, event.unit, _given(event, case.text["category"])))
        elif isinstance(event, ev.CaseReturned) or (isinstance(event, ev.AcceptanceDecided)
                                                    and event.decision == "forwarded"):
            case.pending.add(event.unit)
        elif isinstance(event, ev.ObjectionDecided):
            waiting = event.unit in case.pending
            case.pending.discard(event.unit)
            if event.approved and (waiting or event.unit in case.holders):
                case.approved.add(event.unit)
                case.holders.discard(event.unit)
        elif isinstance(event, ev.AcceptanceDecided) and event.decision == "accepted":
            if case.approved - {event.unit} and event.unit not in case.approved:
                filed = case.text["category"] if case.text["category"] not in domain.UNCATEGORISED else None
                case.accepted.append((_row(event, "objection", case.text, event.unit, filed), event.unit))


def replace_all(conn: Connection, rows: list[dict]) -> int:
    """The examples table anew (new ids: every replica reloads)."""
    conn.execute(delete(examples))
    if rows:
        conn.execute(examples.insert(), rows)
    return len(rows)
