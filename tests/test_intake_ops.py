"""What ops and security rely on: metrics without personal data, readiness, tokens, quiet logs, OpenAPI."""
from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from tests.helpers import case_body, resident_id, wait_until


def test_metrics_count_cases_by_channel_and_routes_by_template(intake: TestClient) -> None:
    number = intake.post("/api/v1/cases", json=case_body()).json()["case_number"]
    intake.get(f"/api/v1/cases/{number}")
    text = intake.get("/metrics").text
    assert 'xf_intake_cases_received_total{channel="walk_in"} 1.0' in text
    assert 'route="/api/v1/cases/{number}"' in text
    assert number not in text and "王建国" not in text
    assert "xf_outbox_pending" in text


def test_ready_when_nats_and_the_database_answer(intake: TestClient) -> None:
    # Intake is ready without NATS too (its outbox keeps every case): wait for the connection itself.
    wait_until(lambda: intake.get("/readyz").json()["checks"].get("nats") is True, what="the NATS connection")
    answer = intake.get("/readyz")
    assert answer.status_code == 200 and answer.json()["checks"] == {"nats": True, "database": True}


def test_logs_carry_no_personal_data(intake: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    id_number = resident_id(77)
    with caplog.at_level(logging.DEBUG):
        intake.post("/api/v1/cases", json=case_body(resident={"name": "赵秘密", "id_number": id_number,
                                                               "phone": "13911112222"}))
        intake.post("/api/v1/cases", json=case_body(resident={"name": "赵秘密", "id_number": "bad"}))
    logged = caplog.text
    assert "赵秘密" not in logged and id_number not in logged and "13911112222" not in logged


@pytest.mark.usefixtures("resident_steps_allowed")  # supervision allows the step
def test_clerk_routes_need_a_token_and_resident_routes_do_not(intake: TestClient, intake_db) -> None:  # noqa: ANN001
    from tests.helpers import NO_TOKEN, table_counts

    before = table_counts(intake_db)
    refused = intake.post("/api/v1/cases", json=case_body(), headers=NO_TOKEN)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert refused.json() == {"error": "unauthorized", "message": "this route needs a bearer token (agent or clerk)"}
    assert intake.post("/api/v1/cases", json=case_body(), headers={"Authorization": "Bearer wrong"}).json() == {
        "error": "unauthorized", "message": "unknown token"}
    assert table_counts(intake_db) == before
    case = intake.post("/api/v1/cases", json=case_body()).json()
    feedback = intake.post(f"/api/v1/cases/{case['case_number']}/feedback", headers=NO_TOKEN,
                           json={"query_code": case["query_code"], "satisfied": True})
    assert feedback.status_code == 201


def test_the_openapi_schema_documents_every_route(intake: TestClient) -> None:
    paths = intake.get("/openapi.json").json()["paths"]
    assert {"/api/v1/cases", "/api/v1/cases/{number}", "/api/v1/visits", "/api/v1/drives",
            "/api/v1/drives/{drive_id}/import", "/api/v1/drives/{drive_id}/rows",
            "/api/v1/cases/{number}/feedback", "/api/v1/cases/{number}/reviews"} <= set(paths)
