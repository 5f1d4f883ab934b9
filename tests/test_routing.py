"""Routing against a real nats-server: intake → routing → the unit's own subject, and back."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import nats
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, Table, func, select

from services.intake import tables as intake_tables
from services.routing import tables as routing_tables
from services.units.client import Refused, UnitClient
from shared import events as ev
from shared.settings import Settings
from tests.helpers import STAFF_ID, case_body, outbox_pending, read_raw, read_subject, resident_id, wait_until


def submit(intake: TestClient, n: int = 1, **fields) -> str:
    answer = intake.post("/api/v1/cases", json=case_body(n=n, **fields))
    assert answer.status_code == 201, answer.text
    return answer.json()["case_number"]


def assigned(settings: Settings, engines: list[Engine], case_id: str | None = None) -> list[ev.CaseAssigned]:
    """Every CaseAssigned in the stream once routing has decided every case intake stored and both
    outboxes are drained (nothing more can arrive: a decision and its events commit together)."""
    intake_db, routing_db = engines
    wait_until(lambda: outbox_pending(intake_db) == 0, what="intake's outbox to drain")
    wait_until(lambda: rows(routing_db, routing_tables.cases) >= rows(intake_db, intake_tables.cases),
               what="routing to decide every case")
    wait_until(lambda: outbox_pending(routing_db) == 0, what="routing's outbox to drain")
    events = [e for _, e in read_subject(settings.nats_url, "cases.assigned.*")]
    return [e for e in events if case_id is None or e.case_id == case_id]


def rows(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def routed(routing: TestClient, case_id: str) -> dict:
    wait_until(lambda: routing.get(f"/api/v1/routing/{case_id}").status_code == 200, what=f"{case_id} routed")
    return routing.get(f"/api/v1/routing/{case_id}").json()


def publish(settings: Settings, *events: ev.Event) -> None:
    """Publish events as their publishers do (their own subject, ``Nats-Msg-Id: <event_id>``)."""
    async def go() -> None:
        nc = await nats.connect(settings.nats_url)
        js = nc.jetstream()
        for e in events:
            await js.publish(e.subject, ev.encode(e), headers={"Nats-Msg-Id": e.event_id})
        await nc.close()
    asyncio.run(go())


def decide_objection(settings: Settings, case_id: str, unit: str, approved: bool = True, reason: str = "",
                     objection: ev.Event | None = None) -> ev.ObjectionDecided:
    """The bureau's decision on a unit's objection (异议审核), as supervision publishes it."""
    decision = ev.ObjectionDecided(case_id=case_id, unit=unit, approved=approved, reason=reason,
                                   actor=ev.Actor(kind="supervisor", id="s1"), occurred_at=datetime.now(timezone.utc),
                                   objection_event_id=objection.event_id if objection else None)
    publish(settings, decision)
    return decision


def objections(routing: TestClient, case_id: str, unit: str, status: str) -> list[dict]:
    return [o for o in routed(routing, case_id)["objections"] if o["unit"] == unit and o["status"] == status]


def unit_do(settings: Settings, unit: str, action: str, case_id: str, **kw) -> ev.Event:  # noqa: ANN003
    async def go() -> ev.Event:
        async with UnitClient(settings.nats_url, unit) as client:
            return await getattr(client, action)(case_id, **kw)
    return asyncio.run(go())


def test_a_case_reaches_the_unit_the_rules_name_within_a_second_exactly_once_and_no_other_unit(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    wait_until(lambda: routing.get("/readyz").status_code == 200, what="routing to be ready")

    async def submit_and_listen() -> tuple[str, float, list]:
        nc = await nats.connect(settings.nats_url)
        forestry, health = asyncio.Queue(), asyncio.Queue()
        js = nc.jetstream()
        await js.subscribe("cases.*.forestry", cb=forestry.put, ordered_consumer=True)
        await js.subscribe("cases.*.health", cb=health.put, ordered_consumer=True)
        started = time.monotonic()
        number = await asyncio.to_thread(submit, intake, category="logging_permit", title="申请采伐自家承包山林木")
        msg = await asyncio.wait_for(forestry.get(), timeout=5)
        elapsed = time.monotonic() - started
        await nc.flush()
        others = [health.get_nowait() for _ in range(health.qsize())]
        await nc.close()
        return number, elapsed, [msg] + others

    number, elapsed, [msg, *health_saw] = asyncio.run(submit_and_listen())
    event = ev.decode(msg.data)
    assert elapsed < 1.0, f"took {elapsed:.2f}s"
    assert isinstance(event, ev.CaseAssigned) and event.case_id == number and event.unit == "forestry"
    assert event.rule_id == "logging-permit" and event.role == "lead"
    assert event.case.title == "申请采伐自家承包山林木" and "*" in event.case.resident_masked_id
    assert health_saw == []
    all_assigned = assigned(settings, [intake_db, routing_db], number)
    assert [(e.unit, e.role) for e in all_assigned] == [("forestry", "lead")]  # exactly once
    why = routed(routing, number)
    assert why["assignments"][0]["rule_id"] == "logging-permit"


def test_a_unit_started_after_ten_assignments_receives_all_ten(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    numbers = {submit(intake, n=i, category="forestry_rights", title=f"山林界址纠纷第{i}起") for i in range(10)}
    # Drained outboxes are not enough: routing may not have consumed every receipt yet.
    wait_until(lambda: len(assigned(settings, [intake_db, routing_db])) >= 10, what="ten assignments")

    async def late_unit() -> list[ev.Event]:
        async with UnitClient(settings.nats_url, "forestry") as unit:
            return [e async for e in unit.events(idle_timeout=1.0)]

    got = asyncio.run(late_unit())
    assert {e.case_id for e in got if isinstance(e, ev.CaseAssigned)} == numbers
    assert all(e.subject.endswith(".forestry") for e in got)


def test_a_case_whose_objections_are_approved_is_rerouted_then_triaged_then_assigned_by_a_clerk(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = submit(intake, township="matou", village="matou-hexi", category="pollution", title="工业园区企业排污")
    first = assigned(settings, [intake_db, routing_db], number)
    assert [(e.unit, e.role) for e in first] == [("ecology", "lead"), ("matou", "co"), ("market", "co")]

    unit_do(settings, "ecology", "return_case", number, reason="属地环境巡查问题，应由镇里牵头")
    wait_until(lambda: objections(routing, number, "ecology", "pending"), what="the objection to be recorded")
    decide_objection(settings, number, "ecology")
    wait_until(lambda: any(a["unit"] == "matou" and a["role"] == "lead" and a["active"]
                           for a in routed(routing, number)["assignments"]), what="the case to be re-routed")
    again = assigned(settings, [intake_db, routing_db], number)[3:]
    assert [(e.unit, e.role, e.rule_id) for e in again] == [("matou", "lead", "territorial")]

    unit_do(settings, "matou", "return_case", number, reason="涉及企业环评，非本镇职责")
    wait_until(lambda: objections(routing, number, "matou", "pending"), what="the second objection to be recorded")
    decide_objection(settings, number, "matou")
    wait_until(lambda: any(t["case_id"] == number for t in routing.get("/api/v1/triage").json()),
               what="the case to land in triage")
    [triage] = [e for _, e in read_subject(settings.nats_url, "cases.triage")]
    assert triage.reason == "returned_twice" and triage.returned_by == ["ecology", "matou"]

    decided = routing.post(f"/api/v1/triage/{number}/decision",
                           json={"unit": "natres", "reason": "涉及园区用地审批", "decided_by": "clerk07"})
    assert decided.status_code == 200, decided.text
    last = assigned(settings, [intake_db, routing_db], number)[-1]
    # Recorded as the token's staff id; the body's decided_by (kept for older clients) counts for nothing.
    assert (last.unit, last.rule_id, last.actor.kind, last.actor.id) == ("natres", "triage", "supervisor", STAFF_ID)
    assert routing.get("/api/v1/triage").json() == []
    assert routing.post(f"/api/v1/triage/{number}/decision",
                        json={"unit": "agri", "reason": "x", "decided_by": "clerk07"}).status_code == 404


@pytest.mark.parametrize("how", ["named by intake", "named in the text"])
def test_a_complaint_against_the_forestry_bureau_is_never_assigned_to_it(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine,
        how: str) -> None:
    fields = {"category": "logging_permit", "title": "反映采伐证发放问题",
              "content": "举报县林业局工作人员违规发放采伐证，收受好处。"}
    if how == "named by intake":
        fields.update(accused_units=["forestry"], content="林业站工作人员违规发放采伐证。")
    number = submit(intake, **fields)
    events = assigned(settings, [intake_db, routing_db], number)
    assert events and "forestry" not in {e.unit for e in events}
    # 收受好处 is misconduct (检举控告): the discipline commission; marked without a conduct word: the superior.
    lead = "discipline" if how == "named in the text" else "supervision_office"
    assert (events[0].unit, events[0].role) == (lead, "lead")
    assert routed(routing, number)["accused"] == ["forestry"]
    with pytest.raises(Exception):  # noqa: B017 - the clerk cannot give it to the accused unit either
        unit_do(settings, "forestry", "sign", number)


def test_a_unit_command_for_a_case_not_assigned_to_it_is_refused_with_a_reason(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = submit(intake, category="logging_permit")
    assigned(settings, [intake_db, routing_db], number)
    with pytest.raises(Refused, match=f"case {number} is not assigned to health"):
        unit_do(settings, "health", "sign", number)
    signed = unit_do(settings, "forestry", "sign", number)
    assert signed.subject == "cases.signed.forestry"
    assert [e.case_id for _, e in read_subject(settings.nats_url, "cases.signed.*")] == [number]


def test_a_repeat_petition_goes_to_the_unit_that_handled_the_earlier_case(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    first = submit(intake, n=8, category="land_resources", title="邻村违法占用我家承包地建房")
    assert routed(routing, first)["assignments"][0]["unit"] == "natres"
    repeat = intake.post("/api/v1/cases", json=case_body(n=8, category="other", title="邻村违法占用我家承包地建房问题")).json()
    assert repeat["repeat_of"] == first
    routed(routing, repeat["case_number"])
    lead = [e for e in assigned(settings, [intake_db, routing_db], repeat["case_number"]) if e.role == "lead"]
    assert [(e.unit, e.rule_id) for e in lead] == [("natres", "repeat")]


def test_important_cases_get_the_lead_leader_in_charge_of_their_category(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    # 邻里纠纷 is the 县委副书记's alone (leaders.yaml): every one goes to him, however loaded
    # (balancing among several: tests/test_routing_leaders.py).
    numbers = [submit(intake, n=20 + i, people_count=12, title=f"集体反映第{i}号问题") for i in range(3)]
    plain = submit(intake, n=30, title="一般问题")
    for number in numbers + [plain]:
        routed(routing, number)
    assigned(settings, [intake_db, routing_db])
    leaders = {e.case_id: e for _, e in read_subject(settings.nats_url, "cases.leader_assigned")}
    assert set(leaders) == set(numbers)
    assert {(e.leader_id, e.assigned_by) for e in leaders.values()} == {("leader03", "portfolio")}
    assert all(e.reasons == ["collective"] and "category neighbor_dispute" in e.note for e in leaders.values())


def test_an_uncategorised_case_the_classifier_cannot_place_goes_to_triage(
        intake: TestClient, routing: TestClient, settings: Settings) -> None:
    unclear = submit(intake, category=None, title="有个情况想反映", content="请领导关心一下我们的事情")
    clear = submit(intake, n=2, category=None, title="包工头拖欠农民工工资", content="干了半年活，工钱一直不给")
    wait_until(lambda: any(t["case_id"] == unclear for t in routing.get("/api/v1/triage").json()),
               what="the unclear case in triage")
    [item] = routing.get("/api/v1/triage").json()
    assert item["reason"] == "category_unclear"
    why = routed(routing, clear)["assignments"][0]
    assert (why["unit"], why["category"], why["category_suggested"]) == ("hrss", "wage_arrears", True)
    assert why["confidence"] == 1.0


def test_the_dry_run_shows_where_a_draft_would_go_and_creates_nothing(routing: TestClient, routing_db: Engine) -> None:
    from tests.helpers import table_counts
    before = table_counts(routing_db)

    def explain(content: str, **fields) -> dict:  # noqa: ANN003
        answer = routing.post("/api/v1/routing/explain", json={
            "channel": "letter", "township": "xishan", "title": "举报县林业局", "content": content, **fields})
        assert answer.status_code == 200, answer.text
        return answer.json()
    misconduct = explain("举报县林业局干部违规审批采伐，收受好处费")
    assert (misconduct["lead"], misconduct["rule_id"], misconduct["accused"]) == ("discipline", "misconduct", ["forestry"])
    unclear = explain("举报县林业局违规审批采伐", category="logging_permit")
    assert (unclear["lead"], unclear["triage"], unclear["accused"]) == (None, "accusation_unclear", [])
    marked = explain("举报县林业局违规审批采伐", category="logging_permit", accuses_unit=True)
    assert (marked["lead"], marked["accused"]) == ("supervision_office", ["forestry"])
    place = explain("举报县林业局违规审批采伐", category="logging_permit", accuses_unit=False)
    assert (place["lead"], place["accused"], place["triage"]) == ("forestry", [], None)
    assert table_counts(routing_db) == before


def test_poison_messages_are_dead_lettered_and_the_next_good_message_is_still_routed(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    good = ev.CaseReceived(case_id="QS-2026-900001", actor=ev.Actor(kind="clerk"), channel="walk_in", title="t",
                           content="c", category="logging_permit", township="xishan",
                           resident=ev.ResidentRef(name="甲", masked_id=resident_id(1)[:6] + "*" * 8 + "0015"))
    raw = ev.encode(good).decode()

    async def publish() -> None:
        nc = await nats.connect(settings.nats_url)
        js = nc.jetstream()
        for i, data in enumerate([b"not json at all",
                                  raw.replace('"schema_version":1', '"schema_version":99').encode(),
                                  raw.replace('"township":"xishan"', '"township":"atlantis"')
                                     .replace(good.event_id, "e-atlantis").encode(),
                                  ev.encode(ev.CaseReturned(case_id="QS-2026-900001", unit="nosuchunit",
                                                            actor=ev.Actor(kind="unit"), reason="x")),
                                  ev.encode(good)]):
            await js.publish("cases.received" if i != 3 else "cases.returned.nosuchunit", data,
                             headers={"Nats-Msg-Id": f"poison-{i}"})
        await nc.close()

    asyncio.run(publish())
    assert [e.unit for e in assigned(settings, [intake_db, routing_db], good.case_id)] == ["forestry"]
    wait_until(lambda: len(read_subject_raw(settings.nats_url)) == 4, what="four dead letters")
    dead = read_subject_raw(settings.nats_url)
    assert [h["Xf-Error-Kind"] for h in dead] == ["undecodable", "undecodable", "rejected", "rejected"]
    assert "not JSON" in dead[0]["Xf-Error"] and "unknown schema_version 99" in dead[1]["Xf-Error"]
    assert "unknown township 'atlantis'" in dead[2]["Xf-Error"] and "unknown unit 'nosuchunit'" in dead[3]["Xf-Error"]
    metrics = routing.get("/metrics").text
    assert 'xf_dead_letters_total{consumer="routing",kind="undecodable"} 2.0' in metrics


def read_subject_raw(url: str) -> list[dict]:
    """Dead letters' headers (their payloads need not decode)."""
    return [headers for headers, _ in read_raw(url, "deadletter.>", stream="DEADLETTER")]


def test_the_plain_nats_py_department_example_follows_and_signs_its_cases(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    import subprocess
    import sys

    from shared.settings import REPO_ROOT

    numbers = [submit(intake, n=i, category="logging_permit", title=f"采伐许可第{i}件") for i in range(3)]
    assigned(settings, [intake_db, routing_db])
    run = subprocess.run([sys.executable, str(REPO_ROOT / "deploy" / "examples" / "department.py"), settings.nats_url,
                          "forestry", "1"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert all(f"signed {n}" in run.stdout for n in numbers)
    signed = [e for _, e in read_subject(settings.nats_url, "cases.signed.forestry")]
    assert sorted(e.case_id for e in signed) == sorted(numbers)  # valid events by the catalogue's contract


def test_xinfang_unit_commands_act_as_the_unit_and_report_refusals(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from services.cli import main

    number = submit(intake, category="logging_permit")
    assigned(settings, [intake_db, routing_db], number)
    monkeypatch.setenv("XF_NATS_URL", settings.nats_url)
    assert main(["unit", "sign", "forestry", number]) == 0
    assert main(["unit", "reply", "forestry", number, "--result", "resolved", "--text", "已办结"]) == 0
    assert main(["unit", "sign", "health", number]) == 1
    assert f"refused: case {number} is not assigned to health" in capsys.readouterr().err
    replied = [e for _, e in read_subject(settings.nats_url, "cases.replied.*")]
    assert [(e.unit, e.result) for e in replied] == [("forestry", "resolved")]
