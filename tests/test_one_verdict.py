"""One verdict on every event: what one service dead-letters as invalid, every service dead-letters
with the same kind, and nothing it claims is counted anywhere — routing, supervision and scoring
together, against a real nats-server."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import nats
from fastapi.testclient import TestClient

from shared import events as ev
from shared.settings import Settings
from tests.helpers import case_body, read_raw, read_subject, wait_until

CONSUMERS = ("routing", "scoring", "supervision")


def publish(settings: Settings, event: ev.Event) -> None:
    async def go() -> None:
        nc = await nats.connect(settings.nats_url)
        await nc.jetstream().publish(event.subject, ev.encode(event), headers={"Nats-Msg-Id": event.event_id})
        await nc.close()
    asyncio.run(go())


def dead_letters_of(settings: Settings, event_id: str) -> dict[str, str]:
    """consumer → kind of its dead letter for the event."""
    out = {}
    for headers, data in read_raw(settings.nats_url, "deadletter.>", stream="DEADLETTER"):
        if event_id.encode() in data:
            out[headers["Xf-Consumer"]] = headers["Xf-Error-Kind"]
    return out


def received_figures(scoring: TestClient, period: str) -> tuple[int, dict]:
    body = scoring.get(f"/api/v1/reports/{period}").json()
    return body["figures"]["received"], {k: v["received"] for k, v in body["channels"].items()}


def test_a_receipt_naming_an_unknown_township_is_dead_lettered_by_every_service_and_counted_nowhere(
        intake: TestClient, routing: TestClient, supervision: TestClient, scoring: TestClient,
        settings: Settings) -> None:
    year = datetime.now(timezone.utc).year
    real = intake.post("/api/v1/cases", json=case_body()).json()["case_number"]
    wait_until(lambda: received_figures(scoring, str(year))[0] == 1, what="the real case to be counted")
    [(_, good)] = read_subject(settings.nats_url, "cases.received")
    bogus = good.model_copy(update={"event_id": "e-atlantis", "case_id": f"{real[:-6]}{int(real[-6:]) + 500:06d}",
                                    "township": "atlantis"})
    publish(settings, bogus)

    wait_until(lambda: len(dead_letters_of(settings, bogus.event_id)) == 3, timeout=30,
               what="every consumer to dead-letter it")
    assert dead_letters_of(settings, bogus.event_id) == {c: "rejected" for c in CONSUMERS}
    assert supervision.get(f"/api/v1/cases/{bogus.case_id}").status_code == 404
    assert routing.get(f"/api/v1/routing/{bogus.case_id}").status_code == 404
    assert received_figures(scoring, str(year))[0] == 1  # intake has one case; so does the report


def test_a_second_receipt_of_a_case_number_is_a_conflict_for_every_service_and_changes_nothing(
        intake: TestClient, routing: TestClient, supervision: TestClient, scoring: TestClient,
        settings: Settings) -> None:
    year = datetime.now(timezone.utc).year
    number = intake.post("/api/v1/cases", json=case_body(channel="walk_in")).json()["case_number"]
    wait_until(lambda: supervision.get(f"/api/v1/cases/{number}").json().get("state") == "assigned",
               what="the case supervised and assigned")
    wait_until(lambda: routing.get(f"/api/v1/routing/{number}").status_code == 200, what="the case routed")
    wait_until(lambda: received_figures(scoring, str(year))[0] == 1, what="the case counted")
    routed_before = routing.get(f"/api/v1/routing/{number}").json()
    supervised_before = supervision.get(f"/api/v1/cases/{number}").json()

    [(_, first)] = read_subject(settings.nats_url, "cases.received")
    second = first.model_copy(update={
        "event_id": "e-second-receipt", "channel": "letter", "township": "matou", "village": None,
        "occurred_at": first.occurred_at - timedelta(days=400)})  # would move it into another year
    publish(settings, second)

    wait_until(lambda: len(dead_letters_of(settings, second.event_id)) == 3, timeout=30,
               what="every consumer to refuse the second receipt")
    assert dead_letters_of(settings, second.event_id) == {c: "conflict" for c in CONSUMERS}
    assert routing.get(f"/api/v1/routing/{number}").json() == routed_before
    assert supervision.get(f"/api/v1/cases/{number}").json() == supervised_before
    assert received_figures(scoring, str(year)) == (1, {**received_figures(scoring, str(year))[1], "walk_in": 1})
    assert received_figures(scoring, str(year))[1].get("letter", 0) == 0
    assert received_figures(scoring, str(year - 1))[0] == 0
    for service in (routing, supervision, scoring):
        text = service.get("/metrics").text
        assert 'kind="conflict"} 1.0' in text
