"""Registering cases over HTTP, against a real nats-server and database."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from shared.events import CaseReceived, NightVisitLogged, PetitionerFeedback, ReviewRequested
from shared.settings import Settings
from tests.helpers import case_body, outbox_pending, read_subject, resident_id, wait_until


def published(settings: Settings, engine: Engine, subject: str = "cases.received") -> list:
    """Everything on ``subject`` once the outbox is drained: then nothing more can arrive."""
    wait_until(lambda: outbox_pending(engine) == 0, what="the outbox to drain")
    return read_subject(settings.nats_url, subject)


def open_drive(intake: TestClient, kind: str = "quarterly") -> str:
    answer = intake.post("/api/v1/drives", json={"kind": kind, "name": "2026年第一季度矛盾纠纷排查",
                                                 "starts_on": "2026-01-01", "ends_on": "2026-03-31"})
    assert answer.status_code == 201, answer.text
    return answer.json()["drive_id"]


def log_visit(intake: TestClient, problems: int = 1) -> dict:
    answer = intake.post("/api/v1/visits", json={
        "cadre_name": "李明", "cadre_unit": "chengguan", "township": "chengguan", "village": "chengguan-heping",
        "visited_on": "2026-03-02", "households_visited": 14,
        "problems": [{"resident": {"name": f"村民{i}"}, "title": f"灌溉水渠堵塞{i}号段", "content": "水渠堵塞无法灌溉"}
                     for i in range(problems)]})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_walk_in_case_gets_a_number_and_query_code_and_one_event(intake: TestClient, settings: Settings,
                                                                     intake_db: Engine) -> None:
    answer = intake.post("/api/v1/cases", json=case_body())
    assert answer.status_code == 201, answer.text
    accepted = answer.json()
    assert accepted["case_number"].startswith("QS-") and accepted["case_number"].endswith("-000001")
    assert len(accepted["query_code"]) == 8

    events = published(settings, intake_db)
    assert len(events) == 1
    headers, event = events[0]
    assert isinstance(event, CaseReceived) and event.case_id == accepted["case_number"]
    assert headers["Nats-Msg-Id"] == event.event_id


def test_the_full_resident_id_never_leaves_intake(intake: TestClient, settings: Settings, intake_db: Engine) -> None:
    id_number = resident_id(42)
    assert intake.post("/api/v1/cases", json=case_body(resident={"name": "王建国", "id_number": id_number})).status_code == 201
    [(_, event)] = published(settings, intake_db)
    raw = event.model_dump_json()
    assert id_number not in raw and id_number[6:14] not in raw
    assert event.resident.masked_id == id_number[:6] + "********" + id_number[-4:]
    assert len(event.resident.id_hash) == 64


@pytest.mark.parametrize("channel", ["walk_in", "letter", "phone", "online", "delegated", "screening", "referral",
                                     "night_visit"])
def test_every_channel_is_accepted_with_its_own_fields(intake: TestClient, settings: Settings, intake_db: Engine,
                                                       channel: str, token) -> None:  # noqa: ANN001
    extra = {}
    if channel == "screening":
        extra["drive_id"] = open_drive(intake)
    if channel == "night_visit":
        extra["visit_id"] = log_visit(intake, problems=0)["visit_id"]
    agent = token("agent", agent_id="agent001") if channel == "delegated" else None  # the agent files it
    answer = intake.post("/api/v1/cases", json=case_body(channel, **extra), headers=agent)
    assert answer.status_code == 201, answer.text
    number = answer.json()["case_number"]
    [(_, event)] = published(settings, intake_db)
    assert event.channel == channel and event.case_id == number
    if channel == "delegated":
        assert event.delegation.agent_id == "agent001" and event.delegation.agency_id == "chengguan-ag1"
        assert (event.actor.kind, event.actor.id) == ("agent", "agent001")
    if channel == "referral":
        assert event.referral.doc_no == "市信转〔2026〕17号"
    if channel == "screening":
        assert event.drive_id == extra["drive_id"]
    view = intake.get(f"/api/v1/cases/{number}").json()
    assert view["channel"] == channel and view["resident_masked_id"].count("*") == 8


def test_the_same_idempotency_key_and_body_give_one_case_and_one_event(intake: TestClient, settings: Settings,
                                                                       intake_db: Engine) -> None:
    first = intake.post("/api/v1/cases", json=case_body(), headers={"Idempotency-Key": "clerk7-0001"})
    again = intake.post("/api/v1/cases", json=case_body(), headers={"Idempotency-Key": "clerk7-0001"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(published(settings, intake_db)) == 1


def test_the_same_idempotency_key_with_another_body_is_a_conflict(intake: TestClient, settings: Settings,
                                                                  intake_db: Engine) -> None:
    assert intake.post("/api/v1/cases", json=case_body(), headers={"Idempotency-Key": "k"}).status_code == 201
    other = intake.post("/api/v1/cases", json=case_body(title="另一件事情"), headers={"Idempotency-Key": "k"})
    assert other.status_code == 409
    assert other.json()["error"] == "conflict"
    assert len(published(settings, intake_db)) == 1


def test_numbers_are_consecutive(intake: TestClient) -> None:
    numbers = [intake.post("/api/v1/cases", json=case_body(n=i, title=f"第{i}件不同的事")).json()["case_number"]
               for i in range(5)]
    assert [int(n.rsplit("-", 1)[1]) for n in numbers] == [1, 2, 3, 4, 5]


def test_a_similar_petition_of_the_same_resident_is_linked_as_a_repeat(intake: TestClient) -> None:
    first = intake.post("/api/v1/cases", json=case_body(n=3)).json()
    again = intake.post("/api/v1/cases", json=case_body(n=3, title="邻居违规搭建占用通道")).json()
    other_matter = intake.post("/api/v1/cases", json=case_body(n=3, title="孩子入学难问题")).json()
    other_person = intake.post("/api/v1/cases", json=case_body(n=4)).json()
    assert again["repeat_of"] == first["case_number"] and again["flags"]["repeat"]
    assert other_matter["repeat_of"] is None
    assert other_person["repeat_of"] is None


def test_flags_are_recorded(intake: TestClient, settings: Settings, intake_db: Engine) -> None:
    answer = intake.post("/api/v1/cases", json=case_body(people_count=23, escalated=True, backlog=True)).json()
    assert answer["flags"] == {"collective": True, "escalated": True, "backlog": True, "repeat": False,
                               "special_period": False}
    [(_, event)] = published(settings, intake_db)
    assert event.collective and event.escalated and event.backlog and event.people_count == 23


def test_a_case_in_a_special_period_drive_is_flagged(intake: TestClient) -> None:
    drive = open_drive(intake, kind="special")
    answer = intake.post("/api/v1/cases", json=case_body("screening", drive_id=drive)).json()
    assert answer["flags"]["special_period"]


def test_each_problem_of_a_night_visit_becomes_a_case(intake: TestClient, settings: Settings, intake_db: Engine) -> None:
    logged = log_visit(intake, problems=3)
    assert len(logged["cases"]) == 3
    received = published(settings, intake_db)
    assert {e.case_id for _, e in received} == {c["case_number"] for c in logged["cases"]}
    assert all(e.channel == "night_visit" and e.visit_id == logged["visit_id"] for _, e in received)
    [(_, visit)] = read_subject(settings.nats_url, "visits.logged")
    assert isinstance(visit, NightVisitLogged) and visit.households_visited == 14 and len(visit.case_ids) == 3


@pytest.mark.usefixtures("resident_steps_allowed")  # supervision allows the step
def test_the_resident_gives_feedback_and_asks_for_review_with_the_query_code(intake: TestClient, settings: Settings,
                                                                              intake_db: Engine) -> None:
    case = intake.post("/api/v1/cases", json=case_body()).json()
    number, code = case["case_number"], case["query_code"]
    assert intake.post(f"/api/v1/cases/{number}/feedback", json={"query_code": code, "satisfied": False,
                                                                 "comment": "答复没有解决问题"}).status_code == 201
    assert intake.post(f"/api/v1/cases/{number}/reviews", json={"query_code": code, "level": "review",
                                                                "reason": "不服答复"}).status_code == 201
    assert intake.post(f"/api/v1/cases/{number}/reviews", json={"query_code": code, "level": "re_review",
                                                                "reason": "不服复查"}).status_code == 201
    [(_, feedback)] = published(settings, intake_db, "cases.feedback")
    reviews = read_subject(settings.nats_url, "cases.review_requested")
    assert isinstance(feedback, PetitionerFeedback) and not feedback.satisfied
    assert [e.level for _, e in reviews] == ["review", "re_review"]
    assert all(isinstance(e, ReviewRequested) and e.case_id == number for _, e in reviews)


def test_repeats_count_only_within_the_window_and_numbers_restart_each_year(settings: Settings, auth: dict) -> None:
    from datetime import datetime, timedelta, timezone

    from services.intake.app import create_app
    from shared.clock import ManualClock

    clock = ManualClock(datetime(2026, 6, 1, 2, 0, tzinfo=timezone.utc))
    with TestClient(create_app(settings, clock=clock), headers=auth) as client:
        first = client.post("/api/v1/cases", json=case_body(n=5)).json()
        clock.advance(timedelta(days=settings.repeat_window_days - 1))
        inside = client.post("/api/v1/cases", json=case_body(n=5)).json()
        clock.advance(timedelta(days=settings.repeat_window_days + 1))
        outside = client.post("/api/v1/cases", json=case_body(n=5)).json()
    assert inside["repeat_of"] == first["case_number"]
    assert outside["repeat_of"] is None
    assert [first["case_number"], inside["case_number"], outside["case_number"]] == [
        "QS-2026-000001", "QS-2026-000002", "QS-2027-000001"]


def test_a_night_visit_logged_twice_with_one_key_is_logged_once(intake: TestClient, intake_db: Engine) -> None:
    from tests.helpers import table_counts

    body = {"cadre_name": "李明", "cadre_unit": "chengguan", "township": "chengguan", "village": "chengguan-heping",
            "visited_on": "2026-03-02", "households_visited": 8,
            "problems": [{"resident": {"name": "甲"}, "title": "水渠堵塞", "content": "无法灌溉"}]}
    first = intake.post("/api/v1/visits", json=body, headers={"Idempotency-Key": "nv-1"})
    before = table_counts(intake_db)
    again = intake.post("/api/v1/visits", json=body, headers={"Idempotency-Key": "nv-1"})
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    assert table_counts(intake_db) == before
    other = intake.post("/api/v1/visits", json={**body, "households_visited": 9}, headers={"Idempotency-Key": "nv-1"})
    assert other.status_code == 409 and table_counts(intake_db) == before
