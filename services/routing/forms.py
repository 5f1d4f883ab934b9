"""Routing's forms: 受理分流指派通知单 (the slip that hands a case to its units) and 大接访交办表 (the
cases of a leaders' reception day, each with the units and leader it was handed to)."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import select

from services.routing import tables
from services.routing.service import Routing, why
from shared.forms import CHANNEL_NAMES, form_docx, table_xlsx
from shared.policy import CHINA_TZ


def _leader(routing: Routing, code: str | None) -> str:
    leader = routing.directory.leaders.get(code) if code else None
    return f"{leader.title}{leader.name}" if leader else "—"


def _name(routing: Routing, code: str) -> str:
    return routing.directory.units[code].name if code in routing.directory.units else code


def assignment_slip(routing: Routing, case_id: str, unit: str | None = None, leader: str | None = None) -> bytes:
    """受理分流指派通知单 of a case's current assignment: what the units see of ``why`` (a unit token,
    only a case it holds or held)."""
    answer = why(routing, case_id, unit=unit, leader=leader)
    with routing.uow.engine.connect() as conn:
        case = conn.execute(select(tables.cases).where(tables.cases.c.case_id == case_id)).first()
    active = [a for a in answer["assignments"] if a["active"] and a["role"] in ("lead", "co")]
    lead = next((a for a in active if a["role"] == "lead"), None)
    co = [a["unit"] for a in active if a["role"] == "co"]
    category = routing.directory.categories.get(lead["category"]) if lead and lead["category"] else None
    how = {"triage": "受理室人工分流", "repeat": "重复信访，交原办理单位", "misconduct": "检举控告，交纪委监委"}
    fields = [("案件编号", case_id), ("事由", case.brief["title"]),
              ("信访形式", CHANNEL_NAMES.get(case.channel, case.channel)),
              ("问题类别", category.name if category else "待分类"),
              ("主办单位", _name(routing, lead["unit"]) if lead else "待分流"),
              ("协办单位", "、".join(_name(routing, u) for u in co) or "无"),
              ("包案领导", _leader(routing, answer["leader"])),
              ("分流依据", (how.get(lead["rule_id"]) or f"分流规则 {lead['rule_id']}") if lead else "—"),
              ("指派时间", f"{lead['assigned_at'].astimezone(CHINA_TZ):%Y年%m月%d日 %H:%M}" if lead else "—"),
              ("办理要求", "请按《信访工作条例》规定的时限签收、作出受理决定并出具书面处理意见，"
                          "对不属于本单位职责的，在签收时限内提出异议")]
    return form_docx(f"{routing.directory.county.name}信访事项受理分流指派通知单", fields, f"编号：{case_id}",
                     (f"{routing.directory.county.name}信访局（盖章）",))


RECEPTION_COLUMNS = ("序号", "案件编号", "信访人", "事由", "主办单位", "协办单位", "包案领导", "交办时间")


def reception_day(routing: Routing, day: date, leader: str | None = None) -> bytes:
    """大接访交办表: the cases received on ``day`` (county date) at the reception room, each with the
    units and the leader it was handed to; ``leader``: only the cases that leader took on."""
    start = datetime.combine(day, time(), CHINA_TZ)
    c, a, lc = tables.cases, tables.assignments, tables.leader_cases
    with routing.uow.engine.connect() as conn:
        cases = conn.execute(select(c).where(c.c.received_at >= start, c.c.received_at < start + timedelta(days=1),
                                             c.c.channel == "walk_in").order_by(c.c.case_id)).all()
        rows = []
        for case in cases:
            led_by = conn.execute(select(lc.c.leader_id).where(lc.c.case_id == case.case_id)).scalar()
            if leader is not None and led_by != leader:
                continue
            held = conn.execute(select(a.c.unit, a.c.role, a.c.assigned_at).where(
                a.c.case_id == case.case_id, a.c.active, a.c.role.in_(("lead", "co"))).order_by(a.c.id)).all()
            lead = next((h for h in held if h.role == "lead"), None)
            rows.append((len(rows) + 1, case.case_id, case.brief.get("resident_name") or "", case.brief["title"],
                         _name(routing, lead.unit) if lead else "待分流",
                         "、".join(_name(routing, h.unit) for h in held if h.role == "co") or "无",
                         _leader(routing, led_by),
                         f"{lead.assigned_at.astimezone(CHINA_TZ):%Y-%m-%d %H:%M}" if lead else ""))
    title = f"{routing.directory.county.name}领导大接访交办表（{day:%Y年%m月%d日}）"
    return table_xlsx(title, RECEPTION_COLUMNS, rows, sheet="交办表")
