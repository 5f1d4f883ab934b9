"""What ops read in Prometheus (issue 16): state is read when Prometheus scrapes, not when someone
happens to call /readyz; every service's exposition passes ``promtool check metrics``; a consumer's
lag and the stream's size come from JetStream; supervision counts open, due-soon and overdue cases
per unit; imports and notices are counted by outcome. Real nats-server, SQLite and PostgreSQL."""
from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from services.runtime import NatsServer
from shared.clock import ManualClock
from tests.helpers import case_body, resident_id, wait_until
from tests.test_import_files import csv_text, opened, rows, upload


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The service's /metrics as {(sample name, sorted labels): value}; only GET /metrics is called."""
    text = client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(client: TestClient, name: str, **labels: str) -> float | None:
    return samples(client).get((name, tuple(sorted(labels.items()))))


def test_a_scrape_reads_nats_connected_without_any_readyz_call(intake: TestClient, nats_server: NatsServer) -> None:
    wait_until(lambda: value(intake, "xf_nats_connected") == 1, what="xf_nats_connected 1 on a scrape alone")
    nats_server.stop()
    wait_until(lambda: value(intake, "xf_nats_connected") == 0, what="xf_nats_connected 0 once NATS is gone")


def test_every_service_exposition_passes_promtool(intake: TestClient, routing: TestClient,
                                                  supervision: TestClient, scoring: TestClient) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's prometheus package (.ci/run does)"
    assert intake.post("/api/v1/cases", json=case_body()).status_code == 201
    wait_until(lambda: value(scoring, "xf_events_handled_total", consumer="scoring", type="CaseAssigned") == 1,
               what="the case through to scoring")
    for client in (intake, routing, supervision, scoring):
        checked = subprocess.run([promtool, "check", "metrics"], input=client.get("/metrics").content,
                                 capture_output=True, timeout=30)
        assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
            client.app.title, checked.stdout.decode(), checked.stderr.decode())


def test_events_handled_are_counted_by_type_with_their_latency(intake: TestClient, routing: TestClient) -> None:
    number = intake.post("/api/v1/cases", json=case_body()).json()["case_number"]
    wait_until(lambda: value(routing, "xf_events_handled_total", consumer="routing", type="CaseReceived") == 1,
               what="routing's CaseReceived counted")
    seen = samples(routing)
    assert seen[("xf_event_latency_seconds_count", (("consumer", "routing"), ("type", "CaseReceived")))] == 1
    assert seen[("xf_event_latency_seconds_sum", (("consumer", "routing"), ("type", "CaseReceived")))] < 60
    assert number not in routing.get("/metrics").text


def test_a_stopped_consumer_shows_its_lag_and_the_stream_its_size(intake: TestClient, routing: TestClient) -> None:
    assert intake.post("/api/v1/cases", json=case_body(n=1)).status_code == 201
    # Routing reads its own assignments back too (cases.assigned.*): caught up when both are in.
    wait_until(lambda: value(routing, "xf_consumer_pending_messages", consumer="routing") == 0
               and value(routing, "xf_events_handled_total", consumer="routing", type="CaseAssigned") == 1,
               what="routing caught up")
    consumer = routing.app.state.consumers[0]
    routing.portal.call(consumer.stop)  # as if it hung: nothing more is fetched
    for n in range(2, 5):
        assert intake.post("/api/v1/cases", json=case_body(n=n)).status_code == 201
    # Waiting to be given, or given to the fetch open when it stopped (ack-pending until ack_wait).
    wait_until(lambda: value(routing, "xf_consumer_pending_messages", consumer="routing")
               + value(routing, "xf_consumer_ack_pending_messages", consumer="routing") == 3,
               what="three cases waiting for the stopped consumer")
    assert value(routing, "xf_events_handled_total", consumer="routing", type="CaseReceived") == 1
    assert value(routing, "xf_stream_messages", stream="CASES") >= 5  # 4 received, 1 assigned at least
    assert value(routing, "xf_stream_bytes", stream="CASES") > 0


def test_the_outbox_shows_its_oldest_unsent_event_while_nats_is_away(intake: TestClient,
                                                                     nats_server: NatsServer) -> None:
    assert intake.post("/api/v1/cases", json=case_body(n=1)).status_code == 201
    wait_until(lambda: value(intake, "xf_outbox_pending") == 0, what="the first case published")
    assert value(intake, "xf_outbox_oldest_unsent_age_seconds") == 0
    nats_server.stop()
    wait_until(lambda: value(intake, "xf_nats_connected") == 0, what="the connection lost")
    assert intake.post("/api/v1/cases", json=case_body(n=2)).status_code == 201
    wait_until(lambda: value(intake, "xf_outbox_pending") == 1
               and value(intake, "xf_outbox_oldest_unsent_age_seconds") > 1, what="the unsent case growing old")


def test_supervision_counts_open_due_soon_and_overdue_cases_per_unit(
        intake: TestClient, routing: TestClient, supervision: TestClient, clock: ManualClock) -> None:
    number = intake.post("/api/v1/cases", json=case_body()).json()["case_number"]
    wait_until(lambda: any(name == "xf_supervision_open_cases" and dict(labels).get("state") == "assigned"
                           for name, labels in samples(supervision)), what="the case assigned at supervision")
    lead = next(dict(labels)["unit"] for name, labels in samples(supervision)
                if name == "xf_supervision_open_cases" and dict(labels)["state"] == "assigned")
    assert value(supervision, "xf_supervision_open_cases", unit=lead, state="assigned") == 1
    assert value(supervision, "xf_supervision_overdue_cases", unit=lead) == 0
    assert value(supervision, "xf_supervision_due_soon_cases", unit=lead) == 0
    clock.set(clock.now() + timedelta(days=120))  # past every due date of an unsigned case
    assert value(supervision, "xf_supervision_overdue_cases", unit=lead) >= 1
    issued = supervision.post("/api/v1/notices", json={"units": [lead], "demands": "请立即办理。",
                                                       "reply_by": (clock.now() + timedelta(days=5)).date().isoformat()})
    assert issued.status_code == 201, issued.text
    assert value(supervision, "xf_supervision_notices_issued_total", type=issued.json()["notice_type"]) == 1
    assert number not in supervision.get("/metrics").text


def test_drive_imports_are_counted_by_outcome(intake: TestClient) -> None:
    drive = opened(intake)
    assert upload(intake, drive, "排查.csv", csv_text(rows(3)).encode("gbk")).status_code == 200
    assert upload(intake, drive, "排查.txt", b"not a drive file").status_code == 422
    assert value(intake, "xf_intake_imports_total", outcome="completed") == 1
    assert value(intake, "xf_intake_imports_total", outcome="refused") == 1
    assert value(intake, "xf_intake_import_rows_total", outcome="created") == 3
    text = intake.get("/metrics").text
    assert not any(resident_id(i) in text or f"村民{i}" in text for i in range(1, 4))
