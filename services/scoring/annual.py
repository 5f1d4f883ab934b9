"""The year's report in the register of a county 信访局's annual summary (信访工作总结): the title with
the issuing body; 一、主要工作, a numbered part per practice, each weaving in its figures; 二、存在的问题
and 三、下一步工作打算, drawn from the figures; the scorecards and the accountability list as
attachments. Unit and category names, never codes; no English; percentages half-up to one decimal; a
rate with no case says so in words. Markdown and DOCX come from the same paragraphs."""
from __future__ import annotations

import io

from services.scoring.reports import BREACH_NAMES, by_cadre_sentence, percent, period_label
from shared.forms import add_table

NUMERALS = "一二三四五六七八九十"


def _rate(value: float | None, what: str = "办结率") -> str:
    return f"{what}{percent(value)}%" if value is not None else f"无案件，{what}无从计算"


def _units(cards: list[dict], limit: int = 3) -> str:
    return "、".join(c["unit_name"] for c in cards[:limit])


def main_work(body: dict) -> list[tuple[str, list[str]]]:
    """一、主要工作: (the part's heading, its paragraphs)."""
    f, ch = body["figures"], body["channels"]
    w, on, dg, nv, sc = ch["walk_in"], ch["online"], ch["delegated"], ch["night_visit"], ch["screening"]
    drives = sc["drives"]
    disputes, important = sum(d["disputes"] for d in drives), sum(d["important"] for d in drives)
    special = [d for d in drives if d.get("kind") == "special"]
    notices = body.get("notices") or {}
    handed = notices.get("assignment") or []
    by_notice = (f"，{'分' + str(len(handed)) + '批' if len(handed) > 1 else ''}以{_numbers(handed)}交办通知"
                 "交办包案领导和主办单位" if handed else "")
    parts = [
        ("坚持源头预防，扎实开展矛盾纠纷排查和领导包案", [
            f"全年组织开展矛盾纠纷排查{len(drives)}次，其中敏感节点专项排查{len(special)}次，共排查出矛盾纠纷{disputes}件，"
            f"对其中{important}件重要信访矛盾纠纷实行县级领导包案{by_notice}，明确化解时限，跟踪督办到位。"
            if drives else "本期未组织矛盾纠纷集中排查。"]),
        ("规范受理办理，发挥矛盾纠纷受理室作用", [
            f"全年共受理信访事项{f['received']}件，办结{f['closed']}件，{_rate(f['closure_rate'])}，其中出具处理意见"
            f"{f['closed'] - f['not_accepted']}件、不予受理{f['not_accepted']}件；按期办结{f['closed_on_time']}件，"
            f"{_rate(f['on_time_closure_rate'], '按期办结率')}。",
            f"矛盾纠纷受理室共受理各类矛盾纠纷{w['received']}件，办结{w['closed']}件，{_rate(w['closure_rate'], '案件办结率')}。"]),
        ("拓宽信访渠道，方便群众反映诉求", [
            f"共受理网上信访{on['received']}件，{_rate(on['closure_rate'])}。",
            _network(body) + f"信访代办员为群众代办事项{dg['received']}件，涉及代办员{dg['agents']}名、"
            f"代办点{dg['agencies']}个，{_rate(dg['closure_rate'])}。",
            f"坚持驻村夜访，共走访群众{nv['households_visited']}户次，收集问题{nv['problems'] + nv.get('solved_on_spot', 0)}件，"
            f"解决{nv['solved'] + nv.get('solved_on_spot', 0)}件，收集意见建议{nv.get('suggestions', 0)}条。"
            + by_cadre_sentence(nv.get("by_cadre", {}))]),
        ("落实目标管理责任制，严格责任追究", [_responsibility(body)]),
    ]
    return parts


def _numbers(nos: list[str]) -> str:
    """青信联办发〔2026〕1号至4号 for numbers of one prefix and year; else each, joined."""
    if len(nos) == 1:
        return nos[0]
    head = nos[0].rsplit("〕", 1)[0] + "〕"
    if all(n.startswith(head) for n in nos):
        return f"{nos[0]}至{nos[-1][len(head):]}"
    return "、".join(nos)


def _network(body: dict) -> str:
    net = body.get("network") or {}
    return f"全县建立信访代办点{net['agencies']}个，配备代办员{net['agents']}名。" if net.get("agencies") else ""


def _responsibility(body: dict) -> str:
    cards = [c for group in ("townships", "departments") for c in body["scorecards"].get(group, [])]
    banded = [c for c in cards if c.get("band")]
    best = [c for c in banded if c.get("outcome") == "reward"]
    worst = [c for c in banded if c.get("outcome") == "penalty"]
    f = body["figures"]
    unbanded = len(cards) - len(banded)
    text = (f"按照属地管理、归口办理、谁主管谁负责的原则，对{len(banded)}个乡镇和部门实行目标管理考核"
            + (f"（受理信访事项过少的{unbanded}个单位不评定等次）。" if unbanded else "。"))
    if best:
        text += f"{_units(best, 5)}等{len(best)}个单位考核优秀，予以{best[0].get('consequence') or '表扬'}。"
    vetoed = [c for c in worst if c.get("vetoed_by")]
    worst = [c for c in worst if not c.get("vetoed_by")]
    if worst:
        text += f"{_units(worst, 5)}等{len(worst)}个单位考核不合格，予以{worst[0].get('consequence') or '批评'}。"
    if vetoed:
        text += f"{_units(vetoed, 5)}发生群体性事件，年度考核实行{vetoed[0]['consequence']}。"
    supervision = sum((body.get("notices") or {}).get("supervision", {}).values())
    meetings = body.get("meetings") or {}
    if supervision:
        text += f"对临期、超期案件下发督办通知{supervision}份。"
    if meetings:
        text += (f"召开信访工作联席会议{sum(meetings.values())}次，研究解决突出问题"
                 + (f"和群体性事件{meetings['mass_incident']}起" if meetings.get("mass_incident") else "") + "。")
    people = {(b["unit"], b["principal_leader"]["name"]) for b in body["accountability"]}
    text += (f"全年超期件{f['ever_overdue']}件，超期后升级督办{f['escalated_overdue']}件；对{len(people)}个单位的"
             f"责任人启动责任追究程序。" if body["accountability"] else f"全年超期件{f['ever_overdue']}件，未发生需责任追究的情形。")
    return text


def problems(body: dict) -> list[str]:
    """二、存在的问题, from the figures: the slowest units, the most frequent matters, lateness."""
    out = []
    cards = [c for group in ("townships", "departments") for c in body["scorecards"].get(group, [])
             if c.get("band") and c["figures"].get("closure_rate") is not None]
    overall = body["figures"]["closure_rate"]
    slow = sorted((c for c in cards if overall is not None and c["figures"]["closure_rate"] < overall),
                  key=lambda c: (c["figures"]["closure_rate"], c["unit"]))[:3]
    if slow:  # below the county's own rate, never a unit that concluded everything
        out.append("部分单位办理进度偏慢，" + "、".join(
            f"{c['unit_name']}{_rate(c['figures']['closure_rate'])}" for c in slow)
            + f"，低于全县{percent(overall)}%的平均水平。")
    top = [c for c in body.get("categories", []) if c["received"] and c["code"] != "other"][:3]
    if top:
        out.append("矛盾纠纷集中在" + "、".join(f"{c['name']}（{c['received']}件）" for c in top) + "等方面，源头治理仍需加强。")
    f = body["figures"]
    if f["ever_overdue"]:
        out.append(f"仍有{f['ever_overdue']}件信访事项超过办理期限，其中{f['escalated_overdue']}件经升级督办，"
                   f"按期办结率为{percent(f['on_time_closure_rate'])}%，办理时效有待提高。")
    if f["reviews"]:
        out.append(f"群众对处理意见不满意申请复查{f['reviews']}件、复核{f['re_reviews']}件，"
                   f"其中变更或撤销原处理意见{f['reviews_changed']}件，办理质量仍需提升。")
    return out or ["本期各项工作总体平稳，未发现突出问题。"]


def next_steps(body: dict) -> list[str]:
    """三、下一步工作打算, answering the problems."""
    top = [c["name"] for c in body.get("categories", []) if c["received"] and c["code"] != "other"][:2]
    out = ["坚持和发展新时代“枫桥经验”，常态化开展矛盾纠纷排查，在重要节点前组织专项排查，"
           + (f"重点关注{'、'.join(top)}等领域，" if top else "") + "做到早发现、早化解。",
           "严格落实《信访工作条例》规定的受理、办理、答复时限，对临近期限和超期案件及时催办、督办，提高按期办结率。",
           "完善目标管理责任制考核，对考核靠后和发生责任追究情形的单位加强督导，落实领导包案和联席会议议定事项。",
           "拓展网上信访、信访代办和驻村夜访，把矛盾纠纷化解在基层、化解在萌芽状态。"]
    return out


def paragraphs(body: dict) -> list[tuple[str, str]]:
    """(kind, text): title, issuer, heading, subheading or text, in order."""
    out = [("title", f"{body.get('issuer', '')}{period_label(body['period'])}信访工作总结"),
           ("issuer", body.get("issuer", "")), ("heading", "一、主要工作")]
    out.append(("text", f"{period_label(body['period'])}，在县委、县政府的坚强领导下，{body.get('county', '')}"
                        f"信访工作坚持以人民为中心，依法规范受理办理群众信访事项，各项工作取得新成效。"))
    for i, (heading, texts) in enumerate(main_work(body)):
        out.append(("subheading", f"（{NUMERALS[i]}）{heading}"))
        out += [("text", t) for t in texts]
    out.append(("heading", "二、存在的问题"))
    out += [("text", f"{i}. {t}") for i, t in enumerate(problems(body), 1)]
    out.append(("heading", "三、下一步工作打算"))
    out += [("text", f"{i}. {t}") for i, t in enumerate(next_steps(body), 1)]
    return out


def scorecard_rows(body: dict) -> list[tuple[str, ...]]:
    rows = []
    for group, title in (("townships", "乡镇"), ("departments", "部门")):
        for c in body["scorecards"].get(group, []):
            rows.append((title, c["unit_name"], str(c["rank"] or "—"), str(c["score"]), c["band"] or "不评定",
                         c.get("consequence") or "—"))
    return rows


def accountability_rows(body: dict) -> list[tuple[str, ...]]:
    return [(b["unit_name"], BREACH_NAMES.get(b["breach"], "其他"), b["principal_leader"]["name"],
             b["leader_in_charge"]["name"], b.get("consequence") or "—", f"{len(b['cases'])}件")
            for b in body["accountability"]]


SCORE_HEADER = ("类别", "单位", "名次", "得分", "等次", "奖惩")
ACCOUNT_HEADER = ("单位", "情形", "第一责任人", "直接责任人", "处理", "涉及案件")


def to_markdown(body: dict) -> str:
    lines = []
    for kind, text in paragraphs(body):
        lines += {"title": [f"# {text}", ""], "issuer": [f"**{text}**", ""], "heading": [f"## {text}", ""],
                  "subheading": [f"### {text}", ""], "text": [text, ""]}[kind]
    for title, header, rows in (("附件1：目标管理考核得分表", SCORE_HEADER, scorecard_rows(body)),
                                ("附件2：责任追究名单", ACCOUNT_HEADER, accountability_rows(body))):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] or ["| " + " | ".join(["—"] * len(header)) + " |"]
        lines.append("")
    lines.append("（百分比四舍五入保留一位小数。）")
    return "\n".join(lines) + "\n"


def to_docx(body: dict) -> bytes:
    from docx import Document

    doc = Document()
    for kind, text in paragraphs(body):
        if kind == "title":
            doc.add_heading(text, level=0)
        elif kind == "heading":
            doc.add_heading(text, level=1)
        elif kind == "subheading":
            doc.add_heading(text, level=2)
        else:
            doc.add_paragraph(text)
    for title, header, rows in (("附件1：目标管理考核得分表", SCORE_HEADER, scorecard_rows(body)),
                                ("附件2：责任追究名单", ACCOUNT_HEADER, accountability_rows(body))):
        doc.add_heading(title, level=1)
        add_table(doc, header, rows, grid=True)
    doc.add_paragraph("（百分比四舍五入保留一位小数。）")
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()
