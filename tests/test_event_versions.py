"""Events that can evolve: the payloads published by earlier code (tests/fixtures/events, committed
once, never edited) decode; unknown fields are ignored; an id-less or too-new event is refused; and
after a version bump of one event type the consumers and the scoring rebuild read the old payloads
with identical results."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.scoring.app import create_app as create_scoring
from services.scoring.cli import rebuild
from services.supervision import handlers as supervision_handlers
from services.supervision import tables as supervision_tables
from services.supervision.service import Supervision, SupervisionMetrics, apply_events
from shared import events as ev
from shared.clock import ManualClock
from shared.consumer import Delivery
from shared.db import UnitOfWork, make_engine, migrate
from shared.directory import load_directory
from shared.policy import load_policy
from shared.settings import REPO_ROOT, Settings
from tests.scoring_history import script
from tests.test_scoring import projected, publish_shuffled

# payload versions on the bus; the rebuild on PostgreSQL runs in tests/test_scoring.py: SQLite only
# (tests/conftest.py).
pytestmark = pytest.mark.one_database

FIXTURES = Path(__file__).parent / "fixtures" / "events"
CONFIG = REPO_ROOT / "deploy" / "config"
DIRECTORY = load_directory(CONFIG)
CLOCK = datetime(2026, 12, 31, tzinfo=timezone.utc)  # supervision's, after the scripted history


def fixtures() -> list[tuple[str, str, dict]]:
    """(file, subject, payload) of every frozen payload."""
    return [(f.name, item["subject"], item["payload"])
            for f in sorted(FIXTURES.glob("*.json")) for item in json.loads(f.read_text())]


def test_there_is_a_frozen_payload_of_every_event_type() -> None:
    assert {payload["type"] for _, _, payload in fixtures()} == set(ev.EVENT_TYPES)


@pytest.mark.parametrize("name, subject, payload", fixtures(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_frozen_payload_decodes_to_its_type_on_its_subject(name: str, subject: str, payload: dict) -> None:
    event = ev.decode(json.dumps(payload).encode())
    assert event.type == payload["type"] and event.event_id == payload["event_id"]
    assert event.subject == subject


def test_unknown_fields_are_ignored_anywhere_in_the_payload() -> None:
    """A producer may add an optional field before its consumers are upgraded (tolerant reader)."""
    _, _, payload = next(f for f in fixtures() if f[2]["type"] == "CaseAssigned")
    richer = {**payload, "priority": "high", "actor": {**payload["actor"], "device": "pda-7"},
              "case": {**payload["case"], "resident_email": "x@example.org"}}
    assert ev.decode(json.dumps(richer).encode()) == ev.decode(json.dumps(payload).encode())


@pytest.mark.parametrize("mutate, reason", [
    (lambda p: p.pop("event_id"), "event_id is required"),
    (lambda p: p.update(event_id=""), "event_id is required"),
    (lambda p: p.pop("occurred_at"), "occurred_at is required"),
    (lambda p: p.update(schema_version=99), "unknown schema_version 99"),
    (lambda p: p.update(schema_version="1"), "unknown schema_version '1'"),
])
def test_an_envelope_the_code_cannot_trust_is_refused_with_the_reason(mutate, reason: str) -> None:  # noqa: ANN001
    _, _, payload = next(f for f in fixtures() if f[2]["type"] == "UnitSigned")
    payload = json.loads(json.dumps(payload))
    mutate(payload)
    with pytest.raises(ev.UndecodableEvent, match=reason):
        ev.decode(json.dumps(payload).encode())


# --- a version bump -------------------------------------------------------------------------------

class CaseReplied(ev.CaseReplied):
    """What a breaking change of CaseReplied looks like: v2 makes the form of the answer (书面/口头)
    a required field, which v1 payloads lack; one upcaster says what v1 meant."""

    schema_version: Literal[2] = 2
    answer_form: Literal["written", "oral"]


@pytest.fixture
def bumped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ev.EVENT_TYPES, "CaseReplied", CaseReplied)
    monkeypatch.setitem(ev.UPCASTERS, ("CaseReplied", 1), lambda raw: {**raw, "answer_form": "written"})


def test_after_a_bump_old_payloads_decode_to_the_new_version_through_the_upcaster(bumped: None) -> None:
    old = [p for _, _, p in fixtures() if p["type"] == "CaseReplied"]
    assert old and all(p["schema_version"] == 1 for p in old)
    for payload in old:
        event = ev.decode(json.dumps(payload).encode())
        assert isinstance(event, CaseReplied) and event.schema_version == 2 and event.answer_form == "written"
        assert (event.event_id, event.case_id, event.unit, event.text) == (
            payload["event_id"], payload["case_id"], payload["unit"], payload["text"])
    newer = {**old[0], "schema_version": 3}
    with pytest.raises(ev.UndecodableEvent, match="reads 1 to 2"):
        ev.decode(json.dumps(newer).encode())


def supervision_states(database, name: str, payloads: list[bytes]) -> list[tuple]:  # noqa: ANN001
    """Supervision's consumer path (decode, its table's types, the batch apply) over payloads as stored."""
    url = database(name)
    migrate("supervision", url)
    engine = make_engine(url)
    sup = Supervision(uow=UnitOfWork(engine), directory=DIRECTORY, policy=load_policy(CONFIG),
                      clock=ManualClock(CLOCK), metrics=SupervisionMetrics(),
                      settings=Settings())
    events = [e for e in map(ev.decode, payloads) if ev.entry_for(supervision_handlers.HANDLERS.handlers, e)]
    for start in range(0, len(events), 100):
        with sup.uow.begin() as conn:
            apply_events(sup, conn, [Delivery(e, e.subject, e.occurred_at) for e in events[start:start + 100]])
    t = supervision_tables
    with engine.connect() as conn:
        cases = conn.execute(select(t.cases).order_by(t.cases.c.case_id)).all()
        steps = conn.execute(select(t.timeline.c.event_id, t.timeline.c.status, t.timeline.c.reason)
                             .where(t.timeline.c.event_id.in_([e.event_id for e in events]))  # not its own decisions
                             .order_by(t.timeline.c.event_id)).all()
    engine.dispose()
    return [tuple(r) for r in cases] + [tuple(r) for r in steps]


def test_after_a_bump_consumers_and_the_scoring_rebuild_read_the_old_payloads_with_identical_results(
        settings: Settings, database, monkeypatch: pytest.MonkeyPatch, auth: dict) -> None:  # noqa: ANN001
    history = script(DIRECTORY, n=200, seed=5)
    assert any(isinstance(e, ev.CaseReplied) for e in history.events)
    stored = [ev.encode(e) for e in history.events]  # v1, as today's code publishes them
    publish_shuffled(settings, history.events)
    periods = ("2026", "2026-Q1", "2026-Q2")
    with TestClient(create_scoring(settings), headers=auth) as live:  # before the bump
        projected(settings, history.events)
        before = {p: live.get(f"/api/v1/reports/{p}").json() for p in periods}
    supervision_before = supervision_states(database, "sup_v1", stored)

    monkeypatch.setitem(ev.EVENT_TYPES, "CaseReplied", CaseReplied)
    monkeypatch.setitem(ev.UPCASTERS, ("CaseReplied", 1), lambda raw: {**raw, "answer_form": "written"})
    assert rebuild(settings) == 0  # the same database, replayed by the bumped code
    with TestClient(create_scoring(settings), headers=auth) as rebuilt:
        assert {p: rebuilt.get(f"/api/v1/reports/{p}").json() for p in periods} == before

    fresh = settings.model_copy(update={"scoring_db_url": database("scoring_v2")})
    _delete_durable(settings, "scoring")  # a new deployment's consumer starts from the stream's beginning
    with TestClient(create_scoring(fresh), headers=auth) as live_v2:  # the live consumer, bumped
        projected(fresh, history.events)
        assert {p: live_v2.get(f"/api/v1/reports/{p}").json() for p in periods} == before
    assert supervision_states(database, "sup_v2", stored) == supervision_before


def _delete_durable(settings: Settings, name: str) -> None:
    import asyncio

    import nats

    async def go() -> None:
        nc = await nats.connect(settings.nats_url)
        await nc.jetstream().delete_consumer(settings.stream_name, name)
        await nc.close()
    asyncio.run(go())
