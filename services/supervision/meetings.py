"""联席会议: joint meetings convened for prominent problems and mass incidents — the units present, the
cases discussed and the decisions (议定事项), each with its responsible unit and deadline, recorded and
published (``JointMeetingHeld``); the minutes (会议纪要) as DOCX; and each decision tracked like a due
date until its unit reports it done (the open ones past their day are listed to chase)."""
from __future__ import annotations

import io
from datetime import date

from sqlalchemy import select, update

from services.supervision import tables
from services.supervision.service import Supervision
from shared import events as ev
from shared.errors import Conflict, FieldError, InvalidInput, NotFound
from shared.forms import add_table
from shared.outbox import enqueue
from shared.policy import CHINA_TZ
from shared.sequences import allocate

KINDS = {"prominent_problem": "突出问题", "mass_incident": "群体性事件"}


def hold(sup: Supervision, held_on: date, kind: str, topic: str, units: list[str], case_ids: list[str],
         decisions: list[dict], convened_by: str | None) -> dict:
    """Record a meeting and its decisions; number it in its year (2026年第3次); publish it."""
    d = sup.directory
    errors = [FieldError(f"units[{i}]", f"unknown unit {u!r}") for i, u in enumerate(units) if u not in d.units]
    errors += [FieldError(f"decisions[{i}].unit", f"unknown unit {x['unit']!r}")
               for i, x in enumerate(decisions) if x["unit"] not in d.units]
    errors += [FieldError(f"decisions[{i}].due_on", "before the meeting")
               for i, x in enumerate(decisions) if x["due_on"] < held_on]
    with sup.uow.engine.connect() as conn:
        known = set(conn.execute(select(tables.cases.c.case_id).where(tables.cases.c.case_id.in_(case_ids))).scalars())
    errors += [FieldError(f"case_ids[{i}]", f"supervision has not seen case {c}")
               for i, c in enumerate(case_ids) if c not in known]
    if errors:
        raise InvalidInput(errors)
    now = sup.clock.now()
    year = held_on.year
    with sup.uow.begin() as conn:
        seq = allocate(conn, tables.counters, f"meeting:{year}")
        meeting = ev.JointMeetingHeld(
            occurred_at=now, actor=ev.Actor(kind="supervisor", id=convened_by or "supervisor"),
            meeting_id=f"JM-{year}-{seq}", meeting_no=f"{year}年第{seq}次", held_on=held_on, kind=kind, topic=topic,
            units=list(dict.fromkeys(units)), case_ids=list(dict.fromkeys(case_ids)),
            decisions=[ev.MeetingDecision(n=i, text=x["text"], unit=x["unit"], due_on=x["due_on"])
                       for i, x in enumerate(decisions, 1)])
        conn.execute(tables.meetings.insert(), {
            "meeting_id": meeting.meeting_id, "meeting_no": meeting.meeting_no, "held_on": held_on, "kind": kind,
            "topic": topic, "units": meeting.units, "case_ids": meeting.case_ids, "convened_by": convened_by,
            "recorded_at": now, "docx": minutes_docx(sup, meeting)})
        if meeting.decisions:
            conn.execute(tables.meeting_decisions.insert(), [
                {"meeting_id": meeting.meeting_id, "n": x.n, "text": x.text, "unit": x.unit, "due_on": x.due_on}
                for x in meeting.decisions])
        enqueue(conn, tables.outbox, [meeting], now)
    return get(sup, meeting.meeting_id)


def minutes_docx(sup: Supervision, m: ev.JointMeetingHeld) -> bytes:
    """会议纪要."""
    from docx import Document

    d = sup.directory
    doc = Document()
    doc.add_heading(f"{d.county.name}信访工作联席会议纪要", level=1)
    doc.add_paragraph(m.meeting_no)
    doc.add_paragraph(f"{m.held_on:%Y年%m月%d日}，{d.county.name}信访工作联席会议就{KINDS[m.kind]}“{m.topic}”召开专题会议。")
    doc.add_paragraph("参会单位：" + "、".join(d.units[u].name for u in m.units))
    if m.case_ids:
        doc.add_paragraph("研究信访事项：" + "、".join(m.case_ids))
    doc.add_paragraph("会议议定事项如下：")
    add_table(doc, ("序号", "议定事项", "责任单位", "完成时限"),
              [(str(x.n), x.text, d.units[x.unit].name, f"{x.due_on:%Y年%m月%d日}") for x in m.decisions])
    doc.add_paragraph("各责任单位按时限落实，县信访局督办科跟踪督办。")
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def _status(sup: Supervision, row) -> str:  # noqa: ANN001 - a meeting_decisions row
    if row.done_at is not None:
        return "done"
    return "overdue" if sup.clock.now().astimezone(CHINA_TZ).date() > row.due_on else "open"


def _decision(sup: Supervision, row) -> dict:  # noqa: ANN001
    return {"meeting_id": row.meeting_id, "n": row.n, "text": row.text, "unit": row.unit, "due_on": row.due_on,
            "status": _status(sup, row), "done_at": row.done_at, "done_note": row.done_note}


def get(sup: Supervision, meeting_id: str) -> dict:
    m, x = tables.meetings, tables.meeting_decisions
    with sup.uow.engine.connect() as conn:
        row = conn.execute(select(m).where(m.c.meeting_id == meeting_id)).first()
        if row is None:
            raise NotFound(f"no meeting {meeting_id}")
        decisions = conn.execute(select(x).where(x.c.meeting_id == meeting_id).order_by(x.c.n)).all()
    return {"meeting_id": row.meeting_id, "meeting_no": row.meeting_no, "held_on": row.held_on, "kind": row.kind,
            "topic": row.topic, "units": row.units, "case_ids": row.case_ids, "convened_by": row.convened_by,
            "decisions": [_decision(sup, r) for r in decisions]}


def listing(sup: Supervision) -> list[dict]:
    m = tables.meetings
    with sup.uow.engine.connect() as conn:
        ids = list(conn.execute(select(m.c.meeting_id).order_by(m.c.held_on, m.c.meeting_id)).scalars())
    return [get(sup, i) for i in ids]


def minutes(sup: Supervision, meeting_id: str) -> bytes:
    with sup.uow.engine.connect() as conn:
        body = conn.execute(select(tables.meetings.c.docx).where(tables.meetings.c.meeting_id == meeting_id)).scalar()
    if body is None:
        raise NotFound(f"no meeting {meeting_id}")
    return body


def decisions(sup: Supervision, status: str | None = None, unit: str | None = None) -> list[dict]:
    """The decisions of every meeting (open, overdue or done), a unit's only for a unit."""
    x = tables.meeting_decisions
    q = select(x).order_by(x.c.due_on, x.c.meeting_id, x.c.n)
    if unit is not None:
        q = q.where(x.c.unit == unit)
    with sup.uow.engine.connect() as conn:
        rows = conn.execute(q).all()
    return [d for d in (_decision(sup, r) for r in rows) if status is None or d["status"] == status]


def done(sup: Supervision, meeting_id: str, n: int, note: str, unit: str | None = None) -> dict:
    """A decision carried out (落实), reported by its unit (``unit``: a unit token, its own only)."""
    x = tables.meeting_decisions
    with sup.uow.begin() as conn:
        row = conn.execute(select(x).where(x.c.meeting_id == meeting_id, x.c.n == n)).first()
        if row is None or (unit is not None and row.unit != unit):
            raise NotFound(f"no decision {n} of meeting {meeting_id}")
        if row.done_at is not None:
            raise Conflict(f"decision {n} of {meeting_id} was reported done already")
        conn.execute(update(x).where(x.c.meeting_id == meeting_id, x.c.n == n)
                     .values(done_at=sup.clock.now(), done_note=note))
    return get(sup, meeting_id)
