"""Supervision against a real nats-server, with intake, routing and unit clients in front of it."""
from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from docx import Document
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from services.units.client import UnitClient
from shared import events as ev
from shared.clock import ManualClock
from shared.directory import load_directory
from shared.policy import load_policy
from shared.settings import REPO_ROOT, Settings
from tests.helpers import case_body, outbox_pending, read_subject, wait_until

DIRECTORY = load_directory(REPO_ROOT / "deploy" / "config")


def submit(intake: TestClient, n: int = 1, **fields) -> dict:
    answer = intake.post("/api/v1/cases", json=case_body(n=n, category="logging_permit", **fields))
    assert answer.status_code == 201, answer.text
    return answer.json()


def state_of(supervision: TestClient, case_id: str) -> str | None:
    answer = supervision.get(f"/api/v1/cases/{case_id}")
    return answer.json()["state"] if answer.status_code == 200 else None


def wait_state(supervision: TestClient, case_id: str, state: str) -> None:
    wait_until(lambda: state_of(supervision, case_id) == state, what=f"{case_id} to be {state}")


def unit(settings: Settings, code: str, action: str, case_id: str, **kw) -> ev.Event:  # noqa: ANN003
    async def go() -> ev.Event:
        async with UnitClient(settings.nats_url, code) as client:
            return await getattr(client, action)(case_id, **kw)
    return asyncio.run(go())


def drained(*engines: Engine) -> None:
    for engine in engines:
        wait_until(lambda e=engine: outbox_pending(e) == 0, what="the outbox to drain")


def test_a_case_flows_from_receipt_to_closing_and_its_timeline_shows_each_step_once(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings) -> None:
    case = submit(intake)
    number = case["case_number"]
    wait_state(supervision, number, "assigned")
    unit(settings, "forestry", "sign", number)
    wait_state(supervision, number, "signed")
    unit(settings, "forestry", "reply", number, result="resolved", text="已核发采伐许可证")
    wait_state(supervision, number, "replied")
    assert intake.post(f"/api/v1/cases/{number}/feedback",
                       json={"query_code": case["query_code"], "satisfied": True}).status_code == 201
    wait_state(supervision, number, "closed")

    steps = supervision.get(f"/api/v1/cases/{number}/timeline").json()
    assert [s["event"] for s in steps] == ["CaseReceived", "CaseAssigned", "UnitSigned", "CaseReplied",
                                           "PetitionerFeedback", "CaseClosed"]
    assert all(s["status"] == "applied" for s in steps)
    assert steps[2]["unit"] == "forestry" and steps[2]["actor"]["kind"] == "unit"
    [(_, closed)] = read_subject(settings.nats_url, "cases.closed")
    assert closed.case_id == number and closed.reason == "satisfied"

    progress = supervision.post("/api/v1/progress", json={"case_id": number, "query_code": case["query_code"]})
    assert progress.json()["state"] == "closed"
    assert [s["step"] for s in progress.json()["steps"]] == ["已受理登记", "已交办", "承办单位已签收", "已答复", "已办结"]
    assert supervision.post("/api/v1/progress", json={"case_id": number, "query_code": "WRONG123"}).status_code == 404


def test_each_due_date_fires_one_reminder_one_overdue_and_one_escalation_with_two_replicas(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings, clock: ManualClock,
        supervision_db: Engine, routing_db: Engine, intake_db: Engine) -> None:
    from services.supervision.app import create_app

    numbers = [submit(intake, n=i)["case_number"] for i in range(3)]  # assigned, never signed
    for number in numbers:
        wait_state(supervision, number, "assigned")
    with TestClient(create_app(settings, clock=clock), headers=supervision.headers) as replica:
        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):  # a day at a time, both replicas sweeping at once, twice each
                clock.advance(timedelta(days=6))
                list(pool.map(lambda c: c.post("/api/v1/sweep").json(), [supervision, replica] * 2))
        drained(intake_db, routing_db, supervision_db)
    fired = {stage: [(e.case_id, e.due_kind, e.due_at) for _, e in read_subject(settings.nats_url, f"cases.{stage}.*")]
             for stage in ("reminded", "overdue", "escalated")}
    for stage, alerts in fired.items():
        assert sorted(alerts) == sorted(set(alerts)), f"a {stage} fired twice"
        assert sorted((c, k) for c, k, _ in alerts) == sorted((n, k) for n in numbers for k in ("accept", "sign"))
    escalated = [e for _, e in read_subject(settings.nats_url, "cases.escalated.*")]
    assert {e.unit for e in escalated} == {"forestry"}
    assert supervision.get("/api/v1/overdue").json()[0]["case_id"] in numbers


def test_an_illegal_transition_is_refused_recorded_and_counted(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings) -> None:
    number = submit(intake)["case_number"]
    wait_state(supervision, number, "assigned")
    unit(settings, "forestry", "reply", number, result="resolved", text="未签收先答复")
    wait_until(lambda: any(s["status"] == "refused" for s in supervision.get(f"/api/v1/cases/{number}/timeline").json()),
               what="the reply to be refused")
    refused = [s for s in supervision.get(f"/api/v1/cases/{number}/timeline").json() if s["status"] == "refused"]
    assert [(s["event"], s["reason"]) for s in refused] == [("CaseReplied", "cannot reply: the case is assigned")]
    assert state_of(supervision, number) == "assigned"
    assert 'xf_supervision_refused_events_total{type="CaseReplied"} 1.0' in supervision.get("/metrics").text


def test_an_extension_approved_by_the_units_head_moves_the_reply_due_date_and_tells_the_unit(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings,
        token: Callable[..., dict]) -> None:
    number = submit(intake)["case_number"]
    wait_state(supervision, number, "assigned")
    unit(settings, "forestry", "sign", number)
    wait_state(supervision, number, "signed")
    before = next(d for d in supervision.get(f"/api/v1/cases/{number}").json()["dues"] if d["kind"] == "reply")
    unit(settings, "forestry", "request_extension", number, days=20, reason="需林地权属鉴定")
    wait_until(lambda: any(s["event"] == "ExtensionRequested" for s in
                           supervision.get(f"/api/v1/cases/{number}/timeline").json()), what="the request")
    decision = {"approved": True, "days": 20, "reason": "同意延期"}
    # 本机关负责人 (Art. 34): another unit's head does not see the case; the bureau may not decide it
    assert supervision.post(f"/api/v1/cases/{number}/extension", json=decision,
                            headers=token("unit_head", unit="health")).status_code == 404
    assert supervision.post(f"/api/v1/cases/{number}/extension", json=decision).status_code == 403
    head = token("unit_head", unit="forestry")
    answer = supervision.post(f"/api/v1/cases/{number}/extension", json=decision, headers=head)
    assert answer.status_code == 200, answer.text
    after = next(d for d in answer.json()["dues"] if d["kind"] == "reply")
    policy = load_policy(settings.config_dir)
    assert after["due_at"] == policy.extended(datetime.fromisoformat(before["due_at"]), 20).isoformat()
    assert supervision.post(f"/api/v1/cases/{number}/extension", headers=head, json={
        "approved": True, "days": 5, "reason": "再延"}).status_code == 409
    wait_until(lambda: read_subject(settings.nats_url, "cases.extension_decided.forestry") != [], what="the decision")
    [(_, decided)] = read_subject(settings.nats_url, "cases.extension_decided.forestry")
    assert decided.unit == "forestry" and decided.actor.kind == "unit" and decided.new_due_at.isoformat() == after["due_at"]


def test_notices_are_numbered_per_year_and_render_to_docx(
        intake: TestClient, routing: TestClient, supervision: TestClient, clock: ManualClock) -> None:
    numbers = [submit(intake, n=i)["case_number"] for i in range(2)]
    for number in numbers:
        wait_state(supervision, number, "assigned")
    clock.advance(timedelta(days=5))  # the sign-for is overdue
    year = clock.now().year
    body = {"units": ["forestry"], "demands": "请立即签收并组织办理。", "reply_by": "2026-12-31", "issued_by": "dbk01"}
    first = supervision.post("/api/v1/notices", json=body)
    second = supervision.post("/api/v1/notices", json={**body, "case_ids": numbers[:1]})
    assert first.status_code == 201, first.text
    assert (first.json()["notice_no"], second.json()["notice_no"]) == (f"〔{year}〕1号", f"〔{year}〕2号")
    assert first.json()["case_ids"] == sorted(numbers) and second.json()["case_ids"] == numbers[:1]

    docx = supervision.get(f"/api/v1/notices/{first.json()['notice_id']}/document.docx")
    document = Document(io.BytesIO(docx.content))
    text = "\n".join(p.text for p in document.paragraphs)
    cells = {c.text for row in document.tables[0].rows for c in row.cells}
    assert f"〔{year}〕1号" in text and set(numbers) <= cells and "县林业局" in cells
    markdown = supervision.get(f"/api/v1/notices/{first.json()['notice_id']}/document.md").text
    assert all(n in markdown for n in numbers)

    assert first.json()["awaiting_reply"] == ["forestry"]
    replied = supervision.post(f"/api/v1/notices/{first.json()['notice_id']}/replies",
                               json={"unit": "forestry", "text": "已签收，正在办理"}).json()
    assert replied["awaiting_reply"] == [] and replied["replies"][0]["unit"] == "forestry"


def test_a_jiaoban_notice_hands_leader_cases_out_numbered_by_its_office_shown_in_each_timeline_and_chased(
        intake: TestClient, routing: TestClient, supervision: TestClient, clock: ManualClock) -> None:
    """交办通知: the important cases with their lead unit and leader (包案), numbered 青信联办发〔year〕N号
    per office and year apart from the 督办通知; a unit that has not replied by the day is listed to chase."""
    important = submit(intake, n=1, backlog=True)["case_number"]  # 积案: important, a leader is named
    plain = submit(intake, n=2)["case_number"]
    wait_until(lambda: (supervision.get(f"/api/v1/cases/{important}").json() or {}).get("leader") is not None,
               what="the leader of the important case")
    wait_state(supervision, plain, "assigned")
    year = clock.now().year
    body = {"notice_type": "assignment", "case_ids": [important, plain], "demands": "请包案领导牵头化解。",
            "reply_by": (clock.now() + timedelta(days=10)).date().isoformat(),
            "title": "关于国庆期间信访矛盾纠纷领导包案督办的通知"}
    refused = supervision.post("/api/v1/notices", json=body)
    assert refused.status_code == 422 and "case_ids[1]" in refused.text and "leader" in refused.text
    issued = supervision.post("/api/v1/notices", json={**body, "case_ids": [important]})
    assert issued.status_code == 201, issued.text
    notice = issued.json()
    assert (notice["notice_no"], notice["case_ids"], notice["units"]) == (f"青信联办发〔{year}〕1号", [important],
                                                                          ["forestry"])
    again = supervision.post("/api/v1/notices", json={**body, "case_ids": [important]}).json()
    assert again["notice_no"] == f"青信联办发〔{year}〕2号"

    document = Document(io.BytesIO(supervision.get(f"/api/v1/notices/{notice['notice_id']}/document.docx").content))
    text = "\n".join(p.text for p in document.paragraphs)
    cells = [c.text for c in document.tables[0].rows[1].cells]
    assert "关于国庆期间信访矛盾纠纷领导包案督办的通知" in document.paragraphs[0].text and f"青信联办发〔{year}〕1号" in text
    leader = DIRECTORY.leaders[supervision.get(f"/api/v1/cases/{important}").json()["leader"]]
    assert (cells[1], cells[3], cells[4]) == (important, "县林业局", f"{leader.title}{leader.name}")
    assert important in supervision.get(f"/api/v1/notices/{notice['notice_id']}/document.md").text

    steps = [s for s in supervision.get(f"/api/v1/cases/{important}/timeline").json()
             if s["event"] == "SupervisionNoticeIssued"]
    assert [s["notice_no"] for s in steps] == [f"青信联办发〔{year}〕1号", f"青信联办发〔{year}〕2号"]
    assert not [s for s in supervision.get(f"/api/v1/cases/{plain}/timeline").json()
                if s["event"] == "SupervisionNoticeIssued"]

    assert supervision.get(f"/api/v1/notices/{notice['notice_id']}").json()["reply_overdue"] == []
    clock.advance(timedelta(days=12))
    assert supervision.get(f"/api/v1/notices/{notice['notice_id']}").json()["reply_overdue"] == ["forestry"]


def test_a_joint_meeting_is_recorded_and_published_its_minutes_print_and_its_decisions_are_chased_until_done(
        intake: TestClient, routing: TestClient, supervision: TestClient, clock: ManualClock, settings: Settings,
        token: Callable[..., dict]) -> None:
    number = submit(intake, n=1)["case_number"]
    wait_state(supervision, number, "assigned")
    held_on = clock.now().date()
    body = {"held_on": held_on.isoformat(), "kind": "mass_incident", "topic": "修路占地引发群体聚集",
            "units": ["forestry", "natres", "chengguan"], "case_ids": [number],
            "decisions": [{"text": "七日内完成占地面积复核", "unit": "natres",
                           "due_on": (held_on + timedelta(days=7)).isoformat()},
                          {"text": "林地补偿一月内兑付", "unit": "forestry",
                           "due_on": (held_on + timedelta(days=30)).isoformat()}]}
    bad = supervision.post("/api/v1/meetings", json={**body, "units": ["nowhere"], "case_ids": ["QS-2026-999999"]})
    assert bad.status_code == 422 and "units[0]" in bad.text and "case_ids[0]" in bad.text, bad.text
    held = supervision.post("/api/v1/meetings", json=body)
    assert held.status_code == 201, held.text
    meeting = held.json()
    assert meeting["meeting_no"] == f"{held_on.year}年第1次"
    assert [(d["n"], d["unit"], d["status"]) for d in meeting["decisions"]] == [(1, "natres", "open"),
                                                                                (2, "forestry", "open")]
    wait_until(lambda: read_subject(settings.nats_url, "supervision.meeting_held") != [], what="JointMeetingHeld")
    [(_, published)] = read_subject(settings.nats_url, "supervision.meeting_held")
    assert (published.meeting_id, published.kind, [d.unit for d in published.decisions]) == (
        meeting["meeting_id"], "mass_incident", ["natres", "forestry"])

    minutes = Document(io.BytesIO(supervision.get(f"/api/v1/meetings/{meeting['meeting_id']}/minutes.docx").content))
    text = "\n".join(p.text for p in minutes.paragraphs)
    rows = [[c.text for c in r.cells] for r in minutes.tables[0].rows]
    assert "联席会议纪要" in text and "群体性事件" in text and "县自然资源局" in text and number in text
    assert rows[1][1:3] == ["七日内完成占地面积复核", "县自然资源局"]
    assert [s["meeting_no"] for s in supervision.get(f"/api/v1/cases/{number}/timeline").json()
            if s["event"] == "JointMeetingHeld"] == [meeting["meeting_no"]]

    clock.advance(timedelta(days=8))  # the first decision's day has passed
    overdue = supervision.get("/api/v1/meetings/decisions?status=overdue").json()
    assert [(d["meeting_id"], d["n"], d["unit"]) for d in overdue] == [(meeting["meeting_id"], 1, "natres")]
    as_forestry = token("unit", unit="forestry")
    assert supervision.post(f"/api/v1/meetings/{meeting['meeting_id']}/decisions/1/done", json={"note": "已复核"},
                            headers=as_forestry).status_code == 404  # natres's, not forestry's
    assert [d["n"] for d in supervision.get("/api/v1/meetings/decisions", headers=as_forestry).json()] == [2]
    done = supervision.post(f"/api/v1/meetings/{meeting['meeting_id']}/decisions/1/done", json={"note": "已复核完毕"},
                            headers=token("unit", unit="natres"))
    assert done.status_code == 200 and done.json()["decisions"][0]["status"] == "done"
    assert supervision.get("/api/v1/meetings/decisions?status=overdue").json() == []
