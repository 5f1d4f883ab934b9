"""The front door as a county office meets it: a Chinese keyboard (full-width digits, +86, spaces),
text pasted with invisible or control characters, a NUL that PostgreSQL cannot store, a body that is
not UTF-8 or is nested past reason, a client sending one Idempotency-Key four times at once, an
offline network opening /docs. Every refusal is a 4xx in the documented error body, never a 500,
on SQLite and PostgreSQL."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.helpers import case_body, resident_id, table_counts

WIDE = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


def error_shape(answer) -> dict:  # noqa: ANN001
    body = answer.json()
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
    return body


def test_an_id_typed_with_full_width_digits_is_stored_normalised_and_links_the_same_persons_cases(
        intake: TestClient) -> None:
    number = resident_id(5)
    first = intake.post("/api/v1/cases", json=case_body(resident={
        "name": "王建国", "id_number": " ".join(number.translate(WIDE)[i:i + 6] for i in (0, 6, 12)),
        "phone": "+86 138-1234-5678"}))
    assert first.status_code == 201, first.text
    view = intake.get(f"/api/v1/cases/{first.json()['case_number']}").json()
    assert view["resident_masked_id"] == number[:6] + "********" + number[-4:]
    assert view["resident_phone"] == "13812345678"
    again = intake.post("/api/v1/cases", json=case_body(resident={"name": "王建国", "id_number": number}))
    assert again.json()["repeat_of"] == first.json()["case_number"]  # the same person, typed either way


@pytest.mark.parametrize(("field", "value"), [
    ("title", "邻居违规搭建\u0000占用通道"),
    ("content", "情况说明\u0007"),
    ("resident.name", "\u200b\u200d"),  # zero-width only: empty once they are stripped
    ("resident.address", "\ud800城关镇"),
])
def test_a_control_character_or_an_invisible_only_value_is_refused_naming_the_field(
        intake: TestClient, intake_db: Engine, field: str, value: str) -> None:
    body = case_body()
    if field.startswith("resident."):
        body["resident"] = {**body["resident"], field.split(".")[1]: value}
    else:
        body[field] = value
    before = table_counts(intake_db)
    answer = intake.post("/api/v1/cases", content=json.dumps(body).encode(),  # \u escapes, as a client sends them
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert field in [f["field"] for f in error_shape(answer)["fields"]]
    assert table_counts(intake_db) == before


@pytest.mark.one_database
@pytest.mark.parametrize(("send", "status"), [
    (dict(content=b'{"title": "\xff\xfe\xb0\xa1"}'), 400),  # not UTF-8
    (dict(content=b"[" * 20_000 + b"]" * 20_000), 400),  # nested past the parser's depth
    (dict(content=b'{"channel": '), 400),  # cut short
])
def test_a_body_that_cannot_be_read_gets_the_documented_error(intake: TestClient, send: dict, status: int) -> None:
    answer = intake.post("/api/v1/cases", headers={"Content-Type": "application/json"}, **send)
    assert answer.status_code == status, answer.text
    error_shape(answer)


@pytest.mark.one_database
def test_no_route_a_wrong_method_and_a_nul_in_the_path_get_the_documented_error(intake: TestClient) -> None:
    for answer, status in ((intake.get("/api/v1/nowhere"), 404), (intake.delete("/api/v1/cases"), 405),
                           (intake.get("/api/v1/cases/QS-2026-%00"), 400), (intake.get("/api/v1/drives?x=%01"), 400)):
        assert answer.status_code == status, answer.text
        error_shape(answer)


def test_one_idempotency_key_sent_four_times_at_once_makes_one_case(intake: TestClient, intake_db: Engine) -> None:
    body = case_body(n=9)

    def send(_: int):  # noqa: ANN202
        return intake.post("/api/v1/cases", json=body, headers={"Idempotency-Key": "desk3-retry-42"})
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(send, range(4)))
    assert sorted(a.status_code for a in answers) == [201] * 4, [a.text for a in answers]
    assert len({a.json()["case_number"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 3
    assert table_counts(intake_db)["cases"] == 1

    visit = {"cadre_name": "李明", "cadre_unit": "nanhe", "township": "nanhe", "village": "nanhe-hekou",
             "visited_on": "2026-03-02", "households_visited": 6,
             "problems": [{"resident": {"name": "赵六"}, "title": "灌溉水渠堵塞", "content": "水渠堵塞影响灌溉"}]}

    def log(_: int):  # noqa: ANN202
        return intake.post("/api/v1/visits", json=visit, headers={"Idempotency-Key": "visit-retry-7"})
    with ThreadPoolExecutor(4) as pool:
        logged = list(pool.map(log, range(4)))
    assert sorted(a.status_code for a in logged) == [201] * 4, [a.text for a in logged]
    assert len({a.json()["visit_id"] for a in logged}) == 1 and table_counts(intake_db)["cases"] == 2


@pytest.mark.one_database
def test_the_api_docs_load_with_no_network_beyond_the_service(intake: TestClient) -> None:
    page = intake.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text.lower() and "http" not in page.text.split("<body>")[1]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert intake.get(f"/static-offline-docs/{asset}").status_code == 200
