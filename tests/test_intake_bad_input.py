"""Bad input gets a 4xx naming each failing field, and changes nothing (no row, no number, no event)."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.helpers import case_body, resident_id, table_counts

# SQLite only (tests/conftest.py): refused by the input checks before any database; what PostgreSQL itself
# refuses (NUL) is in tests/test_front_door.py.
pytestmark = pytest.mark.one_database


def field_names(answer) -> set[str]:  # noqa: ANN001
    return {f["field"] for f in answer.json()["fields"]}


def with_resident(**fields) -> dict:
    return case_body(resident={"name": "王建国", "id_number": resident_id(1), "phone": "13812345678", **fields})


BAD_BODIES = {
    "wrong id checksum": (with_resident(id_number=resident_id(1)[:-1] + ("1" if resident_id(1)[-1] != "1" else "2")),
                          "resident.id_number", "check character"),
    "id with an impossible date": (with_resident(id_number="331082198002300013"), "resident.id_number", "date"),
    "malformed phone": (with_resident(phone="12345"), "resident.phone", "mobile"),
    "empty name": (with_resident(name=""), "resident.name", "at least 1"),
    "empty title": (case_body(title=""), "title", "at least 2"),
    "oversized content": (case_body(content="很" * 5001), "content", "at most 5000"),
    "unknown township": (case_body(township="atlantis"), "township", "unknown township"),
    "village of another township": (case_body(village="donghu-hubin"), "village", "unknown village of chengguan"),
    "unknown category": (case_body(category="ufo"), "category", "unknown category"),
    "unknown accused unit": (case_body(accused_units=["nobody"]), "accused_units[0]", "unknown unit"),
    "unknown agent": (case_body("delegated", delegation={"agent_id": "agent999", "service_type": "business_license"}),
                      "delegation.agent_id", "/api/v1/directory/agents"),
    "unknown service type": (case_body("delegated", delegation={"agent_id": "agent001", "service_type": "magic"}),
                             "delegation.service_type", "unknown service type"),
    "unknown drive": (case_body("screening", drive_id="D2026-999"), "drive_id", "no open drive"),
    "unknown visit": (case_body("night_visit", visit_id="NV2026-99999"), "visit_id", "no logged visit"),
    "unknown channel": (case_body("pigeon"), "channel", "Input should be"),
    "unknown field": (case_body(mood="angry"), "mood", "Extra inputs"),
    "delegated without delegation": ({**case_body(), "channel": "delegated"}, "delegation", "required for channel delegated"),
    "screening without drive": ({**case_body(), "channel": "screening"}, "drive_id", "required for channel screening"),
    "referral without document": ({**case_body(), "channel": "referral"}, "referral", "required for channel referral"),
    "night visit without visit": ({**case_body(), "channel": "night_visit"}, "visit_id", "required for channel night_visit"),
    "online without phone": (case_body("online", resident={"name": "王建国", "id_number": resident_id(1)}),
                             "resident.phone", "required for channel online"),
    "walk-in without id": (case_body("walk_in", resident={"name": "王建国"}), "resident.id_number",
                           "required for channel walk_in"),
    "block of another channel": (case_body("walk_in", referral={"doc_no": "x"}), "referral", "only for channel referral"),
    "people count zero": (case_body(people_count=0), "people_count", "greater than or equal to 1"),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_a_bad_case_is_refused_naming_the_field_and_changes_nothing(intake: TestClient, intake_db: Engine,
                                                                    name: str) -> None:
    body, field, message = BAD_BODIES[name]
    before = table_counts(intake_db)
    answer = intake.post("/api/v1/cases", json=body, headers={"Idempotency-Key": f"bad-{name}"})
    assert answer.status_code == 422, answer.text
    fields = {f["field"]: f for f in answer.json()["fields"]}
    assert field in fields, fields
    assert message in json.dumps(fields[field], ensure_ascii=False)
    assert table_counts(intake_db) == before


def test_unknown_codes_list_the_valid_ones_or_say_where_they_are(intake: TestClient) -> None:
    township = intake.post("/api/v1/cases", json=case_body(township="atlantis")).json()["fields"][0]
    assert "chengguan" in township["valid"] and len(township["valid"]) == 12
    village = intake.post("/api/v1/cases", json=case_body(village="nowhere")).json()["fields"][0]
    assert "chengguan-xinhua" in village["valid"] and not any(v.startswith("donghu") for v in village["valid"])
    agent = intake.post("/api/v1/cases", json=case_body("delegated", delegation={
        "agent_id": "agent999", "service_type": "business_license"})).json()["fields"][0]
    assert agent["see"] == "/api/v1/directory/agents"
    assert any(a["agents"] for a in intake.get(agent["see"]).json())


def test_every_failing_field_is_named_at_once(intake: TestClient) -> None:
    body = case_body(title="", township="atlantis", category="ufo",
                     resident={"name": "王建国", "id_number": "331082198001010016", "phone": "999"})
    answer = intake.post("/api/v1/cases", json=body)
    assert answer.status_code == 422
    assert field_names(answer) == {"title", "resident.id_number", "resident.phone", "township", "category"}


def test_malformed_json_is_refused(intake: TestClient, intake_db: Engine) -> None:
    before = table_counts(intake_db)
    answer = intake.post("/api/v1/cases", content=b'{"channel": "walk_in",', headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "malformed_json" and field_names(answer) == {"body"}
    assert table_counts(intake_db) == before


def test_a_body_over_the_limit_is_refused_unread(intake: TestClient, intake_db: Engine) -> None:
    before = table_counts(intake_db)
    answer = intake.post("/api/v1/cases", content=b"{" + b" " * 70_000 + b"}", headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and field_names(answer) == {"body"}
    assert table_counts(intake_db) == before


def test_a_chunked_body_over_the_limit_is_refused(intake: TestClient, intake_db: Engine) -> None:
    before = table_counts(intake_db)

    def chunks():  # noqa: ANN202 - no Content-Length: the server must count as it reads
        for _ in range(100):
            yield b" " * 1000

    answer = intake.post("/api/v1/cases", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert table_counts(intake_db) == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_wrong_content_type_is_refused(intake: TestClient, intake_db: Engine, content_type: str | None) -> None:
    before = table_counts(intake_db)
    headers = {"Content-Type": content_type} if content_type else {}
    answer = intake.post("/api/v1/cases", content=json.dumps(case_body()).encode(), headers=headers)
    assert answer.status_code == 415 and field_names(answer) == {"content-type"}
    assert table_counts(intake_db) == before


def test_a_case_for_a_closed_drive_is_refused(intake: TestClient, intake_db: Engine) -> None:
    drive = intake.post("/api/v1/drives", json={"kind": "quarterly", "name": "一季度排查", "starts_on": "2026-01-01",
                                                "ends_on": "2026-03-31"}).json()["drive_id"]
    assert intake.post(f"/api/v1/drives/{drive}/close").status_code == 200
    before = table_counts(intake_db)
    answer = intake.post("/api/v1/cases", json=case_body("screening", drive_id=drive))
    assert answer.status_code == 422 and field_names(answer) == {"drive_id"}
    assert table_counts(intake_db) == before


def test_a_drive_ending_before_it_starts_is_refused(intake: TestClient, intake_db: Engine) -> None:
    before = table_counts(intake_db)
    answer = intake.post("/api/v1/drives", json={"kind": "special", "name": "国庆排查", "starts_on": "2026-10-01",
                                                 "ends_on": "2026-09-01"})
    assert answer.status_code == 422 and field_names(answer) == {"ends_on"}
    assert table_counts(intake_db) == before


def test_a_night_visit_with_a_bad_problem_stores_nothing(intake: TestClient, intake_db: Engine) -> None:
    before = table_counts(intake_db)
    answer = intake.post("/api/v1/visits", json={
        "cadre_name": "李明", "cadre_unit": "chengguan", "township": "chengguan", "village": "chengguan-heping",
        "visited_on": "2026-03-02", "households_visited": 9,
        "problems": [{"resident": {"name": "甲"}, "title": "水渠堵塞", "content": "无法灌溉"},
                     {"resident": {"name": "乙", "id_number": "123"}, "title": "道路破损", "content": "雨天难行"}]})
    assert answer.status_code == 422
    assert field_names(answer) == {"problems[1].resident.id_number"}
    assert table_counts(intake_db) == before


def test_feedback_with_a_wrong_query_code_is_refused_and_changes_nothing(intake: TestClient, intake_db: Engine) -> None:
    number = intake.post("/api/v1/cases", json=case_body()).json()["case_number"]
    before = table_counts(intake_db)
    wrong = intake.post(f"/api/v1/cases/{number}/feedback", json={"query_code": "ZZZZZZZZ", "satisfied": True})
    unknown = intake.post("/api/v1/cases/QS-2026-999999/feedback", json={"query_code": "ZZZZZZZZ", "satisfied": True})
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.json()["message"].endswith("with this query code")
    after = table_counts(intake_db)
    assert after.pop("resident_failures") == before.pop("resident_failures") + 4  # counted: case and client, twice
    assert after == before


def test_a_re_review_before_a_review_is_refused(intake: TestClient, intake_db: Engine) -> None:
    case = intake.post("/api/v1/cases", json=case_body()).json()
    before = table_counts(intake_db)
    answer = intake.post(f"/api/v1/cases/{case['case_number']}/reviews",
                         json={"query_code": case["query_code"], "level": "re_review", "reason": "不服"})
    assert answer.status_code == 422 and field_names(answer) == {"level"}
    assert table_counts(intake_db) == before
