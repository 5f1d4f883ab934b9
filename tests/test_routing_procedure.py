"""Routing's steps of the lawful procedure against a real nats-server: objections (异议, Art. 23) wait
for the bureau's decision; reviews (复查, Art. 35) and re-reviews (复核, Art. 36) go to the body one
level up; the governments are never given a case to handle."""
from __future__ import annotations

import asyncio

import nats
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from services.routing import tables
from shared import events as ev
from shared import subjects
from shared.settings import Settings
from tests.helpers import outbox_pending, read_subject, wait_until
from tests.test_routing import assigned, decide_objection, objections, publish, routed, submit, unit_do

UNIT = ev.Actor(kind="unit")


def ask_routing(settings: Settings, unit: str, case_id: str) -> ev.AssignmentAnswer:
    """What a unit's client asks before it publishes (``routing.assignment.<unit>``)."""
    async def go() -> ev.AssignmentAnswer:
        nc = await nats.connect(settings.nats_url)
        try:
            answer = await nc.request(subjects.ASSIGNMENT_QUERY.format(unit=unit),
                                      ev.AssignmentQuery(case_id=case_id).model_dump_json().encode(), timeout=5)
            return ev.AssignmentAnswer.model_validate_json(answer.data)
        finally:
            await nc.close()
    return asyncio.run(go())


def settled(routing_db: Engine, *applied: ev.Event) -> None:
    """Routing has applied these events (its inbox holds them) and published all it decided."""
    def seen() -> bool:
        with routing_db.connect() as conn:
            ids = set(conn.execute(select(tables.inbox.c.event_id).where(
                tables.inbox.c.event_id.in_([e.event_id for e in applied]))).scalars())
        return ids == {e.event_id for e in applied}
    wait_until(seen, what="routing to apply the events")
    wait_until(lambda: outbox_pending(routing_db) == 0, what="routing's outbox to drain")


def holders(routing: TestClient, case_id: str) -> list[tuple[str, str]]:
    return [(x["unit"], x["role"]) for x in routed(routing, case_id)["assignments"] if x["active"]]


def pollution_case(intake: TestClient, settings: Settings, engines: list[Engine]) -> str:
    """A case of the industrial park: ecology leads, matou and market co-handle (routing.yaml)."""
    number = submit(intake, township="matou", village="matou-hexi", category="pollution", title="工业园区企业排污")
    assert [(e.unit, e.role) for e in assigned(settings, engines, number)] == [
        ("ecology", "lead"), ("matou", "co"), ("market", "co")]
    return number


# --- 异议 ---------------------------------------------------------------------------------------

def test_an_objection_alone_moves_nothing_and_the_unit_keeps_the_case(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = submit(intake, category="logging_permit")
    assigned(settings, [intake_db, routing_db], number)
    unit_do(settings, "forestry", "return_case", number, reason="采伐许可属乡镇林业站初审")
    wait_until(lambda: objections(routing, number, "forestry", "pending"), what="the objection to be recorded")
    settled(routing_db)

    assert holders(routing, number) == [("forestry", "lead")]
    assert [e.unit for e in assigned(settings, [intake_db, routing_db], number)] == ["forestry"]
    [objection] = routed(routing, number)["objections"]
    assert (objection["role"], objection["via"], objection["reason"]) == ("lead", "CaseReturned", "采伐许可属乡镇林业站初审")
    assert routed(routing, number)["returns"] == []  # nothing has moved the case
    assert unit_do(settings, "forestry", "sign", number).subject == "cases.signed.forestry"  # its clock runs


def test_an_approved_objection_reroutes_without_the_unit_and_the_case_keeps_its_history(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = pollution_case(intake, settings, [intake_db, routing_db])
    forwarded = ev.AcceptanceDecided(case_id=number, unit="ecology", actor=UNIT, decision="forwarded",
                                     reason="属地环境巡查问题，应由镇里牵头")
    publish(settings, forwarded)
    wait_until(lambda: objections(routing, number, "ecology", "pending"), what="the objection to be recorded")
    assert holders(routing, number)[0] == ("ecology", "lead")

    decision = decide_objection(settings, number, "ecology", reason="属地管理")
    wait_until(lambda: ("matou", "lead") in holders(routing, number), what="the case to be routed again")
    again = assigned(settings, [intake_db, routing_db], number)[3:]
    assert [(e.unit, e.role, e.rule_id) for e in again] == [("matou", "lead", "territorial")]
    assert again[0].occurred_at >= decision.occurred_at  # the effect after its cause
    why = routed(routing, number)
    assert [(x["unit"], x["role"], x["active"]) for x in why["assignments"]] == [
        ("ecology", "lead", False), ("matou", "co", False), ("market", "co", True), ("matou", "lead", True)]
    [objection] = why["objections"]
    assert (objection["via"], objection["status"], objection["decided_reason"]) == (
        "AcceptanceDecided", "approved", "属地管理")
    assert [r["unit"] for r in why["returns"]] == ["ecology"]

    # Another decision on the same unit (a second click in the bureau): it no longer holds the case.
    settled(routing_db, decide_objection(settings, number, "ecology"))
    assert len(assigned(settings, [intake_db, routing_db], number)) == 4
    assert holders(routing, number) == [("market", "co"), ("matou", "lead")]


def test_a_rejected_objection_leaves_the_case_where_it_is(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = submit(intake, category="logging_permit")
    assigned(settings, [intake_db, routing_db], number)
    unit_do(settings, "forestry", "return_case", number, reason="不属本局职责")
    wait_until(lambda: objections(routing, number, "forestry", "pending"), what="the objection to be recorded")
    decide_objection(settings, number, "forestry", approved=False, reason="采伐许可属林业局法定职责")
    wait_until(lambda: objections(routing, number, "forestry", "rejected"), what="the rejection to be recorded")
    settled(routing_db)

    assert holders(routing, number) == [("forestry", "lead")]
    assert [e.unit for e in assigned(settings, [intake_db, routing_db], number)] == ["forestry"]
    assert objections(routing, number, "forestry", "rejected")[0]["decided_reason"] == "采伐许可属林业局法定职责"
    assert ask_routing(settings, "forestry", number).assigned


def test_a_co_handling_units_approved_objection_ends_only_its_own_assignment(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = pollution_case(intake, settings, [intake_db, routing_db])
    unit_do(settings, "market", "return_case", number, reason="不涉及市场监管")
    wait_until(lambda: objections(routing, number, "market", "pending"), what="the objection to be recorded")
    decide_objection(settings, number, "market")
    wait_until(lambda: ("market", "co") not in holders(routing, number), what="market to leave")
    settled(routing_db)
    assert holders(routing, number) == [("ecology", "lead"), ("matou", "co")]
    assert len(assigned(settings, [intake_db, routing_db], number)) == 3
    assert ask_routing(settings, "market", number).error == "not_assigned"

    # A co-handling unit leaving routed nothing: the lead's first approved objection routes again
    # (to neither ecology nor market), it does not go to triage.
    unit_do(settings, "ecology", "return_case", number, reason="属地环境巡查问题")
    wait_until(lambda: objections(routing, number, "ecology", "pending"), what="the lead's objection")
    decide_objection(settings, number, "ecology")
    wait_until(lambda: ("matou", "lead") in holders(routing, number), what="the case to be routed again")
    assert routing.get("/api/v1/triage").json() == []


def test_a_second_decision_on_a_decided_objection_moves_nothing_even_when_the_unit_holds_the_case_again(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = pollution_case(intake, settings, [intake_db, routing_db])
    objection = unit_do(settings, "ecology", "return_case", number, reason="属地环境巡查问题")
    wait_until(lambda: objections(routing, number, "ecology", "pending"), what="the objection to be recorded")
    decide_objection(settings, number, "ecology", objection=objection)
    wait_until(lambda: ("matou", "lead") in holders(routing, number), what="the case to be routed again")
    unit_do(settings, "matou", "return_case", number, reason="涉及企业环评，非本镇职责")
    wait_until(lambda: objections(routing, number, "matou", "pending"), what="the second objection")
    decide_objection(settings, number, "matou")
    wait_until(lambda: routing.get("/api/v1/triage").json(), what="the third routing to go to triage")
    assert routing.post(f"/api/v1/triage/{number}/decision",
                        json={"unit": "ecology", "reason": "经研究仍由生态环境局牵头"}).status_code == 200
    count = len(assigned(settings, [intake_db, routing_db], number))

    settled(routing_db, decide_objection(settings, number, "ecology", objection=objection))
    assert ("ecology", "lead") in holders(routing, number)
    assert len(assigned(settings, [intake_db, routing_db], number)) == count
    assert [o["status"] for o in routed(routing, number)["objections"]] == ["approved", "approved"]


def test_an_objection_to_a_case_the_unit_does_not_hold_is_refused_and_its_approval_moves_nothing(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = submit(intake, category="logging_permit")
    assigned(settings, [intake_db, routing_db], number)
    # Published by hand: the unit's client would not (routing tells it the case is not its own).
    stray = ev.CaseReturned(case_id=number, unit="health", actor=UNIT, reason="不是本单位的")
    publish(settings, stray)
    wait_until(lambda: read_subject(settings.nats_url, "cases.refused.health"), what="the refusal")
    [(_, refused)] = read_subject(settings.nats_url, "cases.refused.health")
    assert (refused.refused_event_id, refused.by, refused.reason) == (
        stray.event_id, "routing", "the case is not assigned to this unit")

    settled(routing_db, decide_objection(settings, number, "health"))
    assert routed(routing, number)["objections"] == []
    assert holders(routing, number) == [("forestry", "lead")]
    assert len(assigned(settings, [intake_db, routing_db], number)) == 1


# --- 复查 / 复核 -------------------------------------------------------------------------------

def reviewers(settings: Settings, case_id: str) -> list[ev.CaseAssigned]:
    return [e for _, e in read_subject(settings.nats_url, "cases.assigned.*")
            if e.case_id == case_id and e.role == "reviewer"]


def test_a_review_goes_to_the_county_government_and_a_re_review_to_the_city_government(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = submit(intake, township="chengguan", category="neighbor_dispute")
    assert [e.unit for e in assigned(settings, [intake_db, routing_db], number)] == ["chengguan"]

    review = ev.ReviewRequested(case_id=number, actor=ev.Actor(kind="clerk"), level="review", reason="处理意见不公")
    publish(settings, review)
    wait_until(lambda: reviewers(settings, number), what="the reviewing body")
    [county] = reviewers(settings, number)
    assert (county.unit, county.review_level, county.subject) == ("county_gov", "review", "cases.assigned.county_gov")
    assert county.case.resident_phone == "13812345678" and "*" in county.case.resident_masked_id  # to hear them
    assert county.occurred_at >= review.occurred_at and county.actor.id == "routing"
    answer = ask_routing(settings, "county_gov", number)
    assert (answer.assigned, answer.role) == (True, "reviewer")
    # The reviewing body publishes its opinion (复查意见) through the units' client, which asks routing first.
    unit_do(settings, "county_gov", "reply", number, result="explained", text="维持原处理意见")

    requests = [ev.ReviewRequested(case_id=number, actor=ev.Actor(kind="clerk"), level="review",
                                   reason="again"),  # the same level again: nothing more
                ev.ReviewRequested(case_id=number, actor=ev.Actor(kind="clerk"), level="re_review", reason="仍不服")]
    publish(settings, *requests)
    settled(routing_db, *requests)
    assert [(e.unit, e.review_level) for e in reviewers(settings, number)] == [
        ("county_gov", "review"), ("city_gov", "re_review")]
    assert "county_gov" in reviewers(settings, number)[1].note
    assert [(r["level"], r["unit"]) for r in routed(routing, number)["reviewers"]] == [
        ("review", "county_gov"), ("re_review", "city_gov")]
    assert holders(routing, number)[0] == ("chengguan", "lead")  # the lead still holds its case


def test_a_review_with_no_reviewing_body_in_the_directory_assigns_no_one_and_is_counted(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = submit(intake, category="logging_permit", title="反映采伐证发放问题", accused_units=["forestry"],
                    content="举报县林业局工作人员违规发放采伐证。")
    assert assigned(settings, [intake_db, routing_db], number)[0].unit == "supervision_office"  # an office
    publish(settings, ev.ReviewRequested(case_id=number, actor=ev.Actor(kind="clerk"), level="review", reason="x"))
    missing = 'xf_routing_reviewer_missing_total{level="review"} 1.0'
    wait_until(lambda: missing in routing.get("/metrics").text, what="the missing reviewer to be counted")
    settled(routing_db)
    assert reviewers(settings, number) == [] and routed(routing, number)["reviewers"] == []


# --- 人民政府 -----------------------------------------------------------------------------------

def test_a_triage_decision_naming_a_government_is_refused_with_a_field_error(
        intake: TestClient, routing: TestClient) -> None:
    number = submit(intake, category=None, title="有个情况想反映", content="请领导关心一下我们的事情")
    wait_until(lambda: any(t["case_id"] == number for t in routing.get("/api/v1/triage").json()),
               what="the case in triage")
    refused = routing.post(f"/api/v1/triage/{number}/decision", json={"unit": "county_gov", "reason": "县里统筹"})
    assert refused.status_code == 422, refused.text
    [field] = refused.json()["fields"]
    assert field["field"] == "unit" and "人民政府" in field["message"] and "never given a case" in field["message"]
    assert [t["case_id"] for t in routing.get("/api/v1/triage").json()] == [number]  # still waiting
    assert routing.post(f"/api/v1/triage/{number}/decision",
                        json={"unit": "chengguan", "reason": "属地"}).status_code == 200
