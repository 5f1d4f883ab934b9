"""``xinfang reconcile`` against a real nats-server and the services' real databases: messages the
stream lost are found through the outboxes, re-published once, and applied downstream once."""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import nats
import pytest
from fastapi.testclient import TestClient
from nats.js.errors import NotFoundError
from sqlalchemy import Engine, MetaData, select

from services.cli import main
from shared.reconcile import ReconcileError, parse_since, reconcile, render
from shared.settings import Settings
from tests.helpers import case_body, outbox_pending, wait_until

WINDOW_S = 5.0  # the stream's duplicate window here: long enough to re-publish inside it, short to wait out


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"duplicate_window_s": WINDOW_S})


def submit(intake: TestClient, n: int) -> str:
    answer = intake.post("/api/v1/cases", json=case_body(n=n, category="logging_permit", title=f"申请采伐林木第{n}起"))
    assert answer.status_code == 201, answer.text
    return answer.json()["case_number"]


def stored(settings: Settings, subject: str = ">") -> list[tuple[int, str, str, bytes]]:
    """(sequence, subject, Nats-Msg-Id, data) of every message the stream holds on ``subject``."""
    async def go() -> list:
        nc = await nats.connect(settings.nats_url)
        js, out, seq = nc.jetstream(), [], 1
        try:
            while True:
                try:
                    m = await js.get_msg(settings.stream_name, seq=seq, subject=subject, next=True)
                except NotFoundError:
                    return out
                out.append((m.seq, m.subject, m.headers["Nats-Msg-Id"], m.data))
                seq = m.seq + 1
        finally:
            await nc.close()
    return asyncio.run(go())


def delete(settings: Settings, seqs: list[int]) -> None:
    async def go() -> None:
        nc = await nats.connect(settings.nats_url)
        try:
            for seq in seqs:
                assert await nc.jetstream().delete_msg(settings.stream_name, seq)
        finally:
            await nc.close()
    asyncio.run(go())


def received_ids(settings: Settings) -> dict[str, str]:
    """case number → event id of its CaseReceived in the stream."""
    return {json.loads(data)["case_id"]: msg_id for _, _, msg_id, data in stored(settings, "cases.received")}


def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The command line's Settings() reads the environment: point it at the test's server and databases."""
    for name in ("data_dir", "nats_url", "intake_db_url", "routing_db_url", "supervision_db_url", "scoring_db_url"):
        monkeypatch.setenv(f"XF_{name.upper()}", str(getattr(settings, name)))


def rows(engine: Engine, table: str, **where: str) -> list:
    md = MetaData()
    md.reflect(engine, only=[table])
    t = md.tables[table]
    with engine.connect() as conn:
        return conn.execute(select(t).where(*(t.c[k] == v for k, v in where.items()))).all()


def test_messages_the_stream_lost_are_re_published_once_and_every_downstream_effect_happens_once(
        request: pytest.FixtureRequest, intake: TestClient, intake_db: Engine, settings: Settings, nats_server,  # noqa: ANN001
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    numbers = [submit(intake, n) for n in range(6)]
    wait_until(lambda: outbox_pending(intake_db) == 0, what="intake's outbox to drain")
    held = stored(settings, "cases.received")
    assert sorted(json.loads(d)["case_id"] for *_, d in held) == sorted(numbers)
    lost = held[1::2]  # three of six, by sequence, before any consumer has seen them
    delete(settings, [seq for seq, *_ in lost])
    lost_ids = {msg_id for _, _, msg_id, _ in lost}
    lost_cases = {json.loads(d)["case_id"] for *_, d in lost}
    # As after an OS crash with lazy fsync: the server restarts without them, and rebuilds its
    # de-duplication map from the messages it holds, so their ids are free at once.
    nats_server.stop()
    nats_server.start()

    cli_env(monkeypatch, settings)
    assert main(["reconcile", "--dry-run", "--json"]) == 1  # ops can alert on it
    dry = {s["service"]: s for s in json.loads(capsys.readouterr().out)["services"]}
    assert (dry["intake"]["checked"], dry["intake"]["present"]) == (6, 3)
    assert set(dry["intake"]["missing"]) == lost_ids and dry["intake"]["republished"] == []
    assert set(received_ids(settings)) == set(numbers) - lost_cases  # a dry run publishes nothing

    # Downstream starts now and handles what the stream holds: the lost three stay unrouted.
    routing = request.getfixturevalue("routing")
    supervision = request.getfixturevalue("supervision")
    scoring = request.getfixturevalue("scoring")
    routing_db = request.getfixturevalue("routing_db")
    for number in set(numbers) - lost_cases:
        wait_until(lambda n=number: routing.get(f"/api/v1/routing/{n}").status_code == 200, 30, f"{number} routed")
    assert all(routing.get(f"/api/v1/routing/{n}").status_code == 404 for n in lost_cases)

    report = asyncio.run(reconcile(settings))
    intake_report = next(s for s in report.services if s.service == "intake")
    assert set(intake_report.missing) == lost_ids and set(intake_report.republished) == lost_ids
    assert intake_report.blocked == [] and intake_report.failed == {} and report.exit_code == 0
    assert received_ids(settings) == {json.loads(data)["case_id"]: msg_id for _, _, msg_id, data in held}

    year = numbers[0].split("-")[1]
    for number in numbers:
        wait_until(lambda n=number: (supervision.get(f"/api/v1/cases/{n}").status_code == 200
                                     and supervision.get(f"/api/v1/cases/{n}").json()["state"] == "assigned"),
                   30, f"{number} assigned in supervision")
    wait_until(lambda: scoring.get(f"/api/v1/reports/{year}").json()["figures"]["received"] == 6, 30,
               "scoring to count six cases")
    wait_until(lambda: outbox_pending(routing_db) == 0, what="routing's outbox to drain")

    for number in numbers:  # routing assigned each case once, supervision has one timeline of it
        assert len(routing.get(f"/api/v1/routing/{number}").json()["assignments"]) == 1
        assert len(rows(routing_db, "assignments", case_id=number)) == 1
        steps = [s["event"] for s in supervision.get(f"/api/v1/cases/{number}/timeline").json()]
        assert steps == ["CaseReceived", "CaseAssigned"], (number, steps)
    assigned = Counter(json.loads(d)["case_id"] for *_, d in stored(settings, "cases.assigned.*"))
    assert assigned == Counter({n: 1 for n in numbers})
    assert scoring.get(f"/api/v1/reports/{year}").json()["figures"]["received"] == 6
    ids = Counter(msg_id for _, _, msg_id, _ in stored(settings))
    assert ids and max(ids.values()) == 1  # no event id twice in the stream

    capsys.readouterr()
    assert main(["reconcile"]) == 0  # everything there now, every service checked
    text = capsys.readouterr().out
    assert "nothing missing" in text
    again = asyncio.run(reconcile(settings, dry_run=True))
    assert again.missing == 0 and again.exit_code == 0
    checked = {s.service: s.checked for s in again.services}
    assert checked["intake"] == 6 and checked["routing"] >= 6  # routing's CaseAssigned rows, all present
    assert Counter(msg_id for _, _, msg_id, _ in stored(settings)) == ids  # the checks published nothing


def test_a_message_deleted_inside_the_duplicate_window_is_reported_blocked_until_the_window_has_passed(
        intake: TestClient, intake_db: Engine, settings: Settings) -> None:
    numbers = [submit(intake, n) for n in range(2)]
    wait_until(lambda: outbox_pending(intake_db) == 0, what="intake's outbox to drain")
    [(seq, _, event_id, _)] = [m for m in stored(settings, "cases.received") if json.loads(m[3])["case_id"] == numbers[0]]
    delete(settings, [seq])

    # nats-server keeps the deleted message's id in its de-dup map: the re-publish is answered
    # duplicate=True with the deleted sequence, and nothing is stored. Reported, not claimed.
    report = asyncio.run(reconcile(settings, ["intake"]))
    [s] = report.services
    assert s.missing == [event_id] and s.republished == [] and s.failed == {}
    [blocked] = s.blocked
    assert blocked.event_id == event_id and 1 <= blocked.retry_after_s <= WINDOW_S + 2
    assert report.exit_code == 1 and "cannot be restored yet" in render(report) and "retry after" in render(report)
    assert event_id not in {i for _, _, i, _ in stored(settings)}

    # Once the window has passed, the same command restores it; then nothing is missing.
    def restored() -> bool:
        return asyncio.run(reconcile(settings, ["intake"])).services[0].republished == [event_id]
    wait_until(restored, WINDOW_S + 15, "the duplicate window to pass and the re-publish to be stored")
    assert received_ids(settings) == {numbers[0]: event_id, numbers[1]: received_ids(settings)[numbers[1]]}
    final = asyncio.run(reconcile(settings, ["intake"], dry_run=True))
    assert final.missing == 0 and final.exit_code == 0 and final.services[0].checked == 2


def test_since_is_a_duration_or_a_date_time_and_defaults_to_the_outbox_retention(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("XF_OUTBOX_RETENTION_DAYS", "7")
    settings = Settings()
    assert settings.outbox_retention_days == 7
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    assert parse_since(None, now, settings.outbox_retention_days) == now - timedelta(days=7)
    assert parse_since("2d", now, 7) == now - timedelta(days=2)
    assert parse_since("12h", now, 7) == now - timedelta(hours=12)
    assert parse_since("30m", now, 7) == now - timedelta(minutes=30)
    assert parse_since("2026-11-01T08:00+08:00", now, 7) == datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc)
    assert parse_since("2026-11-01", now, 7) == datetime(2026, 11, 1, tzinfo=timezone.utc)  # no zone: UTC
    with pytest.raises(ReconcileError, match="--since"):
        parse_since("yesterday", now, 7)
    assert main(["reconcile", "--since", "yesterday"]) == 2
    assert "--since 'yesterday'" in capsys.readouterr().err


def test_a_service_without_a_database_is_skipped_not_created(settings: Settings, tmp_path) -> None:  # noqa: ANN001
    lonely = settings.model_copy(update={"intake_db_url": f"sqlite:///{tmp_path}/none/intake.db"})
    report = asyncio.run(reconcile(lonely, ["intake"], dry_run=True))
    assert report.services[0].skipped.startswith("no database") and report.exit_code == 0
    assert not (tmp_path / "none").exists()
