"""督办通知: numbered supervision notices (a sequence per year and notice type, 〔2026〕3号), and
交办通知: leader cases handed out by an office (领导包案交办, its prefix and a sequence per office and
year, 青信联办发〔2026〕1号); rendered to Markdown and DOCX, stored, published, shown in each listed
case's timeline, and the units' replies tracked (overdue ones listed to chase)."""
from __future__ import annotations

import io
from datetime import date, datetime

from sqlalchemy import select

from services.supervision import tables
from services.supervision.queries import due_list
from services.supervision.service import Supervision
from shared import events as ev
from shared.errors import FieldError, InvalidInput, NotFound
from shared.forms import add_table
from shared.outbox import enqueue
from shared.policy import CHINA_TZ
from shared.sequences import allocate

NOTICE_TYPES = {"overdue": "超期督办通知", "reminder": "催办通知", "important": "重要信访件督办通知",
                "assignment": "信访矛盾纠纷领导包案交办通知"}
ASSIGNMENT = "assignment"


def issue_notice(sup: Supervision, notice_type: str, units: list[str] | None, case_ids: list[str] | None,
                 demands: str, reply_by: date, issued_by: str) -> dict:
    """List the chosen (or all) overdue cases of the given (or all) units; number, render, publish."""
    d = sup.directory
    errors = [FieldError("notice_type", f"unknown notice type {notice_type!r}", valid=sorted(NOTICE_TYPES))
              ] if notice_type not in NOTICE_TYPES else []
    errors += [FieldError(f"units[{i}]", f"unknown unit {u!r}") for i, u in enumerate(units or []) if u not in d.units]
    if errors:
        raise InvalidInput(errors)
    overdue = [x for x in due_list(sup, overdue=True) if not units or x["unit"] in units]
    if case_ids:
        missing = sorted(set(case_ids) - {x["case_id"] for x in overdue})
        if missing:
            raise InvalidInput([FieldError("case_ids", f"not overdue for these units: {', '.join(missing)}")])
        overdue = [x for x in overdue if x["case_id"] in case_ids]
    if not overdue:
        raise InvalidInput([FieldError("units", "no overdue case to list")])
    now = sup.clock.now()
    year = now.astimezone(CHINA_TZ).year
    listed_units = sorted({x["unit"] for x in overdue})
    with sup.uow.begin() as conn:
        seq = allocate(conn, tables.counters, f"notice:{notice_type}:{year}")
        notice_no = f"〔{year}〕{seq}号"
        markdown = render_markdown(sup, notice_type, notice_no, overdue, demands, reply_by, now.date())
        conn.execute(tables.notices.insert(), {
            "notice_id": f"{notice_type}-{year}-{seq}", "notice_no": notice_no, "notice_type": notice_type,
            "year": year, "seq": seq, "units": listed_units, "case_ids": sorted({x["case_id"] for x in overdue}),
            "demands": demands, "reply_by": reply_by, "issued_by": issued_by, "issued_at": now, "markdown": markdown,
            "docx": render_docx(sup, notice_type, notice_no, overdue, demands, reply_by)})
        enqueue(conn, tables.outbox, [ev.SupervisionNoticeIssued(
            occurred_at=now, actor=ev.Actor(kind="supervisor", id=issued_by), notice_no=notice_no,
            notice_type=notice_type, year=year, seq=seq, units=listed_units,
            case_ids=sorted({x["case_id"] for x in overdue}), demands=demands, reply_by=reply_by)], now)
    sup.metrics.notices.labels(notice_type).inc()
    return get_notice(sup, f"{notice_type}-{year}-{seq}")


def issue_assignment(sup: Supervision, case_ids: list[str], demands: str, reply_by: date, issued_by: str,
                     office: str | None = None, title: str | None = None) -> dict:
    """交办通知: hand the listed important cases to their lead units and leaders (包案), numbered with the
    issuing office's prefix (directory ``notice_prefix``), one sequence per office and year. Every case
    must be open and have its leader (routing names one: ``POST /api/v1/routing/{case}/leader``)."""
    d = sup.directory
    offices = sorted(code for code, u in d.units.items() if u.notice_prefix)
    office = office or (offices[0] if offices else None)
    errors = [] if office in offices else [FieldError("office", f"{office!r} issues no numbered notices (no "
                                                                  "notice_prefix in the directory)", valid=offices)]
    if not case_ids:
        errors.append(FieldError("case_ids", "list at least one case"))
    rows = []
    with sup.uow.engine.connect() as conn:
        for i, case_id in enumerate(dict.fromkeys(case_ids)):
            row = conn.execute(select(tables.cases).where(tables.cases.c.case_id == case_id)).first()
            if row is None or row.state in ("closed", "archived"):
                errors.append(FieldError(f"case_ids[{i}]", f"{case_id} is not an open case supervision knows"))
            elif row.lead is None or row.leader is None:
                errors.append(FieldError(f"case_ids[{i}]", f"{case_id} has no {'lead unit' if row.lead is None else 'leader (包案领导)'} "
                                                           "yet: routing names them first"))
            else:
                rows.append(_assignment_row(sup, conn, row))
    if errors:
        raise InvalidInput(errors)
    now = sup.clock.now()
    year = now.astimezone(CHINA_TZ).year
    units = sorted({r["unit"] for r in rows})
    with sup.uow.begin() as conn:
        seq = allocate(conn, tables.counters, f"notice:{ASSIGNMENT}:{office}:{year}")
        notice_no = f"{d.units[office].notice_prefix}〔{year}〕{seq}号"
        heading = title or f"{d.county.name}{NOTICE_TYPES[ASSIGNMENT]}"
        notice_id = f"{ASSIGNMENT}-{office}-{year}-{seq}"
        conn.execute(tables.notices.insert(), {
            "notice_id": notice_id, "notice_no": notice_no, "notice_type": ASSIGNMENT, "year": year, "seq": seq,
            "units": units, "case_ids": [r["case_id"] for r in rows], "demands": demands, "reply_by": reply_by,
            "issued_by": issued_by, "issued_at": now,
            "markdown": assignment_markdown(sup, office, heading, notice_no, rows, demands, reply_by, now),
            "docx": assignment_docx(sup, office, heading, notice_no, rows, demands, reply_by, now)})
        enqueue(conn, tables.outbox, [ev.SupervisionNoticeIssued(
            occurred_at=now, actor=ev.Actor(kind="supervisor", id=issued_by), notice_no=notice_no,
            notice_type=ASSIGNMENT, year=year, seq=seq, units=units, case_ids=[r["case_id"] for r in rows],
            demands=demands, reply_by=reply_by)], now)
    sup.metrics.notices.labels(ASSIGNMENT).inc()
    return get_notice(sup, notice_id)


def _assignment_row(sup: Supervision, conn, case) -> dict:  # noqa: ANN001 - a connection and a cases row
    received = conn.execute(select(tables.timeline.c.payload).where(
        tables.timeline.c.case_id == case.case_id, tables.timeline.c.type == "CaseReceived").limit(1)).scalar()
    reply = [x for x in case.dues if x["kind"] == "reply" and x["met_at"] is None]
    leader = sup.directory.leaders.get(case.leader)
    return {"case_id": case.case_id, "title": (received or {}).get("title", ""), "unit": case.lead,
            "unit_name": sup.directory.units[case.lead].name,
            "leader": f"{leader.title}{leader.name}" if leader else case.leader,
            "due": datetime.fromisoformat(reply[0]["due_at"]).astimezone(CHINA_TZ).strftime("%Y年%m月%d日")
            if reply else "按规定时限"}


ASSIGNMENT_COLUMNS = ("序号", "案件编号", "信访事项", "主办单位", "包案领导", "办结时限")


def _assignment_cells(rows: list[dict]) -> list[tuple[str, ...]]:
    return [(str(i), r["case_id"], r["title"], r["unit_name"], r["leader"], r["due"]) for i, r in enumerate(rows, 1)]


def assignment_markdown(sup: Supervision, office: str, heading: str, notice_no: str, rows: list[dict], demands: str,
                        reply_by: date, now: datetime) -> str:
    issuer = sup.directory.units[office].name
    lines = [f"# {heading}", "", f"**{notice_no}**", "", "各乡镇、县直各单位：", "",
             f"经排查，现将下列{len(rows)}件重要信访矛盾纠纷交由县级领导包案、责任单位主办。{demands}", "",
             "| " + " | ".join(ASSIGNMENT_COLUMNS) + " |", "|" + "---|" * len(ASSIGNMENT_COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _assignment_cells(rows)]
    lines += ["", f"请各主办单位于{reply_by:%Y年%m月%d日}前将化解情况书面报送{issuer}。", "",
              issuer, f"{now.astimezone(CHINA_TZ):%Y年%m月%d日}"]
    return "\n".join(lines) + "\n"


def assignment_docx(sup: Supervision, office: str, heading: str, notice_no: str, rows: list[dict], demands: str,
                    reply_by: date, now: datetime) -> bytes:
    from docx import Document

    issuer = sup.directory.units[office].name
    doc = Document()
    doc.add_heading(heading, level=1)
    doc.add_paragraph(notice_no)
    doc.add_paragraph("各乡镇、县直各单位：")
    doc.add_paragraph(f"经排查，现将下列{len(rows)}件重要信访矛盾纠纷交由县级领导包案、责任单位主办。{demands}")
    add_table(doc, ASSIGNMENT_COLUMNS, _assignment_cells(rows))
    doc.add_paragraph(f"请各主办单位于{reply_by:%Y年%m月%d日}前将化解情况书面报送{issuer}。")
    doc.add_paragraph(issuer)
    doc.add_paragraph(f"{now.astimezone(CHINA_TZ):%Y年%m月%d日}")
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def _rows(sup: Supervision, overdue: list[dict]) -> list[tuple[str, str, str, str]]:
    names = {code: u.name for code, u in sup.directory.units.items()}
    kinds = {"accept": "受理告知", "sign": "签收", "reply": "办理答复", "review": "复查", "re_review": "复核",
             "agent": "代办"}
    return [(x["case_id"], names.get(x["unit"], x["unit"]), kinds.get(x["due_kind"], x["due_kind"]),
             x["due_at"].astimezone(CHINA_TZ).strftime("%Y年%m月%d日")) for x in overdue]


def render_markdown(sup: Supervision, notice_type: str, notice_no: str, overdue: list[dict], demands: str,
                    reply_by: date, issued_on: date) -> str:
    county = sup.directory.county.name
    lines = [f"# {county}信访局{NOTICE_TYPES[notice_type]}", "", f"**{notice_no}**", "",
             f"下列信访事项已超过办理期限，现予督办。{demands}", "",
             "| 案件编号 | 责任单位 | 超期环节 | 期限 |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(sup, overdue)]
    lines += ["", f"请于{reply_by:%Y年%m月%d日}前将办理情况书面报送县信访局督办科。", "",
              f"{county}信访局", f"{issued_on:%Y年%m月%d日}"]
    return "\n".join(lines) + "\n"


def render_docx(sup: Supervision, notice_type: str, notice_no: str, overdue: list[dict], demands: str,
                reply_by: date) -> bytes:
    from docx import Document

    county = sup.directory.county.name
    doc = Document()
    doc.add_heading(f"{county}信访局{NOTICE_TYPES[notice_type]}", level=1)
    doc.add_paragraph(notice_no)
    doc.add_paragraph(f"下列信访事项已超过办理期限，现予督办。{demands}")
    add_table(doc, ("案件编号", "责任单位", "超期环节", "期限"), _rows(sup, overdue))
    doc.add_paragraph(f"请于{reply_by:%Y年%m月%d日}前将办理情况书面报送县信访局督办科。")
    doc.add_paragraph(f"{county}信访局")
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def get_notice(sup: Supervision, notice_id: str) -> dict:
    n, r = tables.notices, tables.notice_replies
    with sup.uow.engine.connect() as conn:
        row = conn.execute(select(n).where(n.c.notice_id == notice_id)).first()
        if row is None:
            raise NotFound(f"no notice {notice_id}")
        replies = [dict(x._mapping) for x in conn.execute(
            select(r.c.unit, r.c.text, r.c.replied_at).where(r.c.notice_id == notice_id).order_by(r.c.id))]
    awaiting = sorted(set(row.units) - {x["unit"] for x in replies})
    late = sup.clock.now().astimezone(CHINA_TZ).date() > row.reply_by
    return {"notice_id": row.notice_id, "notice_no": row.notice_no, "notice_type": row.notice_type,
            "units": row.units, "case_ids": row.case_ids, "demands": row.demands, "reply_by": row.reply_by,
            "issued_at": row.issued_at, "replies": replies, "awaiting_reply": awaiting,
            "reply_overdue": awaiting if late else []}  # to chase: named, not replied, past reply_by


def list_notices(sup: Supervision) -> list[dict]:
    n = tables.notices
    with sup.uow.engine.connect() as conn:
        ids = list(conn.execute(select(n.c.notice_id).order_by(n.c.issued_at)).scalars())
    return [get_notice(sup, i) for i in ids]


def notice_document(sup: Supervision, notice_id: str, kind: str) -> bytes | str:
    n = tables.notices
    with sup.uow.engine.connect() as conn:
        row = conn.execute(select(n.c.markdown, n.c.docx).where(n.c.notice_id == notice_id)).first()
    if row is None:
        raise NotFound(f"no notice {notice_id}")
    return row.docx if kind == "docx" else row.markdown


def record_reply(sup: Supervision, notice_id: str, unit: str, text: str) -> dict:
    notice = get_notice(sup, notice_id)
    if unit not in notice["units"]:
        raise InvalidInput([FieldError("unit", f"{unit} is not named in {notice['notice_no']}",
                                       valid=notice["units"])])
    with sup.uow.begin() as conn:
        conn.execute(tables.notice_replies.insert(), {"notice_id": notice_id, "unit": unit, "text": text,
                                                      "replied_at": sup.clock.now()})
    return get_notice(sup, notice_id)
