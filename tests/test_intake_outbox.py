"""The outbox: with NATS stopped, intake keeps accepting; the events arrive, once, when NATS is back."""
from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from services.runtime import NatsServer
from shared.settings import Settings
from tests.helpers import case_body, outbox_pending, read_subject, wait_until


def test_submissions_succeed_while_nats_is_down_and_their_events_arrive_once_it_is_back(
        intake: TestClient, settings: Settings, intake_db: Engine, nats_server: NatsServer) -> None:
    before = intake.post("/api/v1/cases", json=case_body(n=100, title="停机前提交的案件")).json()["case_number"]
    wait_until(lambda: outbox_pending(intake_db) == 0, what="the first event to be published")

    nats_server.stop()
    wait_until(lambda: intake.get("/readyz").json()["checks"]["nats"] is False, what="intake to notice")
    during = [intake.post("/api/v1/cases", json=case_body(n=i, title=f"停机期间第{i}件")) for i in range(20)]
    assert [a.status_code for a in during] == [201] * 20
    assert outbox_pending(intake_db) == 20  # held, not lost

    nats_server.start()  # same port, same store
    wait_until(lambda: outbox_pending(intake_db) == 0, timeout=30, what="the outbox to drain after NATS is back")
    events = [e for _, e in read_subject(settings.nats_url, "cases.received")]
    numbers = [e.case_id for e in events]
    assert sorted(numbers) == sorted([before] + [a.json()["case_number"] for a in during])
    assert len(numbers) == len(set(numbers)) == 21


def test_an_intake_started_without_nats_serves_and_publishes_once_nats_comes(
        settings: Settings, tmp_path, db_url: str, auth: dict) -> None:  # noqa: ANN001
    from services.intake.app import create_app
    from tests.helpers import free_port

    later = NatsServer(tmp_path / "late-nats", free_port())
    late_settings = settings.model_copy(update={"nats_url": later.url})
    with TestClient(create_app(late_settings), headers=auth) as client:
        answer = client.post("/api/v1/cases", json=case_body())
        assert answer.status_code == 201
        # Ready all the same (its outbox holds the case), and it says NATS is away.
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["nats"] is False
        later.start()
        try:
            wait_until(lambda: client.get("/readyz").json()["checks"]["nats"], timeout=30, what="intake to connect")
            wait_until(lambda: client.app.state.relay.pending() == 0, what="the outbox to drain")
            [(_, event)] = read_subject(later.url, "cases.received")
            assert event.case_id == answer.json()["case_number"]
        finally:
            later.stop()
