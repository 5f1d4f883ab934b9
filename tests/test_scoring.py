"""Scoring as a projection of a scripted county history: every figure equals what the script,
which knows what it did, computes on its own; a rebuild from the stream gives the same answers."""
from __future__ import annotations

import asyncio
import codecs
import csv
import io
import random
import re
import shutil
from pathlib import Path

import nats
import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import func, select

from services.scoring import tables
from shared import events as ev
from shared.db import make_engine
from shared.directory import load_directory
from shared.scoring_weights import load_weights
from shared.settings import REPO_ROOT, Settings
from tests.helpers import read_subject, wait_until
from tests.scoring_history import History, Planned, script

DIRECTORY = load_directory(REPO_ROOT / "deploy" / "config")


@pytest.fixture(scope="module")
def history() -> History:
    return script(DIRECTORY)


def publish_shuffled(settings: Settings, events: list[ev.Event], seed: int = 3) -> None:
    """Out of order across subjects and cases, as a busy stream delivers them."""
    from shared.bus import ensure_streams
    shuffled = events[:]
    random.Random(seed).shuffle(shuffled)

    async def go() -> None:
        nc = await nats.connect(settings.nats_url)
        js = nc.jetstream(timeout=30)  # 200 acks gathered: on a busy machine they take more than the default 5 s
        await ensure_streams(js, settings)
        for start in range(0, len(shuffled), 200):
            await asyncio.gather(*(js.publish(e.subject, ev.encode(e), headers={"Nats-Msg-Id": e.event_id})
                                   for e in shuffled[start:start + 200]))
        await nc.close()
    asyncio.run(go())


def projected(settings: Settings, events: list[ev.Event]) -> None:
    """Wait until scoring has applied every one of ``events`` that it reads (its HANDLERS' types)."""
    from services.scoring.handlers import HANDLERS
    count = sum(1 for e in events if ev.entry_for(HANDLERS.handlers, e) is not None)
    engine = make_engine(settings.db_url("scoring"))

    def applied() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(tables.inbox)).scalar_one()
    wait_until(lambda: applied() == count, timeout=60, what=f"{count} events projected")
    engine.dispose()


def expected(cases: list[Planned]) -> dict:
    """The figures from the script's own record (README, "Scoring", defines each)."""
    def share(a: int, b: int) -> float | None:
        return round(a / b, 6) if b else None
    c = [p for p in cases if p.received.year == 2026]
    closed = [p for p in c if p.closed]
    on_time = [p for p in closed if not (p.accept_overdue or p.reply_overdue)]  # the lead's own limits
    overdue = [p for p in c if p.sign_overdue or p.accept_overdue or p.reply_overdue]  # a review's is not the lead's
    feedback = [p for p in c if p.final_satisfied is not None]
    changed = [r for p in c for r in p.reviews if r.outcome in ("changed", "revoked")]
    return {
        "received": len(c), "assigned": len(c), "signed": sum(p.signed or p.signed_by_objector for p in c),
        "signed_on_time": sum((p.signed or p.signed_by_objector) and not p.sign_overdue for p in c),
        "accepted": sum(p.acceptance == "accepted" for p in c),
        "not_accepted": sum(p.acceptance == "not_accepted" for p in c),
        "closed": len(closed), "closure_rate": share(len(closed), len(c)),
        "closed_on_time": len(on_time), "on_time_closure_rate": share(len(on_time), len(c)),
        "open_overdue": sum(not p.closed for p in overdue), "ever_overdue": len(overdue),
        "escalated_overdue": sum(p.escalated_overdue for p in c),
        "review_overdue": sum(any(r.overdue for r in p.reviews) for p in c),
        "extensions": sum(p.extension for p in c),
        "with_feedback": len(feedback), "satisfied": sum(p.final_satisfied for p in feedback),
        "satisfaction_rate": share(sum(p.final_satisfied for p in feedback), len(feedback)),
        "reviews": sum(p.count("review") for p in c), "re_reviews": sum(p.count("re_review") for p in c),
        "reviews_answered": sum(p.count("review", "answered") for p in c),
        "re_reviews_answered": sum(p.count("re_review", "answered") for p in c),
        "reviews_changed": len(changed),
        "repeat": sum(p.repeat_of is not None for p in c), "escalated": sum(p.escalated for p in c),
        "collective": sum(p.collective for p in c), "backlog": sum(p.backlog for p in c),
        "backlog_resolved": sum(p.backlog and p.closed for p in c),
        "mediated": sum(p.mediated and p.closed for p in c),
        "objections": sum(len(p.objections) for p in c),
        "objections_rejected": sum(not o.approved for p in c for o in p.objections),
        "returns": sum(len(p.returned_by) for p in c),
    }


def test_the_history_exercises_every_step_of_the_procedure(history: History) -> None:
    """The script's 2026 cases include each path the figures tell apart, so no figure is checked at 0."""
    figs = expected(history.cases)
    assert all(figs[k] for k in ("not_accepted", "objections", "objections_rejected", "returns", "review_overdue",
                                 "reviews_answered", "re_reviews_answered", "reviews_changed", "extensions"))
    assert figs["reviews"] > figs["reviews_answered"]  # some reviews wait for their opinion: not 办结
    c = [p for p in history.cases if p.received.year == 2026]
    assert any(o.role == "co" and o.approved for p in c for o in p.objections)
    assert any(o.forwarded for p in c for o in p.objections)
    assert any(r.escalated for p in c for r in p.reviews) and any(p.reopened_after_close for p in c)


def test_every_figure_equals_the_scripts_own_count(scoring: TestClient, settings: Settings, history: History) -> None:
    publish_shuffled(settings, history.events)
    projected(settings, history.events)
    report = scoring.get("/api/v1/reports/2026").json()
    assert report["figures"] == expected(history.cases)

    for unit in ("chengguan", "forestry", "hrss"):
        mine = [p for p in history.cases if p.lead == unit]
        assert scoring.get(f"/api/v1/reports/2026?unit={unit}").json()["figures"] == expected(mine)
    online = [p for p in history.cases if p.channel == "online"]
    assert scoring.get("/api/v1/reports/2026?channel=online").json()["figures"] == expected(online)
    q3 = [p for p in history.cases if p.received.year == 2026 and 7 <= p.received.month <= 9]
    assert scoring.get("/api/v1/reports/2026-Q3").json()["figures"]["received"] == len(q3)

    c2026 = [p for p in history.cases if p.received.year == 2026]
    ch = report["channels"]
    walk_in = [p for p in c2026 if p.channel == "walk_in"]
    assert (ch["walk_in"]["received"], ch["walk_in"]["closed"]) == (len(walk_in), sum(p.closed for p in walk_in))
    delegated = [p for p in c2026 if p.channel == "delegated"]
    assert ch["delegated"]["agents"] == len({p.agent_id for p in delegated})
    assert ch["delegated"]["agencies"] == len({p.agency_id for p in delegated})
    night = [p for p in c2026 if p.channel == "night_visit"]
    assert ch["night_visit"]["households_visited"] == sum(h for _, h in history.visits.values())
    assert (ch["night_visit"]["problems"], ch["night_visit"]["solved"]) == (len(night), sum(p.closed for p in night))
    assert report["notices"] == {"assignment": [], "supervision": {"overdue": 1}, "led_cases": 0}
    assert report["meetings"] == {"prominent_problem": 1, "mass_incident": 1}
    for drive in ch["screening"]["drives"]:
        mine = [p for p in c2026 if p.drive_id == drive["drive_id"]]
        assert (drive["disputes"], drive["important"]) == (len(mine), sum(p.leader is not None for p in mine))

    by_id = {p.case_id: p for p in history.cases}
    want = set()
    for p in c2026:  # each breach charged to the unit responsible then (the script's lead handles after objections)
        if p.escalated_overdue:
            want.add(("overdue_past_escalation", p.lead, p.case_id))
        want |= {("overdue_past_escalation", r.reviewer, p.case_id) for r in p.reviews if r.escalated}
        if p.sign_overdue:
            want.add(("sign_overdue", p.lead, p.case_id))
        want |= {("objection_rejected", o.unit, p.case_id) for o in p.objections if not o.approved}
        earlier = by_id.get(p.repeat_of)
        if earlier is not None and p.collective and not earlier.closed:
            want.add(("collective_from_unresolved_case", earlier.lead, p.case_id))
        elif earlier is not None and earlier.closed:
            want.add(("repeat_after_closing", earlier.lead, p.case_id))
    incident = next(e for e in history.events if isinstance(e, ev.JointMeetingHeld) and e.kind == "mass_incident")
    want |= {("mass_incident", history.mass_incident_in, c) for c in incident.case_ids}
    got = {(b["breach"], b["unit"], c) for b in report["accountability"] for c in b["cases"]}
    assert got == want and want
    assert all(b["principal_leader"]["name"] and b["leader_in_charge"]["name"] for b in report["accountability"])
    consequences = load_weights(REPO_ROOT / "deploy" / "config").consequences
    assert all(b["consequence"] == consequences[b["breach"]] for b in report["accountability"])


def independent_score(figs: dict, weights) -> float:  # noqa: ANN001
    score = weights.base
    for m in weights.metrics:
        value = figs[m.metric]
        if value is None:
            continue
        if m.metric.endswith("_rate"):
            score -= min(m.cap, max(0.0, m.target - value) * m.weight)
        elif m.direction == "more_is_better":
            score += min(m.cap, value * m.weight)
        else:
            score -= min(m.cap, value * m.weight)
    return round(score, 2)


def charged_to(unit: str, history: History) -> dict:
    """What the script charged to ``unit`` in 2026, on any case: its lead's overdue and escalations
    (the script's lead handles the case after the objections), its rejected objections, its late
    reviews, the escalated and collective petitions of its area."""
    c = [p for p in history.cases if p.received.year == 2026]
    return {"ever_overdue": sum(p.lead == unit and (p.sign_overdue or p.accept_overdue or p.reply_overdue) for p in c),
            "escalated_overdue": sum((p.lead == unit and p.escalated_overdue)
                                     or any(r.escalated and r.reviewer == unit for r in p.reviews) for p in c),
            "objections_rejected": sum(o.unit == unit and not o.approved for p in c for o in p.objections),
            "review_overdue": sum(any(r.overdue and r.reviewer == unit for r in p.reviews) for p in c),
            "escalated_from_area": sum(p.escalated and p.township == unit for p in c),
            "collective_from_area": sum(p.collective and p.township == unit for p in c)}


def check_scorecards(report: dict, history: History, weights) -> None:  # noqa: ANN001
    """Townships, and departments, each ranked when they have enough cases, the township of the mass
    incident vetoed (一票否决: the lowest band, ranked last); the supervising bodies (offices) listed
    unranked; the governments that answer reviews (county_gov, city_gov) never scored."""
    vetoed = history.mass_incident_in
    for group, kind in (("townships", {"township"}), ("departments", {"department"})):
        cards = report["scorecards"][group]
        assert {c["unit"] for c in cards} == {u for u, x in DIRECTORY.units.items() if x.kind in kind}
        assert not {"county_gov", "city_gov"} & {c["unit"] for c in cards}
        for card in cards:
            figs = {**expected([p for p in history.cases if p.lead == card["unit"]]),
                    **charged_to(card["unit"], history)}
            assert card["figures"] == figs
            assert card["score"] == independent_score(figs, weights)
            if card["unit"] == vetoed:
                assert (card["band"], card["consequence"]) == (weights.bands[-1].band, weights.veto["mass_incident"])
                assert card["rank"] == len([c for c in cards if c["band"] is not None])
                continue
            if figs["received"] < weights.min_cases:
                assert (card["band"], card["rank"]) == (None, None)
                continue
            better = [c for c in cards if c["band"] is not None and c["score"] > card["score"] and c["unit"] != vetoed]
            assert card["rank"] == len(better) + 1
    supervising = report["scorecards"]["supervising"]
    assert {c["unit"] for c in supervising} == {u for u, x in DIRECTORY.units.items() if x.kind == "office"}
    assert all(c["rank"] is None and c["band"] is None for c in supervising)


def test_scorecards_follow_the_weights_file_and_change_with_it(
        scoring: TestClient, settings: Settings, history: History, tmp_path: Path) -> None:
    publish_shuffled(settings, history.events)
    projected(settings, history.events)
    check_scorecards(scoring.get("/api/v1/reports/2026").json(), history, load_weights(settings.config_dir))

    from services.scoring.app import create_app
    config = tmp_path / "config"
    shutil.copytree(settings.config_dir, config)
    text = (config / "scoring.yaml").read_text(encoding="utf-8")
    (config / "scoring.yaml").write_text(text.replace("weight: 0.5\n    cap: 5", "weight: 8\n    cap: 40")
                                         .replace("weight: 20\n    cap: 20", "weight: 5\n    cap: 5"), encoding="utf-8")
    changed = settings.model_copy(update={"config_dir": config})
    weights = load_weights(config)
    assert [m.weight for m in weights.metrics if m.metric == "objections_rejected"] == [8]
    with TestClient(create_app(changed), headers=scoring.headers) as other:
        report = other.get("/api/v1/reports/2026").json()
    check_scorecards(report, history, weights)
    before = scoring.get("/api/v1/reports/2026").json()["scorecards"]
    assert [c["unit"] for c in report["scorecards"]["departments"]] != [c["unit"] for c in before["departments"]] or \
        [c["score"] for c in report["scorecards"]["departments"]] != [c["score"] for c in before["departments"]]


def test_a_rebuild_from_the_stream_gives_identical_figures_rankings_and_accountability(settings: Settings,
                                                                                       auth: dict) -> None:
    from services.scoring.app import create_app
    from services.scoring.cli import rebuild

    history = script(DIRECTORY, n=1500, seed=11)  # every kind of event, some thousands of events
    assert {type(e) for e in history.events} == set(ev.EVENT_TYPES.values()) - {
        ev.ScorecardsPublished, ev.EventRefused, ev.UnitNotified}  # scoring publishes the one, reads none of these
    publish_shuffled(settings, history.events)
    with TestClient(create_app(settings), headers=auth) as live:
        projected(settings, history.events)
        assert live.post("/api/v1/periods/2026-Q1/close", json={"closed_by": "dbk01"}).status_code == 200
        before = {p: live.get(f"/api/v1/reports/{p}").json() for p in ("2026", "2026-Q1", "2026-Q2", "2025")}
    assert rebuild(settings) == 0
    with TestClient(create_app(settings), headers=auth) as rebuilt:
        after = {p: rebuilt.get(f"/api/v1/reports/{p}").json() for p in ("2026", "2026-Q1", "2026-Q2", "2025")}
    assert after == before


def test_the_narrative_csv_and_xlsx_agree_with_the_json(scoring: TestClient, settings: Settings,
                                                        history: History) -> None:
    publish_shuffled(settings, history.events)
    projected(settings, history.events)
    report = scoring.get("/api/v1/reports/2026").json()
    f, ch = report["figures"], report["channels"]

    text = report["narrative"]
    pct = lambda v: f"{v * 100:.1f}"  # noqa: E731 - no half-way cases at these counts
    assert f"共受理信访事项{f['received']}件，办结{f['closed']}件，办结率达到{pct(f['closure_rate'])}%，" \
           f"其中出具处理意见{f['closed'] - f['not_accepted']}件、不予受理{f['not_accepted']}件" in text
    assert f"变更或撤销原处理意见{f['reviews_changed']}件" in text
    assert f"提出异议{f['objections']}件，经审核同意退回{f['returns']}件" in text
    assert f"矛盾纠纷受理室共受理各类矛盾纠纷{ch['walk_in']['received']}件" in text
    assert f"共受理网上信访{ch['online']['received']}件，办结率达到{pct(ch['online']['closure_rate'])}%" in text
    assert f"走访群众{ch['night_visit']['households_visited']}户" in text

    data = scoring.get("/api/v1/reports/2026/report.csv").content
    assert data.startswith(codecs.BOM_UTF8)  # Excel reads a CSV with the BOM as UTF-8, not as GBK
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0] == ["section", "key", "metric", "value"]
    as_csv = {(r[0], r[1], r[2]): r[3] for r in rows[1:]}
    assert all(as_csv[("figures", "all", k)] == ("" if v is None else str(v)) for k, v in f.items())
    first = report["scorecards"]["townships"][0]
    assert as_csv[("scorecard", first["unit"], "score")] == str(first["score"])

    book = load_workbook(io.BytesIO(scoring.get("/api/v1/reports/2026/report.xlsx").content))
    sheet = {r[0]: r[1] for r in book["概况"].iter_rows(min_row=2, values_only=True)}
    assert sheet == f
    cards = {r[0]: r[2] for r in book["考核"].iter_rows(min_row=2, values_only=True)}
    assert cards[first["unit_name"]] == first["score"]  # by the unit's name, as the bureau reads it
    assert book["报告"]["A1"].value == text
    assert re.search(r"\d", scoring.get("/api/v1/reports/2026/report.md").text)


def test_closing_a_period_freezes_its_figures_and_publishes_the_scorecards(
        scoring: TestClient, settings: Settings, history: History) -> None:
    publish_shuffled(settings, history.events[:400])
    projected(settings, history.events[:400])
    closed = scoring.post("/api/v1/periods/2026/close", json={"closed_by": "dbk01"})
    assert closed.status_code == 200 and closed.json()["frozen"]
    publish_shuffled(settings, history.events[400:])
    projected(settings, history.events)  # its own ScorecardsPublished it does not read
    assert scoring.get("/api/v1/reports/2026").json() == closed.json()  # frozen: later events do not move it
    assert scoring.post("/api/v1/periods/2026/close", json={"closed_by": "dbk01"}).status_code == 409
    wait_until(lambda: read_subject(settings.nats_url, "scoring.period_closed") != [], what="ScorecardsPublished")
    [(_, published)] = read_subject(settings.nats_url, "scoring.period_closed")
    # the units ranked: neither a supervising body nor a unit with fewer cases than min_cases
    scored = [c["unit"] for group in ("townships", "departments") for c in closed.json()["scorecards"][group]
              if c["rank"] is not None]
    assert scored and not {"supervision_office", "discipline"} & set(scored)
    assert published.period == "2026" and sorted(s.unit for s in published.scores) == sorted(scored)


def test_the_annual_report_reads_like_a_bureaus_summary_with_names_its_figures_and_attachments(
        scoring: TestClient, settings: Settings, history: History) -> None:
    from docx import Document

    publish_shuffled(settings, history.events)
    projected(settings, history.events)
    report = scoring.get("/api/v1/reports/2026").json()
    f, ch = report["figures"], report["channels"]
    md = scoring.get("/api/v1/reports/2026/report.md").text
    assert md.startswith(f"# {DIRECTORY.county.name}信访局2026年信访工作总结")
    headings = [line for line in md.splitlines() if line.startswith("## ") or line.startswith("### ")]
    assert headings[:1] == ["## 一、主要工作"] and "## 二、存在的问题" in headings and "## 三、下一步工作打算" in headings
    assert [h for h in headings if h.startswith("### （")][:4] == [
        "### （一）坚持源头预防，扎实开展矛盾纠纷排查和领导包案", "### （二）规范受理办理，发挥矛盾纠纷受理室作用",
        "### （三）拓宽信访渠道，方便群众反映诉求", "### （四）落实目标管理责任制，严格责任追究"]
    assert "## 附件1：目标管理考核得分表" in md and "## 附件2：责任追究名单" in md
    assert not re.search(r"[A-Za-z]", md), re.findall(r"[A-Za-z_]+", md)[:10]  # no English, no codes
    assert f"全年共受理信访事项{f['received']}件，办结{f['closed']}件" in md
    assert f"矛盾纠纷受理室共受理各类矛盾纠纷{ch['walk_in']['received']}件" in md
    drives = ch["screening"]["drives"]
    assert f"共排查出矛盾纠纷{sum(d['disputes'] for d in drives)}件" in md
    top = next(c for c in report["categories"] if c["code"] != "other")
    assert f"{top['name']}（{top['received']}件）" in md  # the most frequent matter, by name
    assert DIRECTORY.units[report["accountability"][0]["unit"]].name in md
    vetoed = DIRECTORY.units[history.mass_incident_in].name
    assert f"{vetoed}发生群体性事件，年度考核实行一票否决。" in md  # the township of the mass incident
    assert f"全县建立信访代办点{len(DIRECTORY.agencies)}个，配备代办员{len(DIRECTORY.agents)}名。" in md
    assert "对临期、超期案件下发督办通知1份。召开信访工作联席会议2次，研究解决突出问题和群体性事件1起。" in md
    slow = re.search(r"部分单位办理进度偏慢，(.*?)，低于全县([\d.]+)%的平均水平", md)
    assert slow and slow[2] == f"{f['closure_rate'] * 100:.1f}"
    assert all(float(x) < float(slow[2]) for x in re.findall(r"办结率([\d.]+)%", slow[1]))  # only those below it

    document = Document(io.BytesIO(scoring.get("/api/v1/reports/2026/report.docx").content))
    text = [p.text for p in document.paragraphs]
    assert text[0] == f"{DIRECTORY.county.name}信访局2026年信访工作总结" and "一、主要工作" in text
    assert [c.text for c in document.tables[0].rows[0].cells] == ["类别", "单位", "名次", "得分", "等次", "奖惩"]

    empty = scoring.get("/api/v1/reports/2020/report.md").text  # no case in the period: said in words
    assert "全年共受理信访事项0件" in empty and "无案件，办结率无从计算" in empty
