"""不再受理 (信访工作条例 Art. 36): once a re-review (复核) was asked, a new petition of the same resident
on the same matter is refused at intake, naming the final case; against a real nats-server and database."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from services.intake.app import create_app
from shared.clock import ManualClock
from shared.settings import Settings
from tests.helpers import TEST_KEYS, case_body, outbox_pending, read_subject, resident_id, table_counts, wait_until

SAME_MATTER = "邻居违规搭建占用通道"  # similar to case_body's title: a repeat, as repeat detection sees it
OTHER_MATTER = "孩子入学难问题"
# Intake's own rule on final matters: supervision's say on each resident step is stood in for (allowed).
pytestmark = pytest.mark.usefixtures("resident_steps_allowed")


def reviewed(intake: TestClient, case: dict, *levels: str) -> None:
    for level in levels:
        answer = intake.post(f"/api/v1/cases/{case['case_number']}/reviews",
                             json={"query_code": case["query_code"], "level": level, "reason": "不服处理意见"})
        assert answer.status_code == 201, answer.text


def re_reviewed(intake: TestClient, **body) -> str:
    """A case of ``case_body(**body)`` whose resident asked for review and then re-review: a final matter."""
    case = intake.post("/api/v1/cases", json=case_body(**body)).json()
    reviewed(intake, case, "review", "re_review")
    return case["case_number"]


def received(settings: Settings, engine: Engine) -> list[str]:
    wait_until(lambda: outbox_pending(engine) == 0, what="the outbox to drain")
    return [e.case_id for _, e in read_subject(settings.nats_url, "cases.received")]


def assert_refused(answer, final_case: str) -> None:  # noqa: ANN001
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert (body["error"], body["reason"], body["final_case"]) == ("conflict", "not_accepted_again", final_case)
    assert "不再受理" in body["message"] and "第三十六条" in body["message"] and "Art. 36" in body["message"]
    assert final_case in body["message"]


@pytest.mark.parametrize("channel", ["walk_in", "online", "referral"])
def test_a_petition_on_a_re_reviewed_matter_is_refused_and_nothing_is_stored(
        intake: TestClient, settings: Settings, intake_db: Engine, channel: str) -> None:
    first = intake.post("/api/v1/cases", json=case_body(n=7), headers={"Idempotency-Key": "first"}).json()
    reviewed(intake, first, "review", "re_review")
    before = table_counts(intake_db)
    answer = intake.post("/api/v1/cases", json=case_body(channel, n=7, title=SAME_MATTER),
                         headers={"Idempotency-Key": "again"})
    assert_refused(answer, first["case_number"])
    assert table_counts(intake_db) == before  # no case, number, key, outbox row
    assert received(settings, intake_db) == [first["case_number"]]
    # the first petition, sent again with its own key, is still answered as it was: it is no new petition
    replay = intake.post("/api/v1/cases", json=case_body(n=7), headers={"Idempotency-Key": "first"})
    assert replay.status_code == 201 and replay.json() == first


def test_another_matter_or_another_resident_still_goes_in(intake: TestClient) -> None:
    final = re_reviewed(intake, n=8)
    other_matter = intake.post("/api/v1/cases", json=case_body(n=8, title=OTHER_MATTER))
    other_person = intake.post("/api/v1/cases", json=case_body(n=9, title=SAME_MATTER))
    assert other_matter.status_code == other_person.status_code == 201
    assert other_matter.json()["repeat_of"] is None and other_person.json()["repeat_of"] is None
    assert intake.post("/api/v1/cases", json=case_body(n=8, title=SAME_MATTER)).json()["final_case"] == final


def test_after_a_review_only_the_same_matter_goes_in_as_a_linked_repeat(intake: TestClient) -> None:
    first = intake.post("/api/v1/cases", json=case_body(n=10)).json()
    reviewed(intake, first, "review")
    again = intake.post("/api/v1/cases", json=case_body(n=10, title=SAME_MATTER))
    assert again.status_code == 201 and again.json()["repeat_of"] == first["case_number"]


def test_a_final_matter_has_no_time_window(settings: Settings, auth: dict) -> None:
    clock = ManualClock(datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc))
    with TestClient(create_app(settings, clock=clock), headers=auth) as client:
        final = re_reviewed(client, n=11)
        clock.advance(timedelta(days=3 * settings.repeat_window_days))
        assert_refused(client.post("/api/v1/cases", json=case_body(n=11, title=SAME_MATTER)), final)


def test_an_id_typed_with_a_lower_case_x_is_the_same_resident(intake: TestClient) -> None:
    n = next(i for i in range(1000) if resident_id(i).endswith("X"))
    final = re_reviewed(intake, n=n)
    lower = {"name": "王建国", "id_number": resident_id(n).lower(), "phone": "13812345678"}
    assert_refused(intake.post("/api/v1/cases", json=case_body(resident=lower, title=SAME_MATTER)), final)


def test_a_matter_re_reviewed_before_a_key_rotation_is_still_found(settings: Settings, auth: dict) -> None:
    old_key = TEST_KEYS["id_hash_key"].split(",")[1]  # the kept key "t1", current before the rotation
    before_rotation = settings.model_copy(update={"id_hash_key": SecretStr(old_key)})
    with TestClient(create_app(before_rotation), headers=auth) as client:
        final = re_reviewed(client, n=12)
    with TestClient(create_app(settings), headers=auth) as client:  # "t2" current, "t1" kept
        assert_refused(client.post("/api/v1/cases", json=case_body(n=12, title=SAME_MATTER)), final)


ROW_COLUMNS = ["name", "id_number", "phone", "township", "village", "category", "title", "content"]


def row(n: int, title: str) -> list:
    return [f"村民{n}", resident_id(n), "13900001111", "xishan", "xishan-zhuyuan", "land_contract", title,
            "两户承包地边界不清"]


@pytest.mark.parametrize("how", ["rows", "upload"])
def test_in_a_drive_import_only_the_row_on_a_final_matter_is_refused(
        intake: TestClient, settings: Settings, intake_db: Engine, how: str) -> None:
    final = re_reviewed(intake, n=13, title="承包地边界纠纷", township="xishan", village="xishan-zhuyuan",
                        category="land_contract")
    drive = intake.post("/api/v1/drives", json={"kind": "quarterly", "name": "2026年第一季度矛盾纠纷排查",
                                                "starts_on": "2026-01-01", "ends_on": "2026-03-31"}).json()["drive_id"]
    rows = [row(14, "承包地边界纠纷"), row(13, "承包地边界纠纷问题"), row(13, "宅基地审批问题")]
    if how == "rows":
        chunk = {"source": "b" * 32, "rows": [{"row": i + 2, "values": dict(zip(ROW_COLUMNS, r))}
                                              for i, r in enumerate(rows)]}
        report = intake.post(f"/api/v1/drives/{drive}/rows", json=chunk).json()
    else:
        out = io.StringIO()
        csv.writer(out).writerows([ROW_COLUMNS, *rows])
        report = intake.post(f"/api/v1/drives/{drive}/import",
                             files={"file": ("排查.csv", out.getvalue().encode("utf-8-sig"))}).json()
    assert (report["rows"], report["created"]) == (3, 2)
    [error] = report["errors"]
    assert (error["row"], error["field"]) == (3, "row")
    assert "不再受理" in error["message"] and "Art. 36" in error["message"] and final in error["message"]
    assert set(report["case_numbers"]) == {"2", "4"}
    assert sorted(received(settings, intake_db)) == sorted([final, *report["case_numbers"].values()])


def test_a_night_visit_with_a_problem_on_a_final_matter_stores_nothing(intake: TestClient, intake_db: Engine) -> None:
    final = re_reviewed(intake, n=15)
    before = table_counts(intake_db)
    answer = intake.post("/api/v1/visits", json={
        "cadre_name": "李明", "cadre_unit": "chengguan", "township": "chengguan", "village": "chengguan-heping",
        "visited_on": "2026-03-02", "households_visited": 9,
        "problems": [{"resident": {"name": "甲"}, "title": "水渠堵塞", "content": "无法灌溉"},
                     {"resident": {"name": "王建国", "id_number": resident_id(15)}, "title": SAME_MATTER,
                      "content": "仍未解决"}]})
    assert_refused(answer, final)
    assert answer.json()["problem"] == 1 and answer.json()["message"].startswith("problems[1]: ")
    assert table_counts(intake_db) == before
