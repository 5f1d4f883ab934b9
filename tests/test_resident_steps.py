"""A resident's feedback and review requests are checked against the case's lifecycle before intake
records them (intake asks supervision on ``resident_step.intake``): asked too early or after the
matter is final, the answer is 409 with the reason, nothing is recorded, and the right is not used
up; when supervision cannot answer, 503 and nothing recorded. Real services on a real nats-server."""
from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from shared.settings import Settings
from tests.helpers import case_body, table_counts
from tests.test_procedure import act, until


def ask(intake: TestClient, case: str, code: str, level: str) -> object:
    return intake.post(f"/api/v1/cases/{case}/reviews", json={"query_code": code, "level": level, "reason": "不服"})


def test_a_review_asked_before_the_opinion_is_refused_and_the_right_stays(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings,
        intake_db: Engine) -> None:
    filed = intake.post("/api/v1/cases", json=case_body(category="logging_permit")).json()
    case, code = filed["case_number"], filed["query_code"]
    until(supervision, case, "the assignment", state="assigned", lead="forestry")
    before = table_counts(intake_db)

    early = ask(intake, case, code, "review")
    assert early.status_code == 409, early.text
    assert early.json()["error"] == "conflict" and early.json()["reason"] == "not_now"
    assert "nothing to review" in early.json()["message"] and early.json()["state"] == "assigned"
    feedback = intake.post(f"/api/v1/cases/{case}/feedback", json={"query_code": code, "satisfied": False})
    assert feedback.status_code == 409 and "feedback before a reply" in feedback.json()["message"], feedback.text
    assert table_counts(intake_db) == before  # nothing recorded

    act(settings, "forestry", "sign", case)
    act(settings, "forestry", "decide_acceptance", case, "accepted")
    act(settings, "forestry", "reply", case, "not_supported", "经核查，诉求缺乏依据，不予支持。")
    until(supervision, case, "the opinion", state="replied")
    assert intake.post(f"/api/v1/cases/{case}/feedback", json={"query_code": code, "satisfied": False}).status_code == 201
    real = ask(intake, case, code, "review")  # the right was not used up by the early request
    assert real.status_code == 201, real.text
    until(supervision, case, "the review", state="reopened")
    again = ask(intake, case, code, "review")
    assert again.status_code == 409 and again.json()["reason"] == "already_requested", again.text


def test_a_step_on_a_case_supervision_cannot_be_asked_about_is_503_and_recorded_nowhere(
        intake: TestClient, intake_db: Engine) -> None:
    """No supervision on the bus: intake cannot tell whether the step fits, so it records nothing."""
    filed = intake.post("/api/v1/cases", json=case_body()).json()
    before = table_counts(intake_db)
    answer = ask(intake, filed["case_number"], filed["query_code"], "review")
    assert answer.status_code == 503 and answer.json()["error"] == "unavailable", answer.text
    assert answer.headers["Retry-After"]
    assert table_counts(intake_db) == before


def test_a_wrong_query_code_is_refused_before_supervision_is_asked(
        intake: TestClient, resident_steps_allowed: list[dict]) -> None:
    """The code is checked first: nobody learns a case's progress without its code."""
    filed = intake.post("/api/v1/cases", json=case_body()).json()
    wrong = ask(intake, filed["case_number"], "WRONG234", "review")
    assert wrong.status_code == 404 and resident_steps_allowed == []
    right = ask(intake, filed["case_number"], filed["query_code"], "review")
    assert right.status_code == 201 and resident_steps_allowed == [
        {"case_id": filed["case_number"], "step": "review"}]
