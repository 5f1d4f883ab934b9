"""The 信访工作条例 procedure end to end, through the real services on a real nats-server: acceptance,
an objection approved by the bureau, the opinion, review and re-review by the bodies above, finality
and 不再受理; a dissatisfied resident who asks for nothing no longer leaves a case open."""
from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi.testclient import TestClient

from services.units.client import UnitClient
from shared.clock import ManualClock
from shared.settings import Settings
from tests.helpers import case_body, read_subject, wait_until


def act(settings: Settings, unit: str, action: str, case_id: str, *args, **kw) -> None:  # noqa: ANN002, ANN003
    async def go() -> None:
        async with UnitClient(settings.nats_url, unit) as client:
            await getattr(client, action)(case_id, *args, **kw)
    asyncio.run(go())


def view(supervision: TestClient, case_id: str) -> dict:
    answer = supervision.get(f"/api/v1/cases/{case_id}")
    return answer.json() if answer.status_code == 200 else {}


def until(supervision: TestClient, case_id: str, what: str, **expected) -> dict:  # noqa: ANN003
    wait_until(lambda: all(view(supervision, case_id).get(k) == v for k, v in expected.items()), what=what)
    return view(supervision, case_id)


def lead_of(routing: TestClient, case_id: str) -> str | None:
    answer = routing.get(f"/api/v1/routing/{case_id}")
    leads = [a["unit"] for a in answer.json()["assignments"] if a["role"] == "lead" and a["active"]] \
        if answer.status_code == 200 else []
    return leads[-1] if leads else None


def test_a_case_goes_through_every_lawful_step_and_its_matter_is_then_final(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings) -> None:
    filed = intake.post("/api/v1/cases", json=case_body(category="logging_permit", title="申请采伐自家承包山林木"))
    assert filed.status_code == 201, filed.text
    case, code = filed.json()["case_number"], filed.json()["query_code"]
    until(supervision, case, "the assignment", state="assigned", lead="forestry")

    # 异议 (Art. 23): the objection alone moves nothing; the bureau's approval re-routes the case
    act(settings, "forestry", "return_case", case, "属县自然资源局职责")
    wait_until(lambda: "forestry" in view(supervision, case).get("objections", {}), what="the objection")
    assert lead_of(routing, case) == "forestry"
    decided = supervision.post(f"/api/v1/cases/{case}/objection",
                               json={"unit": "forestry", "approved": True, "reason": "经核实不属于林业局职责"})
    assert decided.status_code == 200, decided.text
    wait_until(lambda: lead_of(routing, case) not in (None, "forestry"), what="routing to route it again")
    lead = lead_of(routing, case)
    until(supervision, case, "the new assignment", state="assigned", lead=lead)

    # 签收, 受理 (Art. 23): the acceptance notice reaches the resident
    act(settings, lead, "sign", case)
    until(supervision, case, "the sign-for", state="signed")
    act(settings, lead, "decide_acceptance", case, "accepted")
    accepted = until(supervision, case, "the acceptance", state="accepted", acceptance="accepted")
    reply_due = next(d for d in accepted["dues"] if d["kind"] == "reply" and d["met_at"] is None)
    assert reply_due["source"].endswith("of acceptance (Art. 34)")

    # 处理意见书 (Art. 34), then 复查 by the body one level up (Art. 35)
    act(settings, lead, "reply", case, "explained", "经调查，依法予以解释说明。")
    until(supervision, case, "the opinion", state="replied")
    asked = intake.post(f"/api/v1/cases/{case}/reviews", json={"query_code": code, "level": "review", "reason": "不服"})
    assert asked.status_code == 201, asked.text
    reopened = until(supervision, case, "the reviewer", state="reopened", reviewers={"review": "county_gov"})
    assert next(d for d in reopened["dues"] if d["kind"] == "review")["unit"] == "county_gov"
    act(settings, "county_gov", "reply", case, "explained", "经复查，维持原处理意见。", review_outcome="upheld")
    until(supervision, case, "the review's opinion", state="replied", opinion_level="review")

    # 复核 by the body above that (Art. 36): final
    asked = intake.post(f"/api/v1/cases/{case}/reviews", json={"query_code": code, "level": "re_review", "reason": "不服"})
    assert asked.status_code == 201, asked.text
    until(supervision, case, "the re-reviewer", state="reopened", reviewers={"review": "county_gov",
                                                                             "re_review": "city_gov"})
    act(settings, "city_gov", "reply", case, "explained", "经复核，维持复查意见。", review_outcome="upheld")
    final = until(supervision, case, "the final close", state="closed", final=True)
    assert final["opinion_level"] == "re_review"
    wait_until(lambda: any(e.case_id == case and e.reason == "re_reviewed"
                           for _, e in read_subject(settings.nats_url, "cases.closed")), what="CaseClosed re_reviewed")

    # Every written notice is in the resident's lookup
    progress = supervision.post("/api/v1/progress", json={"case_id": case, "query_code": code}).json()
    assert [d["kind"] for d in progress["documents"]] == ["accept_notice", "opinion", "review_opinion",
                                                          "re_review_opinion"]
    assert "不再受理" in progress["documents"][-1]["text"]

    # 不再受理 (Art. 36): the same resident, the same matter
    again = intake.post("/api/v1/cases", json=case_body(category="logging_permit", title="申请采伐自家承包山林木"))
    assert again.status_code == 409 and again.json()["final_case"] == case, again.text


def test_a_dissatisfied_resident_who_asks_for_nothing_leaves_a_final_case(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings,
        clock: ManualClock) -> None:
    filed = intake.post("/api/v1/cases", json=case_body(category="logging_permit")).json()
    case, code = filed["case_number"], filed["query_code"]
    until(supervision, case, "the assignment", state="assigned", lead="forestry")
    act(settings, "forestry", "sign", case)
    until(supervision, case, "the sign-for", state="signed")
    act(settings, "forestry", "decide_acceptance", case, "accepted")
    until(supervision, case, "the acceptance", state="accepted")
    act(settings, "forestry", "reply", case, "not_supported", "经核查，诉求缺乏依据，不予支持。")
    until(supervision, case, "the opinion", state="replied")
    assert intake.post(f"/api/v1/cases/{case}/feedback", json={"query_code": code, "satisfied": False}).status_code == 201
    wait_until(lambda: any(s["event"] == "PetitionerFeedback" and s["status"] == "applied"
                           for s in supervision.get(f"/api/v1/cases/{case}/timeline").json()), what="the feedback")

    clock.advance(timedelta(days=20))  # within the review window: the resident may still ask
    assert supervision.post("/api/v1/sweep").status_code == 200
    assert view(supervision, case)["state"] == "replied"
    clock.advance(timedelta(days=12))  # the 30 days (rolled to a working day at most) have passed
    assert supervision.post("/api/v1/sweep").status_code == 200
    closed = until(supervision, case, "the close", state="closed", final=True)
    assert closed["acceptance"] == "accepted"
    [reason] = [e.reason for _, e in read_subject(settings.nats_url, "cases.closed") if e.case_id == case]
    assert reason == "no_review"


def test_a_case_not_accepted_is_closed_at_once_and_the_resident_is_told_the_legal_path(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings) -> None:
    filed = intake.post("/api/v1/cases", json=case_body(category="logging_permit")).json()
    case, code = filed["case_number"], filed["query_code"]
    until(supervision, case, "the assignment", state="assigned", lead="forestry")
    act(settings, "forestry", "sign", case)
    until(supervision, case, "the sign-for", state="signed")
    act(settings, "forestry", "decide_acceptance", case, "not_accepted", "属于林权争议，应当申请行政复议",
        legal_path="administrative_review")
    until(supervision, case, "the close", state="closed", acceptance="not_accepted", final=True)
    [notice] = supervision.post("/api/v1/progress", json={"case_id": case, "query_code": code}).json()["documents"]
    assert notice["kind"] == "not_accept_notice" and "申请行政复议" in notice["text"]
