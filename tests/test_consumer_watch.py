"""A consumer cannot die silently: one that cannot dead-letter or has stopped fetching makes
/readyz fail, keeps its message, and recovers — against a real nats-server and the routing service."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator

import nats
import pytest
from fastapi.testclient import TestClient
from nats.js.errors import NotFoundError

from shared import subjects
from shared.bus import declare_streams
from shared.settings import Settings
from tests.conftest import running
from tests.helpers import case_body, read_raw, wait_until


@pytest.fixture
def routing_watched(settings: Settings, auth: dict[str, str]) -> Iterator[TestClient]:
    """Routing whose consumer is declared stalled after 2 s without a fetch."""
    yield from running("routing", settings.model_copy(update={"consumer_stall_s": 2.0}), auth)


def ready(client: TestClient) -> bool:
    return client.get("/readyz").status_code == 200


def consumer_check(client: TestClient) -> bool:
    return client.get("/readyz").json()["checks"].get("consumer:routing", False)


async def _publish_raw(url: str, subject: str, data: bytes, msg_id: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().publish(subject, data, headers={"Nats-Msg-Id": msg_id})
    finally:
        await nc.close()


async def _delete_stream(url: str, name: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


def dead_letters(settings: Settings) -> list[dict]:
    try:
        return [h for h, _ in read_raw(settings.nats_url, "deadletter.>", stream=subjects.DEAD_LETTER_STREAM)]
    except NotFoundError:
        return []


def test_a_consumer_that_cannot_dead_letter_is_not_ready_keeps_the_message_and_recovers(
        intake: TestClient, routing: TestClient, settings: Settings) -> None:
    wait_until(lambda: ready(routing), what="routing to be ready")
    asyncio.run(_delete_stream(settings.nats_url, subjects.DEAD_LETTER_STREAM))
    asyncio.run(_publish_raw(settings.nats_url, "cases.received", b"\xff not an event", "poison-1"))

    wait_until(lambda: not ready(routing), timeout=30, what="routing to report it cannot dead-letter")
    answer = routing.get("/readyz").json()
    assert answer["checks"]["consumer:routing"] is False
    assert "cannot dead-letter" in answer["problems"]["consumer:routing"]
    # The poison message blocks nothing behind it: a real case is still routed meanwhile.
    number = intake.post("/api/v1/cases", json=case_body()).json()["case_number"]
    wait_until(lambda: routing.get(f"/api/v1/routing/{number}").status_code == 200, timeout=30,
               what="the case behind the poison message to be routed")
    assert 'xf_dead_letter_publish_failures_total{consumer="routing"}' in routing.get("/metrics").text
    assert 'xf_consumer_healthy{consumer="routing"} 0.0' in routing.get("/metrics").text

    asyncio.run(declare_streams(settings))  # the dead-letter stream is back
    wait_until(lambda: len(dead_letters(settings)) == 1, timeout=30, what="the poison message's dead letter")
    wait_until(lambda: ready(routing), timeout=30, what="routing to be ready again")
    [headers] = dead_letters(settings)
    assert headers["Xf-Error-Kind"] == "undecodable" and headers["Xf-Consumer"] == "routing"
    assert 'xf_consumer_healthy{consumer="routing"} 1.0' in routing.get("/metrics").text


def test_a_consumer_whose_fetching_stopped_is_not_ready_then_restarted(
        intake: TestClient, routing_watched: TestClient, settings: Settings) -> None:
    routing = routing_watched
    wait_until(lambda: ready(routing), what="routing to be ready")
    subscriber = routing.app.state.consumers[0].subscriber

    def kill_fetch_loop() -> None:  # what a task dying silently looks like: cancelled, never restarted
        for task in subscriber.tasks:
            task.get_loop().call_soon_threadsafe(task.cancel)
    kill_fetch_loop()

    wait_until(lambda: not consumer_check(routing), timeout=30, what="routing to report its consumer stopped")
    wait_until(lambda: consumer_check(routing), timeout=60, what="the consumer to be restarted")
    number = intake.post("/api/v1/cases", json=case_body()).json()["case_number"]
    wait_until(lambda: routing.get(f"/api/v1/routing/{number}").status_code == 200, timeout=30,
               what="a case filed after the restart to be routed")
    assert 'xf_consumer_restarts_total{consumer="routing"} 1.0' in routing.get("/metrics").text


def test_without_nats_routing_is_not_ready_and_intake_still_is(
        intake: TestClient, routing: TestClient, nats_server) -> None:  # noqa: ANN001
    wait_until(lambda: ready(routing) and ready(intake), what="both to be ready")
    nats_server.stop()
    try:
        wait_until(lambda: not ready(routing), timeout=30, what="routing to report NATS away")
        assert routing.get("/readyz").json()["checks"]["nats"] is False
        wait_until(lambda: intake.get("/readyz").json()["checks"]["nats"] is False, what="intake to notice")
        assert ready(intake)  # it keeps accepting: its outbox holds the cases
        assert intake.post("/api/v1/cases", json=case_body()).status_code == 201
    finally:
        nats_server.start()
    wait_until(lambda: ready(routing), timeout=60, what="routing to be ready again")
