"""The department's side of the contract against a real nats-server and the real services: forged
events are dead-lettered and change nothing, a unit learns what became of its events, its
subjects deliver the close, the feedback and review requests, a lagging clock is not refused, and
its requests tell "unknown case", "not yours" and "malformed" apart."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import nats
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from services.units.client import Refused, UnitClient
from shared import events as ev
from shared import subjects
from shared.policy import CHINA_TZ as CHINA
from shared.settings import Settings
from tests.helpers import read_raw, read_subject, table_counts, wait_until
from tests.test_supervision import drained, submit, unit, wait_state

FORESTRY = ev.Actor(kind="unit", id="forestry")


def publish_raw(settings: Settings, subject: str, payload: dict) -> None:
    """As a department's program would: any subject it may publish on, any payload."""
    async def go() -> None:
        nc = await nats.connect(settings.nats_url)
        await nc.jetstream().publish(subject, json.dumps(payload).encode(),
                                     headers={"Nats-Msg-Id": payload.get("event_id") or subject})
        await nc.close()
    asyncio.run(go())


def dead_letters(settings: Settings) -> list[tuple[dict, bytes]]:
    return read_raw(settings.nats_url, "deadletter.>", stream="DEADLETTER")


def refusals(settings: Settings, unit_code: str) -> list[ev.EventRefused]:
    return [e for _, e in read_subject(settings.nats_url, subjects.REFUSED.format(unit=unit_code))]


def forged_payloads(case_id: str) -> list[tuple[str, ev.Event]]:
    """(the subject a hostile or careless unit publishes on, the event it sends)."""
    return [
        ("cases.signed.forestry", ev.UnitSigned(case_id=case_id, unit="health", actor=FORESTRY)),  # another unit
        ("cases.signed.forestry", ev.CaseAssigned(  # a service-only event on a department subject
            case_id=case_id, unit="forestry", actor=FORESTRY, role="lead", case=ev.CaseBrief(
                title="t", content="c", channel="walk_in", received_at=datetime.now(timezone.utc),
                township="chengguan", resident_name="x"))),
        ("cases.replied.forestry", ev.PetitionerFeedback(case_id=case_id, actor=FORESTRY, satisfied=True)),
        ("cases.returned.forestry", ev.CaseClosed(case_id=case_id, actor=FORESTRY, reason="satisfied")),
        ("cases.returned.forestry", ev.CaseReturned(case_id=case_id, unit="natres", actor=FORESTRY, reason="x")),
    ]


def test_forged_events_are_dead_lettered_by_every_consumer_counted_and_change_nothing(
        intake: TestClient, routing: TestClient, supervision: TestClient, scoring: TestClient, settings: Settings,
        intake_db: Engine, routing_db: Engine, supervision_db: Engine) -> None:
    case_id = submit(intake)["case_number"]
    wait_state(supervision, case_id, "assigned")
    drained(intake_db, routing_db, supervision_db)
    # routing reads its own assignments too (a clerk's triage decision teaches its classifier)
    assignments = [e for _, e in read_subject(settings.nats_url, "cases.assigned.*") if e.case_id == case_id]
    wait_until(lambda: table_counts(routing_db)["inbox"] == 1 + len(assignments), what="routing to read them")
    year = datetime.now(CHINA).year
    before = {"routing": table_counts(routing_db), "supervision": table_counts(supervision_db),
              "timeline": supervision.get(f"/api/v1/cases/{case_id}/timeline").json(),
              "report": scoring.get(f"/api/v1/reports/{year}").json()["figures"]}
    forged = forged_payloads(case_id)
    for subject, event in forged:
        publish_raw(settings, subject, json.loads(ev.encode(event)))

    # supervision and scoring read every department subject; routing reads cases.returned.*.
    expected = {(service, e.event_id) for _, e in forged for service in ("supervision", "scoring")}
    expected |= {("routing", e.event_id) for s, e in forged if s.startswith("cases.returned.")}

    def seen() -> set:
        return {(h["Xf-Consumer"], json.loads(data)["event_id"]) for h, data in dead_letters(settings)
                if h["Xf-Error-Kind"] == "forged"}
    wait_until(lambda: seen() >= expected, timeout=30, what="every consumer to dead-letter every forged event")
    wait_until(lambda: {r.refused_event_id for r in refusals(settings, "forestry")} >= {e.event_id for _, e in forged},
               what="forestry to be told of each")
    told = {r.refused_event_id: r for r in refusals(settings, "forestry")}
    assert all(told[e.event_id].kind == "forged" and "belongs on" in told[e.event_id].reason for _, e in forged)
    assert refusals(settings, "health") == [] and refusals(settings, "natres") == []  # never the unit named

    for service, client in (("routing", routing), ("supervision", supervision), ("scoring", scoring)):
        metrics = client.get("/metrics").text
        assert f'xf_dead_letters_total{{consumer="{service}",kind="forged"}}' in metrics
    drained(routing_db, supervision_db)
    assert table_counts(routing_db) == before["routing"]
    assert table_counts(supervision_db) == before["supervision"]
    assert supervision.get(f"/api/v1/cases/{case_id}/timeline").json() == before["timeline"]
    assert scoring.get(f"/api/v1/reports/{year}").json()["figures"] == before["report"]


def test_an_event_without_an_event_id_is_dead_lettered_never_given_one(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings) -> None:
    case_id = submit(intake)["case_number"]
    wait_state(supervision, case_id, "assigned")
    payload = json.loads(ev.encode(ev.UnitSigned(case_id=case_id, unit="forestry", actor=FORESTRY)))
    del payload["event_id"]
    publish_raw(settings, "cases.signed.forestry", payload)
    wait_until(lambda: any(h["Xf-Error-Kind"] == "undecodable" and "event_id is required" in h["Xf-Error"]
                           for h, _ in dead_letters(settings)), what="the id-less event to be dead-lettered")
    wait_until(lambda: any(r.kind == "undecodable" for r in refusals(settings, "forestry")), what="forestry told")
    assert state_of_case(supervision, case_id) == "assigned"


def state_of_case(supervision: TestClient, case_id: str) -> str:
    return supervision.get(f"/api/v1/cases/{case_id}").json()["state"]


def test_a_unit_is_told_when_supervision_refuses_its_event_and_can_read_its_cases_timeline(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings) -> None:
    case_id = submit(intake)["case_number"]
    wait_state(supervision, case_id, "assigned")
    # A reply before the sign-for makes no sense where it falls: refused, and the unit is told.
    publish_raw(settings, "cases.replied.forestry", json.loads(ev.encode(ev.CaseReplied(
        case_id=case_id, unit="forestry", actor=FORESTRY, result="resolved", text="已办"))))
    wait_until(lambda: any(r.kind == "refused" and r.case_id == case_id for r in refusals(settings, "forestry")),
               what="the refusal to reach forestry")
    [refusal] = [r for r in refusals(settings, "forestry") if r.case_id == case_id]
    assert refusal.by == "supervision" and refusal.refused_type == "CaseReplied" and "cannot reply" in refusal.reason

    async def ask(code: str, case: str) -> ev.TimelineAnswer:
        async with UnitClient(settings.nats_url, code) as client:
            return await client.timeline(case)
    mine = asyncio.run(ask("forestry", case_id))
    assert mine.found and [s.event for s in mine.timeline][:2] == ["CaseReceived", "CaseAssigned"]
    assert any(s.event == "CaseReplied" and s.status == "refused" and "cannot reply" in s.reason for s in mine.timeline)
    for other in ("health", "chengguan"):  # never held it: the same answer as for a case that does not exist
        answer = asyncio.run(ask(other, case_id))
        assert (answer.found, answer.error, answer.timeline) == (False, "not_found", [])
    assert asyncio.run(ask("forestry", "QS-2026-999999")).error == "not_found"


def test_a_units_subjects_deliver_feedback_review_requests_and_the_close(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings,
        intake_db: Engine, routing_db: Engine, supervision_db: Engine) -> None:
    case = submit(intake)
    case_id = case["case_number"]
    wait_state(supervision, case_id, "assigned")
    unit(settings, "forestry", "sign", case_id)
    unit(settings, "forestry", "reply", case_id, result="resolved", text="已办结")
    wait_state(supervision, case_id, "replied")
    answer = intake.post(f"/api/v1/cases/{case_id}/feedback", json={"query_code": case["query_code"], "satisfied": True})
    assert answer.status_code in (200, 201, 202), answer.text
    wait_state(supervision, case_id, "closed")
    drained(intake_db, routing_db, supervision_db)

    async def follow() -> list[ev.Event]:
        async with UnitClient(settings.nats_url, "forestry") as client:
            return [e async for e in client.events(idle_timeout=2)]
    seen = [e for e in asyncio.run(follow()) if getattr(e, "case_id", None) == case_id]
    notified = [e.event.type for e in seen if isinstance(e, ev.UnitNotified)]
    assert notified == ["PetitionerFeedback", "CaseClosed"]
    assert [type(e).__name__ for e in seen if not isinstance(e, ev.UnitNotified)] == [
        "CaseAssigned", "UnitSigned", "CaseReplied"]  # its own events echo back on its subjects
    assert all(e.unit == "forestry" and e.role == "lead" for e in seen if isinstance(e, ev.UnitNotified))


def test_a_department_clock_a_few_minutes_behind_is_not_refused(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings) -> None:
    case_id = submit(intake)["case_number"]
    wait_state(supervision, case_id, "assigned")
    behind = datetime.now(timezone.utc) - timedelta(minutes=3)  # stamped before the assignment it answers
    publish_raw(settings, "cases.signed.forestry", json.loads(ev.encode(ev.UnitSigned(
        case_id=case_id, unit="forestry", actor=FORESTRY, occurred_at=behind))))
    wait_state(supervision, case_id, "signed")
    [signed] = [s for s in supervision.get(f"/api/v1/cases/{case_id}/timeline").json() if s["event"] == "UnitSigned"]
    assert signed["status"] == "applied"
    assert datetime.fromisoformat(signed["at"]) < datetime.fromisoformat(signed["placed_at"])  # stated time kept


def test_a_sign_stamped_long_before_the_assignment_is_refused_with_its_reason(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings) -> None:
    case_id = submit(intake)["case_number"]
    wait_state(supervision, case_id, "assigned")
    long_ago = datetime.now(timezone.utc) - timedelta(hours=2)  # beyond the tolerance: its own time stands
    publish_raw(settings, "cases.signed.forestry", json.loads(ev.encode(ev.UnitSigned(
        case_id=case_id, unit="forestry", actor=FORESTRY, occurred_at=long_ago))))
    wait_until(lambda: any(r.case_id == case_id for r in refusals(settings, "forestry")), what="the refusal")
    assert state_of_case(supervision, case_id) == "assigned"


@pytest.mark.parametrize("request_body, error", [
    ({"case_id": "QS-2026-999999"}, "unknown_case"),
    ("other unit's case", "not_assigned"),
    (b"not json", "malformed"),
    ({"case": "x"}, "malformed"),
])
def test_the_assignment_request_tells_unknown_not_yours_and_malformed_apart(
        intake: TestClient, routing: TestClient, supervision: TestClient, settings: Settings,
        request_body: object, error: str) -> None:
    case_id = submit(intake)["case_number"]
    wait_state(supervision, case_id, "assigned")
    if request_body == "other unit's case":
        request_body = {"case_id": case_id}
    data = request_body if isinstance(request_body, bytes) else json.dumps(request_body).encode()

    async def ask() -> dict:
        nc = await nats.connect(settings.nats_url)
        answer = await nc.request(subjects.ASSIGNMENT_QUERY.format(unit="health"), data, timeout=5)
        await nc.close()
        return json.loads(answer.data)
    answer = asyncio.run(ask())
    assert (answer["assigned"], answer["error"]) == (False, error) and answer["reason"]
    if error != "malformed":
        with pytest.raises(Refused) as refused:
            unit(settings, "health", "sign", request_body["case_id"])
        assert refused.value.error == error
