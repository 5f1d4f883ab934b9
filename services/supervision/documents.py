"""书面告知: the written notices the 信访工作条例 (2022) requires of a case's steps, issued once per event
when supervision first applies it — 受理告知书 / 不予受理告知书 (Art. 23), 延期告知书 (Art. 34), 处理意见书
(Art. 34), 复查意见书 (Art. 35) and 复核意见书 (Art. 36).

Each is rendered once from the same paragraphs as plain text (what the resident's progress lookup
shows) and as DOCX (printed, sealed and sent), and stored in ``documents``. A notice addresses the
resident by name only: never the ID number or the phone.
"""
from __future__ import annotations

import io
from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from services.supervision import tables
from shared import events as ev
from shared.db import insert_ignore
from shared.lifecycle import CaseState
from shared.policy import CHINA_TZ

WRITTEN = (ev.AcceptanceDecided, ev.ExtensionDecided, ev.CaseReplied)

TITLES = {
    "accept_notice": "受理告知书",
    "not_accept_notice": "不予受理告知书",
    "extension_notice": "延期告知书",
    "opinion": "处理意见书",
    "review_opinion": "复查意见书",
    "re_review_opinion": "复核意见书",
}
RESULTS = {"resolved": "已解决", "mediated": "达成调解协议", "partly_resolved": "部分解决", "not_supported": "不予支持", "explained": "解释说明"}
OUTCOMES = {"upheld": "维持", "changed": "变更", "revoked": "撤销"}
# A reviewing body the directory does not name is still named in words: the resident must know where to go.
SUPERIOR = "上一级行政机关"


def kind_of(state: CaseState, event: ev.Event) -> str | None:
    """The notice an applied event produces, or None: a forwarded acceptance is an objection to the
    bureau and a refused extension changes no date the resident was told, so neither is written."""
    if isinstance(event, ev.AcceptanceDecided):
        return {"accepted": "accept_notice", "not_accepted": "not_accept_notice"}.get(event.decision)
    if isinstance(event, ev.ExtensionDecided):
        return "extension_notice" if event.approved else None
    if isinstance(event, ev.CaseReplied):
        return {"review": "review_opinion", "re_review": "re_review_opinion"}.get(state.opinion_level, "opinion")
    return None


def issue(sup, conn: Connection, state: CaseState, event: ev.Event, now: datetime) -> None:  # noqa: ANN001
    """Render and store the notice of ``event`` (``state``: the case up to and including it). Dated
    the day the unit decided (the event's time), not the day supervision saw it: it is that unit's
    document. Once per event: a redelivery or a re-fold inserts nothing."""
    kind = kind_of(state, event)
    if kind is None:
        return
    lines = _body(sup, conn, kind, state, event)
    unit = _unit_name(sup, event.unit)
    paragraphs = [f"信访件编号：{event.case_id}", f"{_resident_name(conn, event.case_id)}：", *lines,
                  unit, _day(event.occurred_at)]
    insert_ignore(conn, tables.documents, [{
        "doc_id": f"{kind}-{event.event_id}"[:80], "case_id": event.case_id, "event_id": event.event_id,
        "kind": kind, "title": TITLES[kind], "unit": event.unit, "issued_at": event.occurred_at,
        # The Word file is drawn from the text when it is fetched (≈ 20 ms a notice: most of the time
        # of an event that writes one); rows of earlier versions keep the one they stored.
        "text": "\n".join([TITLES[kind], *paragraphs]) + "\n", "docx": b""}])


def _body(sup, conn: Connection, kind: str, s: CaseState, e: ev.Event) -> list[str]:  # noqa: ANN001
    """The notice's own paragraphs, each citing the article it rests on."""
    matter = f"您{_received(conn, e.case_id, s)}反映的事项"
    if kind == "accept_notice":
        return [f"{matter}，经审查属于本机关职权范围。根据《信访工作条例》第二十三条的规定，本机关决定予以受理。",
                f"本机关将依法办理，并{_due_by(s, e)}向您出具书面处理意见。"]
    if kind == "not_accept_notice":
        lines = [f"{matter}，经审查，根据《信访工作条例》第二十三条的规定，本机关决定不予受理。",
                 f"不予受理的理由：{e.reason.strip()}"]
        if e.legal_path:
            path = ev.LEGAL_PATHS[e.legal_path]  # "通过其他法定途径" needs its verb
            lines.append(f"该事项依法应当通过法定途径解决，请您依法{path}{'解决' if path.endswith('途径') else ''}。")
        return lines
    if kind == "extension_notice":
        return [f"{matter}，因{_extension_reason(conn, e)}，情况复杂，经本机关负责人批准，根据《信访工作条例》"
                f"第三十四条的规定，办理期限延长{e.days}日。",
                f"本机关将{_due_by(s, e)}向您出具书面处理意见。"]
    days = sup.policy.review_request_days
    if kind == "opinion":
        body = sup.directory.reviewer(e.unit, "review")
        return [f"{matter}，本机关已依法办理完毕，根据《信访工作条例》第三十四条的规定，出具处理意见如下。",
                *_opinion(e, "处理意见"),
                f"您如对本处理意见不服，可以自收到本意见书之日起{days}日内，向{_unit_name(sup, body, SUPERIOR)}"
                "请求复查（《信访工作条例》第三十五条）。"]
    if kind == "review_opinion":
        body = sup.directory.reviewer(s.lead, "re_review") if s.lead else None
        return [f"您对{_unit_name(sup, s.lead)}处理意见的复查请求，本机关已依照《信访工作条例》第三十五条的规定进行复查。"
                f"{_outcome(e, '经复查', '原处理意见')}", *_opinion(e, "复查意见"),
                f"您如对本复查意见不服，可以自收到本意见书之日起{days}日内，向{_unit_name(sup, body, SUPERIOR)}"
                "请求复核（《信访工作条例》第三十六条）。"]
    reviewed_by = _unit_name(sup, s.reviewers.get("review"))
    return [f"您对{reviewed_by}复查意见的复核请求，本机关已依照《信访工作条例》第三十六条的规定进行复核。"
            f"{_outcome(e, '经复核', '复查意见')}", *_opinion(e, "复核意见"),
            "本复核意见为最终意见。您对本复核意见不服，仍以同一事实和理由提出信访请求的，不再受理"
            "（《信访工作条例》第三十六条）。"]


def _opinion(e: ev.CaseReplied, label: str) -> list[str]:
    return [f"办理结果：{RESULTS.get(e.result, e.result)}", f"{label}：{e.text.strip()}"]


def _outcome(e: ev.CaseReplied, how: str, reviewed: str) -> str:
    """What the reviewing body did with the opinion it reviewed: 经复查，维持原处理意见。"""
    return f"{how}，{OUTCOMES[e.review_outcome]}{reviewed}。" if e.review_outcome else ""


def _docx(title: str, paragraphs: list[str]) -> bytes:
    from docx import Document  # as notices.py: only the services that render load python-docx
    from docx.enum.text import WD_ALIGN_PARAGRAPH

    doc = Document()
    doc.add_heading(title, level=1).alignment = WD_ALIGN_PARAGRAPH.CENTER
    for text in paragraphs[:-2]:
        doc.add_paragraph(text)
    for text in paragraphs[-2:]:  # the issuing unit and the date, at the foot on the right
        doc.add_paragraph(text).alignment = WD_ALIGN_PARAGRAPH.RIGHT
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def _day(at: datetime) -> str:
    """A date as written on a notice, in county time: 2026年05月18日."""
    return at.astimezone(CHINA_TZ).strftime("%Y年%m月%d日")


def _due_by(s: CaseState, e: ev.Event) -> str:
    """By when the opinion is due, 于2026年07月17日前: a due date is the END of its last day (midnight,
    county time), so the day the resident reads is the one before that midnight."""
    due = s.open_due("reply")
    at = due.due_at if due else getattr(e, "new_due_at", None)
    return f"于{_day(at - timedelta(seconds=1))}前" if at else "在法定期限内"


def _unit_name(sup, code: str | None, default: str = "") -> str:  # noqa: ANN001
    unit = sup.directory.units.get(code) if code else None
    return unit.name if unit else (code or default)


def _received(conn: Connection, case_id: str, s: CaseState) -> str:
    """Which matter the notice answers: 于2026年05月01日就“<the case's title>”, as the receipt says it."""
    receipt = _payload(conn, case_id, "CaseReceived") or {}
    when = f"于{_day(s.received_at)}" if s.received_at else ""
    return when + (f"就“{receipt['title']}”" if receipt.get("title") else "")


def _resident_name(conn: Connection, case_id: str) -> str:
    receipt = _payload(conn, case_id, "CaseReceived") or {}
    return (receipt.get("resident") or {}).get("name") or "信访人"


def _extension_reason(conn: Connection, e: ev.ExtensionDecided) -> str:
    """Why the time is extended: the unit's request says it; the head's decision may only say yes."""
    request = _payload(conn, e.case_id, "ExtensionRequested", first=True) or {}  # one extension at most
    return (request.get("reason") or e.reason or "办理需要").strip().rstrip("。")


def _payload(conn: Connection, case_id: str, event_type: str, first: bool = False) -> dict | None:
    """The latest (or ``first``) event of a type on the case's timeline that the fold did not refuse."""
    t = tables.timeline
    when = t.c.placed_at.asc() if first else t.c.placed_at.desc()
    return conn.execute(select(t.c.payload).where(t.c.case_id == case_id, t.c.type == event_type,
                                                  t.c.status != "refused").order_by(when).limit(1)).scalar()


# --- queries ------------------------------------------------------------------------------------

def for_case(conn: Connection, case_id: str) -> list[dict]:
    """The case's notices in the order they were issued."""
    d = tables.documents
    rows = conn.execute(select(d.c.doc_id, d.c.kind, d.c.title, d.c.unit, d.c.issued_at, d.c.text)
                        .where(d.c.case_id == case_id)).all()
    order = list(TITLES)  # same instant: the acceptance before the extension before the opinion
    return [dict(r._mapping) for r in sorted(rows, key=lambda r: (r.issued_at, order.index(r.kind)))]


def document(conn: Connection, case_id: str, doc_id: str, fmt: str) -> bytes | str | None:
    """One notice as text (``txt``) or Word (``docx``); None when the case has no such notice."""
    if fmt not in ("txt", "docx"):
        raise ValueError(f"a notice is txt or docx, not {fmt!r}")
    d = tables.documents
    row = conn.execute(select(d.c.text, d.c.docx).where(d.c.case_id == case_id, d.c.doc_id == doc_id)).first()
    if row is None:
        return None
    if fmt == "txt":
        return row.text
    title, *paragraphs = row.text.rstrip("\n").split("\n")
    return bytes(row.docx) or _docx(title, paragraphs)
