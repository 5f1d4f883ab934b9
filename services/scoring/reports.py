"""The bureau's reports from one report body: per-channel figures, the narrative in Chinese,
CSV and XLSX. Every number in them comes from the same JSON."""
from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from services.scoring import domain
from shared.directory import Directory
from shared.forms import CHANNEL_NAMES
from shared.policy import CHINA_TZ


def channel_figures(facts: list[dict], visits: list[dict], drives: dict[str, dict], start: datetime,
                    end: datetime) -> dict:
    out = {}
    for channel in CHANNEL_NAMES:
        fs = [f for f in facts if f.channel == channel]
        closed = sum(domain.is_closed(f) for f in fs)
        out[channel] = {"received": len(fs), "closed": closed, "closure_rate": domain.rate(closed, len(fs))}
    delegated = [f for f in facts if f.channel == "delegated"]
    out["delegated"] |= {"agents": len({f.agent_id for f in delegated if f.agent_id}),
                         "agencies": len({f.agency_id for f in delegated if f.agency_id})}
    first, last = start.astimezone(CHINA_TZ).date(), end.astimezone(CHINA_TZ).date()
    in_period = [v for v in visits if first <= _as_date(v["visited_on"]) < last]
    out["night_visit"] |= {"visits": len(in_period), "households_visited": sum(v["households_visited"] for v in in_period),
                           "problems": out["night_visit"]["received"], "solved": out["night_visit"]["closed"],
                           "solved_on_spot": sum(v.get("solved_on_spot") or 0 for v in in_period),
                           "suggestions": sum(v.get("suggestions") or 0 for v in in_period),
                           "by_cadre": night_visits_by_cadre(facts, in_period)}
    found = {}
    for f in facts:
        if f.drive_id:
            d = found.setdefault(f.drive_id, {"drive_id": f.drive_id, "disputes": 0, "important": 0,
                                                 **{k: drives.get(f.drive_id, {}).get(k) for k in ("name", "kind")}})
            d["disputes"] += 1
            d["important"] += f.leader_id is not None
    out["screening"] |= {"drives": sorted(found.values(), key=lambda d: d["drive_id"])}
    return out


CADRE_KINDS = {"township_leader": "乡镇领导", "station_staff": "驻站人员", "unrecorded": "未注明"}


def night_visits_by_cadre(facts: list, visits: list[dict]) -> dict:
    """Night visits as the bureau reports them, by who visited: visits, households (户次), problems
    collected (the cases made of them and those solved on the spot), solved (the cases concluded and
    those solved on the spot), suggestions."""
    cases = {}
    for f in facts:
        if f.visit_id:
            cases.setdefault(f.visit_id, []).append(f)
    out = {}
    for kind in CADRE_KINDS:
        mine = [v for v in visits if (v.get("cadre_kind") or "unrecorded") == kind]
        if not mine:
            continue
        made = [f for v in mine for f in cases.get(v["visit_id"], [])]
        on_spot = sum(v.get("solved_on_spot") or 0 for v in mine)
        out[kind] = {"visits": len(mine), "households_visited": sum(v["households_visited"] for v in mine),
                     "problems": len(made) + on_spot, "solved": sum(domain.is_closed(f) for f in made) + on_spot,
                     "suggestions": sum(v.get("suggestions") or 0 for v in mine)}
    return out


def by_cadre_sentence(by_cadre: dict) -> str:
    """其中乡镇领导夜访…；驻站人员夜访…。 (visits whose cadre was not recorded are not split out)"""
    said = [f"{CADRE_KINDS[k]}夜访{x['households_visited']}户次，收集问题{x['problems']}件，解决{x['solved']}件，"
            f"收集意见建议{x['suggestions']}条" for k, x in by_cadre.items() if k != "unrecorded"]
    return f"其中{'；'.join(said)}。" if said else ""


def category_figures(directory: Directory, facts: list) -> list[dict]:
    """Cases received and concluded per category, most frequent first (the report's 问题类别)."""
    out: dict[str, dict] = {}
    for f in facts:
        if not domain.is_received(f):
            continue
        code = f.category or "other"
        row = out.setdefault(code, {"code": code, "name": directory.categories[code].name
                                    if code in directory.categories else code, "received": 0, "closed": 0})
        row["received"] += 1
        row["closed"] += domain.is_closed(f)
    return sorted(out.values(), key=lambda r: (-r["received"], r["code"]))


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def percent(value: float | None) -> str:
    """A share as a percentage, rounded half-up to one decimal (91.25% → 91.3)."""
    if value is None:
        return "—"
    return str(Decimal(str(value * 100)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def period_label(period: str) -> str:
    if re.fullmatch(r"\d{4}", period):
        return f"{period}年"
    if m := re.fullmatch(r"(\d{4})-Q(\d)", period):
        return f"{m[1]}年第{m[2]}季度"
    if m := re.fullmatch(r"(\d{4})-(\d{2})", period):
        return f"{m[1]}年{int(m[2])}月"
    return period.replace("..", "至")


def narrative(directory: Directory, body: dict) -> str:
    """In the style of a bureau's annual report, from the figures of ``body``."""
    f, ch = body["figures"], body["channels"]
    w, on, dg, nv, sc = ch["walk_in"], ch["online"], ch["delegated"], ch["night_visit"], ch["screening"]
    drives = sc["drives"]
    parts = [
        f"{period_label(body['period'])}，{directory.county.name}共受理信访事项{f['received']}件，办结{f['closed']}件，"
        f"办结率达到{percent(f['closure_rate'])}%，其中出具处理意见{f['closed'] - f['not_accepted']}件、"
        f"不予受理{f['not_accepted']}件。",
        f"矛盾纠纷受理室共受理各类矛盾纠纷{w['received']}件，办结{w['closed']}件，案件办结率达到{percent(w['closure_rate'])}%。",
        f"共受理网上信访{on['received']}件，办结率达到{percent(on['closure_rate'])}%。",
        f"信访代办员代办事项{dg['received']}件，涉及代办员{dg['agents']}名、代办点{dg['agencies']}个，"
        f"办结率达到{percent(dg['closure_rate'])}%。",
        f"开展驻村夜访{nv['visits']}次，走访群众{nv['households_visited']}户，收集问题{nv['problems']}件，"
        f"解决{nv['solved']}件。",
        by_cadre_sentence(nv["by_cadre"]),
        f"开展矛盾纠纷排查{len(drives)}次，排查出矛盾纠纷{sum(d['disputes'] for d in drives)}件，"
        f"其中确定为重要信访件并实行领导包案{sum(d['important'] for d in drives)}件。",
        f"超期件{f['ever_overdue']}件，群众满意率{percent(f['satisfaction_rate'])}%，复查{f['reviews']}件、"
        f"复核{f['re_reviews']}件，复查复核变更或撤销原处理意见{f['reviews_changed']}件。",
        f"责任单位提出异议{f['objections']}件，经审核同意退回{f['returns']}件。",
    ]
    return "".join(parts) + "（百分比四舍五入保留一位小数。）"


def to_csv(body: dict) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["section", "key", "metric", "value"])
    for metric, value in body["figures"].items():
        w.writerow(["figures", "all", metric, value])
    for channel, figs in body["channels"].items():
        for metric, value in figs.items():
            if metric != "drives":
                w.writerow(["channel", channel, metric, value])
    for group, cards in body["scorecards"].items():
        for card in cards:
            w.writerow(["scorecard", card["unit"], "score", card["score"]])
            w.writerow(["scorecard", card["unit"], f"rank_among_{group}", card["rank"]])
            w.writerow(["scorecard", card["unit"], "band", card["band"]])
    for b in body["accountability"]:
        w.writerow(["accountability", b["unit"], b["breach"], " ".join(b["cases"])])
    return "\ufeff" + out.getvalue()  # the BOM: Excel then reads the file as UTF-8, not as GBK


def to_xlsx(body: dict) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "概况"
    ws.append(["指标 metric", "数值 value"])
    for metric, value in body["figures"].items():
        ws.append([metric, value])
    ch = wb.create_sheet("渠道")
    ch.append(["渠道 channel", "受理 received", "办结 closed", "办结率 closure_rate"])
    for channel, figs in body["channels"].items():
        ch.append([channel, figs["received"], figs["closed"], figs["closure_rate"]])
    sc = wb.create_sheet("考核")
    sc.append(["单位 unit", "类别 group", "得分 score", "名次 rank", "等次 band", "奖惩 consequence",
               "扣分原因 deductions", "加分原因 additions"])
    for group, cards in body["scorecards"].items():
        for c in cards:
            sc.append([c.get("unit_name", c["unit"]), group, c["score"], c["rank"], c["band"] or "",
                       c.get("consequence", ""), _points(c["deductions"], "-"), _points(c.get("additions", []), "+")])
    ac = wb.create_sheet("责任追究")
    ac.append(["情形 breach", "单位 unit", "第一责任人", "直接责任人", "处理 consequence", "案件 cases"])
    for b in body["accountability"]:
        ac.append([BREACH_NAMES.get(b["breach"], b["breach"]), b["unit_name"], b["principal_leader"]["name"],
                   b["leader_in_charge"]["name"], b.get("consequence", ""), " ".join(b["cases"])])
    nr = wb.create_sheet("报告")
    nr.append([body["narrative"]])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


# 责任追究: each breach in the bureau's words
BREACH_NAMES = {"overdue_past_escalation": "超期未办结经升级督办", "sign_overdue": "逾期未签收",
                "objection_rejected": "异议经审核不成立（错退）", "collective_from_unresolved_case": "未化解引发集体访",
                "repeat_after_closing": "办结后重复信访", "mass_incident": "发生群体性事件"}


def _points(items: list[dict], sign: str) -> str:
    return "；".join(f"{d['metric']} {d['value']} {sign}{d['points']}" for d in items)
