"""信访事项登记表: the reception room's registration form of a case, printed while the resident waits."""
from __future__ import annotations

from services.intake.service import Intake, get_case
from shared.forms import CHANNEL_NAMES, form_docx
from shared.policy import CHINA_TZ


def registration(intake: Intake, number: str, agent_id: str | None = None) -> bytes:
    """The form, from the stored case (the resident's ID masked, as everywhere outside intake's table)."""
    c = get_case(intake, number, agent_id)
    d = intake.directory
    township = d.units[c.township].name if c.township in d.units else c.township
    village = next((v.name for v in d.units[c.township].villages if v.code == c.village), "") \
        if c.township in d.units else ""
    flags = [name for flag, name in (("collective", "集体访"), ("escalated", "越级访"), ("backlog", "积案"),
                                     ("repeat", "重复访"), ("special_period", "敏感节点")) if getattr(c.flags, flag)]
    category = d.categories[c.category].name if c.category in d.categories else "待分类"
    accused = "、".join(d.units[u].name for u in c.accused_units if u in d.units)
    fields = [("登记编号", c.case_number), ("登记时间", f"{c.received_at.astimezone(CHINA_TZ):%Y年%m月%d日 %H:%M}"),
              ("信访形式", CHANNEL_NAMES.get(c.channel, c.channel)), ("信访人姓名", c.resident_name),
              ("身份证号码", c.resident_masked_id or ""), ("联系电话", c.resident_phone or ""),
              ("人数", str(c.people_count)), ("所在乡镇、村", f"{township}{village}"), ("问题类别", category),
              ("事由", c.title), ("信访内容", c.content), ("信访类型", "、".join(flags) or "一般"),
              ("被反映单位", accused or "无"),
              ("重复信访", f"是，前案 {c.repeat_of}" if c.repeat_of else "否")]
    if c.referral:
        fields.append(("交办来文", f"{c.referral.get('from_office') or ''} {c.referral.get('doc_no') or ''}".strip()))
    return form_docx(f"{d.county.name}信访事项登记表", fields, f"编号：{c.case_number}",
                     ("登记人：____________", "信访人签字：____________"))
