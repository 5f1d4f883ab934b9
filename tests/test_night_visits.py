"""Night visits (驻村夜访) as the bureau reports them: who visited (乡镇领导, 驻站人员) and how (一对一,
多户座谈), households (户次), problems collected and solved — on the spot or as cases — and the
suggestions collected; from intake's log through the bus to scoring's report."""
from __future__ import annotations

from fastapi.testclient import TestClient

from shared.settings import Settings
from tests.helpers import read_subject, wait_until


def visit(intake: TestClient, kind: str | None, fmt: str | None, households: int, problems: int, on_spot: int,
          suggestions: int) -> dict:
    body = {"cadre_name": "李明", "cadre_unit": "chengguan", "township": "chengguan", "village": "chengguan-heping",
            "visited_on": "2026-03-02", "households_visited": households, "solved_on_spot": on_spot,
            "suggestions": suggestions,
            "problems": [{"resident": {"name": f"村民{i}"}, "title": f"灌溉水渠堵塞{i}号段", "content": "水渠堵塞无法灌溉"}
                         for i in range(problems)]}
    body |= {"cadre_kind": kind} if kind else {}
    body |= {"visit_format": fmt} if fmt else {}
    answer = intake.post("/api/v1/visits", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_visits_are_reported_by_who_visited_with_households_problems_solved_and_suggestions(
        intake: TestClient, scoring: TestClient, settings: Settings) -> None:
    visit(intake, "township_leader", "group", households=12, problems=2, on_spot=3, suggestions=5)
    visit(intake, "township_leader", "one_to_one", households=4, problems=0, on_spot=1, suggestions=2)
    visit(intake, "station_staff", "one_to_one", households=30, problems=1, on_spot=6, suggestions=4)
    visit(intake, None, None, households=2, problems=0, on_spot=0, suggestions=0)  # an older client: not recorded
    wait_until(lambda: len(read_subject(settings.nats_url, "visits.logged")) == 4, what="four visits published")
    logged = [e for _, e in read_subject(settings.nats_url, "visits.logged")]
    assert [(e.cadre_kind, e.visit_format, e.solved_on_spot, e.suggestions) for e in logged][:2] == [
        ("township_leader", "group", 3, 5), ("township_leader", "one_to_one", 1, 2)]

    def night() -> dict:
        return scoring.get("/api/v1/reports/2026").json()["channels"]["night_visit"]
    wait_until(lambda: night()["visits"] == 4 and night()["problems"] == 3, what="scoring to count the visits")
    n = night()
    assert (n["households_visited"], n["solved_on_spot"], n["suggestions"]) == (48, 10, 11)
    assert n["by_cadre"]["township_leader"] == {"visits": 2, "households_visited": 16, "problems": 2 + 4,
                                                "solved": 0 + 4, "suggestions": 7}
    assert n["by_cadre"]["station_staff"] == {"visits": 1, "households_visited": 30, "problems": 1 + 6,
                                              "solved": 0 + 6, "suggestions": 4}
    assert n["by_cadre"]["unrecorded"]["visits"] == 1
    narrative = scoring.get("/api/v1/reports/2026").json()["narrative"]
    assert "乡镇领导夜访16户次，收集问题6件，解决4件，收集意见建议7条" in narrative
    assert "驻站人员夜访30户次" in narrative and "未注明" not in narrative


def test_an_unknown_kind_of_cadre_or_format_is_refused_naming_the_field(intake: TestClient) -> None:
    body = {"cadre_name": "李明", "cadre_unit": "chengguan", "township": "chengguan", "village": "chengguan-heping",
            "visited_on": "2026-03-02", "households_visited": 3, "cadre_kind": "mayor", "visit_format": "party",
            "solved_on_spot": -1}
    answer = intake.post("/api/v1/visits", json=body)
    assert answer.status_code == 422
    fields = {e["field"] for e in answer.json()["fields"]}
    assert {"cadre_kind", "visit_format", "solved_on_spot"} <= fields
