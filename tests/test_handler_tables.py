"""Each service's handler table: its consumer's filter subjects come from it, and its handlers' logic
runs on FastStream's in-memory ``TestNatsBroker`` — the same subscriber the service runs, fed without
a server (which cannot show acks, redelivery, de-duplication or streams: the real-server tests do)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi import FastAPI
from faststream.nats import TestNatsBroker
from sqlalchemy import MetaData, select

from services.routing import handlers as routing_handlers
from services.runtime import app_factory
from services.scoring import handlers as scoring_handlers
from services.scoring import service as scoring_service
from services.supervision import handlers as supervision_handlers
from services.supervision import queries as supervision_queries
from shared import events as ev
from shared import subjects
from shared.db import make_engine, migrate
from shared.policy import CHINA_TZ
from shared.settings import Settings

NOW = datetime.now(timezone.utc)
CLERK = ev.Actor(kind="clerk", id="desk3")
FORESTRY = ev.Actor(kind="unit", id="forestry")
RESIDENT = ev.ResidentRef(name="王建国", masked_id="331082********0015", id_hash="ab" * 32)
CASE = ev.CaseReceived(case_id="QS-2026-000001", occurred_at=NOW, actor=CLERK, channel="walk_in",
                       title="申请采伐自家承包山林木", content="本人承包山林中的杉木已到采伐期，申请办理林木采伐许可。",
                       category="logging_permit", township="chengguan", resident=RESIDENT)


@pytest.mark.parametrize("table, expected", [
    (routing_handlers.HANDLERS, {"cases.received", "cases.returned.*", "cases.acceptance.*",
                                 "cases.objection_decided.*", "cases.review_requested", "cases.closed",
                                 "cases.assigned.*"}),
    (supervision_handlers.HANDLERS, {"cases.received", "cases.assigned.*", "cases.triage", "cases.leader_assigned",
                                     "cases.signed.*", "cases.returned.*", "cases.acceptance.*", "cases.progress.*",
                                     "cases.extension_requested.*", "cases.extension_decided.*", "cases.replied.*",
                                     "cases.feedback", "cases.review_requested"}),
], ids=["routing", "supervision"])
def test_a_consumers_filter_subjects_are_its_tables_event_subjects(table, expected: set) -> None:  # noqa: ANN001
    assert set(table.subjects) == expected
    assert set(table.subjects) == {subjects.wildcard(t.subject_template) for t in table.handlers}


def test_scoring_reads_every_event_the_lifecycle_folds_and_nothing_addressed_to_units_alone() -> None:
    got = set(scoring_handlers.HANDLERS.subjects)
    # It folds each case as supervision does (shared/lifecycle.py), so it reads what supervision reads.
    assert set(supervision_handlers.HANDLERS.subjects) <= got
    assert {"cases.closed", "cases.reminded.*", "visits.logged", "drives.opened"} <= got
    assert not {"cases.refused.*", "cases.notified.*"} & got


def app_of(service: str, tmp_path: Path) -> tuple[FastAPI, str]:
    """The service's app, its database migrated, never started: no server is involved."""
    url = f"sqlite:///{tmp_path}/{service}.db"
    migrate(service, url)
    settings = Settings(data_dir=tmp_path, nats_url="nats://127.0.0.1:1", log_level="WARNING",
                        **{f"{service}_db_url": url})
    return app_factory(service)(settings), url


def outbox(url: str) -> list[ev.Event]:
    engine = make_engine(url)
    md = MetaData()
    md.reflect(engine, only=["outbox"])
    with engine.connect() as conn:
        rows = conn.execute(select(md.tables["outbox"])).mappings().all()
    engine.dispose()
    return [ev.decode(row["payload"]) for row in rows]


async def deliver(app: FastAPI, *events: ev.Event) -> None:
    async with TestNatsBroker(app.state.bus.broker) as broker:
        for event in events:
            await broker.publish(ev.encode(event), subject=event.subject, stream="CASES")


async def test_routing_assigns_a_received_case_to_the_unit_its_rules_name(tmp_path: Path) -> None:
    app, url = app_of("routing", tmp_path)
    await deliver(app, CASE)
    [assigned] = [e for e in outbox(url) if isinstance(e, ev.CaseAssigned)]
    assert (assigned.case_id, assigned.unit, assigned.role, assigned.rule_id) == (
        CASE.case_id, "forestry", "lead", "logging-permit")


async def test_routing_refuses_a_return_from_a_unit_that_does_not_hold_the_case_and_tells_it(tmp_path: Path) -> None:
    app, url = app_of("routing", tmp_path)
    wrong = ev.CaseReturned(case_id=CASE.case_id, unit="health", actor=ev.Actor(kind="unit", id="health"),
                            reason="not ours")
    await deliver(app, CASE, wrong)
    [refusal] = [e for e in outbox(url) if isinstance(e, ev.EventRefused)]
    assert (refusal.unit, refusal.refused_event_id, refusal.kind, refusal.by) == ("health", wrong.event_id,
                                                                                 "refused", "routing")


async def test_supervision_folds_the_case_and_tells_a_unit_its_sign_for_is_refused(tmp_path: Path) -> None:
    app, url = app_of("supervision", tmp_path)
    brief = ev.CaseBrief.of(CASE)
    assigned = ev.CaseAssigned(case_id=CASE.case_id, unit="forestry", actor=ev.Actor(kind="service", id="routing"),
                               role="lead", case=brief, occurred_at=NOW)
    stranger = ev.UnitSigned(case_id=CASE.case_id, unit="health", actor=ev.Actor(kind="unit", id="health"),
                             occurred_at=NOW)
    await deliver(app, CASE, assigned, stranger)
    assert supervision_queries.case_view(app.state.supervision, CASE.case_id)["state"] == "assigned"
    [refusal] = [e for e in outbox(url) if isinstance(e, ev.EventRefused)]
    assert (refusal.unit, refusal.refused_type, refusal.by) == ("health", "UnitSigned", "supervision")
    assert "does not hold the case" in refusal.reason


async def test_scoring_projects_a_received_and_closed_case_into_its_figures(tmp_path: Path) -> None:
    app, _url = app_of("scoring", tmp_path)
    unit = ev.Actor(kind="unit", id="forestry")
    # The unit's events count at the bus's receipt (now: NOW is when this module was imported), the
    # close comes after them.
    closing = datetime.now(timezone.utc) + timedelta(minutes=10)
    lifecycle = [  # what the lifecycle needs before a close counts
        ev.CaseAssigned(case_id=CASE.case_id, unit="forestry", actor=ev.Actor(kind="service", id="routing"),
                        role="lead", case=ev.CaseBrief.of(CASE), occurred_at=NOW),
        ev.UnitSigned(case_id=CASE.case_id, unit="forestry", actor=unit, occurred_at=NOW),
        ev.CaseReplied(case_id=CASE.case_id, unit="forestry", actor=unit, occurred_at=NOW, result="resolved",
                      text="已办理采伐许可"),
        ev.CaseClosed(case_id=CASE.case_id, actor=ev.Actor(kind="service", id="supervision"), reason="satisfied",
                      occurred_at=closing)]
    await deliver(app, CASE, *lifecycle)
    figures = scoring_service.report(app.state.scoring, str(NOW.astimezone(CHINA_TZ).year))["figures"]
    assert (figures["received"], figures["closed"], figures["closure_rate"]) == (1, 1, 1.0)
