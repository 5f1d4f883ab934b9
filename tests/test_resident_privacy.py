"""Issue 10, "Secrets and privacy", the resident's side and what leaves intake: the resident's routes
answer alike for a missing case and a wrong code and are limited per case and per client; time travel
exists only in demo/test mode and never goes backwards; jieba's cache is private; codes cannot hold
NATS wildcards; a co-handling unit gets no contact details unless its rule says so."""
from __future__ import annotations

import json
import shutil
import stat
import tempfile
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from services.runtime import app_factory
from shared import events as ev
from shared.clock import ClockError, ManualClock, SystemClock
from shared.directory import ConfigError, load_directory
from shared.settings import REPO_ROOT, Settings
from tests.conftest import running
from tests.helpers import case_body, read_subject, wait_until

started = contextmanager(running)  # a started app's client, for a ``with``

SAMPLE = REPO_ROOT / "deploy" / "config"


def submit(intake: TestClient, **fields) -> dict:  # noqa: ANN003
    answer = intake.post("/api/v1/cases", json=case_body(**fields))
    assert answer.status_code == 201, answer.text
    return answer.json()


# --- the resident's routes: one answer, and limits ------------------------------------------------------

@pytest.mark.parametrize("route", ["feedback", "reviews"])
def test_no_such_case_and_a_wrong_code_answer_alike(intake: TestClient, route: str) -> None:
    number = submit(intake)["case_number"]
    body = {"query_code": "ZZZZZZZZ", "satisfied": True} if route == "feedback" else \
        {"query_code": "ZZZZZZZZ", "level": "review", "reason": "不服"}
    wrong = intake.post(f"/api/v1/cases/{number}/{route}", json=body)
    missing = intake.post(f"/api/v1/cases/QS-2026-999999/{route}", json=body)
    assert wrong.status_code == missing.status_code == 404
    assert wrong.json() == {k: v.replace("QS-2026-999999", number) if isinstance(v, str) else v
                            for k, v in missing.json().items()}
    assert wrong.json() == {"error": "not_found", "message": f"no case {number} with this query code"}


@pytest.mark.usefixtures("resident_steps_allowed")  # supervision allows the step
def test_ten_wrong_codes_lock_the_case_for_an_hour_even_for_the_right_code(
        settings: Settings, auth: dict[str, str]) -> None:
    clock = ManualClock(SystemClock().now())
    with started("intake", settings, auth, clock=clock) as intake:
        case = submit(intake)
        number, url = case["case_number"], f"/api/v1/cases/{case['case_number']}/feedback"
        for _ in range(settings.resident_case_failures):
            assert intake.post(url, json={"query_code": "ZZZZZZZZ", "satisfied": True}).status_code == 404
        clock.advance(timedelta(minutes=10))
        locked = intake.post(url, json={"query_code": case["query_code"], "satisfied": True})
        assert locked.status_code == 429
        assert locked.headers["Retry-After"] == "3000"  # the first failure leaves the window in 50 minutes
        assert locked.json() == {"error": "too_many_attempts", "retry_after": 3000,
                                 "message": "too many wrong query codes for this case number; try again in 3000 s"}
        assert intake.post(f"/api/v1/cases/{number}/reviews", json={
            "query_code": case["query_code"], "level": "review", "reason": "不服"}).status_code == 429
        clock.advance(timedelta(minutes=50))
        assert intake.post(url, json={"query_code": case["query_code"], "satisfied": True}).status_code == 201


def test_a_missing_case_number_is_locked_alike(settings: Settings, auth: dict[str, str]) -> None:
    with started("intake", settings, auth) as intake:
        url = "/api/v1/cases/QS-2026-999999/feedback"
        answers = [intake.post(url, json={"query_code": "ZZZZZZZZ", "satisfied": True}).status_code
                   for _ in range(settings.resident_case_failures + 1)]
        assert answers == [404] * settings.resident_case_failures + [429]


def test_one_client_guessing_across_cases_is_limited(settings: Settings, auth: dict[str, str]) -> None:
    limited = settings.model_copy(update={"resident_client_failures": 5})
    with started("intake", limited, auth) as intake:
        case = submit(intake)
        for n in range(5):
            assert intake.post(f"/api/v1/cases/QS-2026-99990{n}/feedback",
                               json={"query_code": "ZZZZZZZZ", "satisfied": True}).status_code == 404
        answer = intake.post(f"/api/v1/cases/{case['case_number']}/feedback",
                             json={"query_code": case["query_code"], "satisfied": True})
        assert answer.status_code == 429 and "this address" in answer.json()["message"]
        assert int(answer.headers["Retry-After"]) > 3500


def test_the_progress_lookup_answers_alike_and_is_limited(
        settings: Settings, intake: TestClient, routing: TestClient, auth: dict[str, str]) -> None:
    case = submit(intake)
    number = case["case_number"]
    limited = settings.model_copy(update={"resident_case_failures": 3})
    with started("supervision", limited, auth) as supervision:
        ok = {"case_id": number, "query_code": case["query_code"]}
        # Waited for by the clerk's route: every 404 of the resident's counts toward the limit.
        wait_until(lambda: supervision.get(f"/api/v1/cases/{number}").status_code == 200, what="supervision")
        assert supervision.post("/api/v1/progress", json=ok).status_code == 200
        wrong = supervision.post("/api/v1/progress", json={"case_id": number, "query_code": "ZZZZZZZZ"})
        missing = supervision.post("/api/v1/progress", json={"case_id": "QS-2026-999999", "query_code": "ZZZZZZZZ"})
        assert wrong.status_code == missing.status_code == 404
        assert wrong.json()["message"] == missing.json()["message"].replace("QS-2026-999999", number)
        supervision.post("/api/v1/progress", json={"case_id": number, "query_code": "YYYYYYYY"})
        supervision.post("/api/v1/progress", json={"case_id": number, "query_code": "XXXXXXXX"})
        locked = supervision.post("/api/v1/progress", json=ok)
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
        assert locked.json()["error"] == "too_many_attempts"


# --- time travel ------------------------------------------------------------------------------------

def test_a_manual_clock_never_moves_backwards() -> None:
    clock = ManualClock(SystemClock().now())
    before = clock.now()
    with pytest.raises(ClockError, match="never moves backwards"):
        clock.set(before - timedelta(seconds=1))
    with pytest.raises(ClockError):
        clock.advance(timedelta(days=-1))
    assert clock.now() == before
    clock.set(before)  # the same time is not backwards
    clock.set(before + timedelta(days=1))
    assert clock.now() == before + timedelta(days=1)


def test_time_travel_exists_only_in_demo_or_test_mode(settings: Settings, auth: dict[str, str]) -> None:
    assert Settings().mode == "production" and not Settings().time_travel
    assert Settings(mode="demo").time_travel and Settings(mode="test").time_travel
    production = settings.model_copy(update={"mode": "production"})
    # Routes are made with the app: it need not start (no ``with``) to show it has none.
    intake = TestClient(app_factory("intake")(production), headers=auth)
    assert intake.put("/api/v1/clock", json={"now": "2030-01-01T00:00:00Z"}).status_code == 404
    assert "/api/v1/clock" not in intake.get("/openapi.json").json()["paths"]
    supervision = TestClient(app_factory("supervision")(production, clock=ManualClock(SystemClock().now())),
                             headers=auth)  # a manual clock alone does not make the route
    assert supervision.post("/api/v1/clock/advance", json={"days": 1}).status_code == 404
    assert "/api/v1/clock/advance" not in supervision.get("/openapi.json").json()["paths"]
    demo = TestClient(app_factory("supervision")(settings.model_copy(update={"mode": "demo"})), headers=auth)
    assert "/api/v1/clock/advance" in demo.get("/openapi.json").json()["paths"]


def test_in_test_mode_the_clock_moves_forward_only_and_starts_where_told(
        settings: Settings, auth: dict[str, str]) -> None:
    start = datetime(2026, 1, 1, 1, tzinfo=timezone.utc)  # XF_CLOCK_START=2026-01-01T01:00:00Z
    test_mode = settings.model_copy(update={"mode": "test", "clock_start": start})
    with started("intake", test_mode, auth) as intake:
        forward = intake.put("/api/v1/clock", json={"now": "2026-01-02T01:00:00Z"})
        assert forward.status_code == 200 and forward.json()["now"].startswith("2026-01-02T01:00:00")
        back = intake.put("/api/v1/clock", json={"now": "2026-01-01T12:00:00Z"})
        assert back.status_code == 409 and back.json()["error"] == "conflict"
        assert "never moves backwards" in back.json()["message"] and back.json()["now"].startswith("2026-01-02T01")
        assert submit(intake)["received_at"].startswith("2026-01-02T01:00:00")  # the clock did not move
    with started("supervision", test_mode, auth) as supervision:
        moved = supervision.post("/api/v1/clock/advance", json={"days": 2})
        assert moved.status_code == 200 and moved.json()["now"].startswith("2026-01-03T01:00:00")
        assert supervision.post("/api/v1/clock/advance", json={"days": -1}).status_code == 422


# --- jieba's cache ------------------------------------------------------------------------------------

def test_jiebas_cache_is_in_a_private_folder_not_the_shared_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.routing import classifier as model

    shared_tmp = tmp_path / "shared-tmp"
    shared_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    monkeypatch.setattr(model, "_DICTIONARY", [])  # as a fresh process: load the dictionary again
    cache = tmp_path / "var" / "cache" / "jieba"
    classifier = model.Classifier(load_directory(SAMPLE), cache, corpus=[])  # the keywords alone: fast
    assert classifier.classify("山林界址纠纷", "与邻村山林界址不清")[0] == "forestry_rights"
    assert (cache / "jieba.cache").is_file()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert list(shared_tmp.iterdir()) == []


def test_the_routing_service_caches_in_its_data_dir(tmp_path: Path) -> None:
    from services.routing.app import create_app

    settings = Settings(data_dir=tmp_path / "var", nats_url="nats://127.0.0.1:9")
    app = create_app(settings)  # not started: the classifier is built with the app
    # (the dictionary is loaded once per process: the first routing app of the process made the folder)
    assert app.state.routing.classifier._jieba.tmp_dir == str(settings.data_dir / "cache" / "jieba")


# --- codes are NATS subject tokens --------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["chengguan.east", "cheng*", "cheng>"])
def test_the_directory_refuses_codes_with_nats_wildcards_naming_file_and_line(tmp_path: Path, bad: str) -> None:
    config = tmp_path / "config"
    shutil.copytree(SAMPLE, config)
    path = config / "departments.yaml"
    text = path.read_text(encoding="utf-8")
    assert "code: forestry\n" in text
    path.write_text(text.replace("code: forestry\n", f"code: '{bad}'\n", 1), encoding="utf-8")
    line = next(i for i, s in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if bad in s)
    with pytest.raises(ConfigError) as info:
        load_directory(config)
    message = str(info.value)
    assert f"departments.yaml:{line}: departments[" in message and ".code: code " in message
    assert "NATS subject tokens" in message


def test_a_village_or_category_code_with_a_dot_is_refused_too(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(SAMPLE, config)
    path = config / "categories.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("code: forestry_rights", "code: forestry.rights", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"categories\.yaml:\d+: categories\[\d+\]\.code: code 'forestry\.rights' may "
                                          r"not contain '\.'"):
        load_directory(config)


@pytest.mark.parametrize("bad", ["a.b", "a*", "a>", "a b"])
def test_events_refuse_such_codes(bad: str) -> None:
    with pytest.raises(ValidationError):
        ev.UnitSigned(case_id="QS-2026-000001", unit=bad, actor=ev.Actor(kind="unit", id="x"))
    ok = ev.UnitSigned(case_id="QS-2026-000001", unit="chengguan-x_1", actor=ev.Actor(kind="unit", id="x"))
    assert ev.decode(ok.model_dump_json().encode()) == ok
    raw = ok.model_dump_json().replace('"unit":"chengguan-x_1"', f'"unit":"{bad}"').encode()
    with pytest.raises(ev.UndecodableEvent, match="unit"):
        ev.decode(raw)


def test_the_frozen_payloads_hold_no_dotted_code() -> None:
    paths = sorted((REPO_ROOT / "tests" / "fixtures" / "events").glob("*.json"))
    for path in paths:
        for stored in json.loads(path.read_text(encoding="utf-8")):  # each still decodes, stricter pattern and all
            ev.decode(json.dumps(stored["payload"]).encode())
    assert len(paths) >= 20


def test_a_routing_rule_unit_with_a_dot_is_refused(tmp_path: Path) -> None:
    from shared.rules import load_routing

    config = tmp_path / "config"
    shutil.copytree(SAMPLE, config)
    path = config / "routing.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("lead: forestry", "lead: forestry.x", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"routing\.yaml:\d+: rules\[\d+\]\.lead"):
        load_routing(config, load_directory(config))


# --- what a co-handling unit receives ---------------------------------------------------------------

def test_the_rules_say_whether_co_handling_units_see_the_contact() -> None:
    from services.routing import domain
    from services.routing.domain import CaseFacts
    from shared.rules import load_routing

    d = load_directory(SAMPLE)
    config = load_routing(SAMPLE, d)
    assert not any(r.co_sees_contact for r in config.rules if r.id != "wage-arrears")
    wage = domain.route(CaseFacts("walk_in", "chengguan", "wage_arrears", "t", "c"), config, d)
    pollution = domain.route(CaseFacts("walk_in", "matou", "pollution", "t", "c"), config, d)
    assert (wage.co, wage.co_sees_contact) == (("chengguan",), True)
    assert (pollution.co, pollution.co_sees_contact) == (("matou", "market"), False)


def test_a_brief_for_a_co_handling_unit_has_no_phone_and_no_masked_id() -> None:
    brief = ev.CaseBrief(title="t", content="c", channel="walk_in", received_at=SystemClock().now(),
                         township="matou", resident_name="王建国", resident_masked_id="331082********0011",
                         resident_phone="13812345678")
    assert brief.for_role("lead") == brief
    assert brief.for_role("co", co_sees_contact=True) == brief
    co = brief.for_role("co")
    assert co.resident_phone is None and co.resident_masked_id is None and co.resident_name == "王建国"


def test_routing_gives_co_handling_units_the_contact_only_where_the_rule_says_so(
        settings: Settings, intake: TestClient, routing: TestClient) -> None:
    pollution = submit(intake, n=1, township="matou", village="matou-hexi", category="pollution", title="工业园区企业排污")
    wages = submit(intake, n=2, category="wage_arrears", title="工地拖欠农民工工资")

    def assignments(number: str) -> dict[str, ev.CaseAssigned]:
        return {e.unit: e for _, e in read_subject(settings.nats_url, "cases.assigned.*") if e.case_id == number}
    wait_until(lambda: len(assignments(pollution["case_number"])) == 3 and len(assignments(wages["case_number"])) == 2,
               what="the assignments")
    p = assignments(pollution["case_number"])
    assert p["ecology"].role == "lead" and p["ecology"].case.resident_phone == "13812345678"
    assert "*" in p["ecology"].case.resident_masked_id
    for co in ("matou", "market"):
        assert p[co].role == "co" and p[co].case.resident_phone is None and p[co].case.resident_masked_id is None
        assert p[co].case.title == "工业园区企业排污"
    w = assignments(wages["case_number"])
    assert w["chengguan"].role == "co" and w["chengguan"].case.resident_phone == "13812345678"
    assert w["chengguan"].case.resident_masked_id is not None

