"""Routing learns from the clerks as their decisions arrive on the bus (a real nats-server, real
databases): a triage decision changes the model's answer for a similar text on every replica, the
unit that takes a case after an approved objection is an example, and ``xinfang routing retrain``
rebuilds the same examples from the stream."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from services.routing import learning
from services.routing.cli import retrain
from services.runtime import app_factory
from shared import events as ev
from shared.settings import Settings
from tests.helpers import wait_until
from tests.test_routing import assigned, decide_objection, objections, publish, routed, submit, unit_do
from tests.test_routing_procedure import settled

# A matter the corpus never saw (silkworm cocoons the township's station bought): routing cannot place it alone.
CASE = {"title": "桑园蚕茧的事", "content": "桑园里的蚕茧卖给蚕茧站，蚕茧站说等一等"}
SIMILAR = {"title": "蚕茧站那边", "content": "蚕茧站那边一直说等一等"}
TAUGHT = "agri"  # the clerk's decision: 县农业农村局


def explain(routing: TestClient, text: dict, township: str = "xishan") -> dict:
    answer = routing.post("/api/v1/routing/explain", json={"channel": "walk_in", "township": township, **text})
    assert answer.status_code == 200, answer.text
    return answer.json()


def rows(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(learning.examples).order_by(learning.examples.c.id))]


def comparable(examples: list[dict]) -> list[tuple]:
    return sorted((r["event_id"], r["case_id"], r["source"], r["unit"], r["category"], r["title"]) for r in examples)


def test_a_clerks_triage_decision_teaches_every_replica_and_a_retrain_from_the_stream_the_same(
        intake: TestClient, routing: TestClient, settings: Settings, auth: dict[str, str], intake_db: Engine,
        routing_db: Engine) -> None:
    before = explain(routing, SIMILAR)
    assert before["triage"] == "category_unclear" and before["lead"] is None

    number = submit(intake, category=None, township="xishan", village="xishan-songling", **CASE)
    wait_until(lambda: any(t["case_id"] == number for t in routing.get("/api/v1/triage").json()),
               what="the case in triage")
    decided = routing.post(f"/api/v1/triage/{number}/decision", json={"unit": TAUGHT, "reason": "蚕桑产业归农业农村局"})
    assert decided.status_code == 200, decided.text
    wait_until(lambda: rows(routing_db), what="routing to record the decision as an example")
    [row] = rows(routing_db)
    assert (row["case_id"], row["source"], row["unit"], row["title"]) == (number, "triage", TAUGHT, CASE["title"])

    after = explain(routing, SIMILAR)
    assert (after["lead"], after["triage"], after["category_suggested"]) == (TAUGHT, None, True)
    assert after["category"] == "agri_subsidy" and after["confidence"] >= 0.6
    assert explain(routing, SIMILAR, township="nanhe")["lead"] == TAUGHT  # the text taught it, not the township

    with TestClient(app_factory("routing")(settings), headers=auth) as second:  # a replica on the same database
        assert explain(second, SIMILAR) == after

        result = asyncio.run(retrain(settings))
        assert (result["examples"], result["triage"], result["objection"]) == (1, 1, 0)
        assert comparable(rows(routing_db)) == comparable([row]) and rows(routing_db)[0]["id"] > row["id"]
        assert explain(routing, SIMILAR) == after and explain(second, SIMILAR) == after

    # The same event again (a redelivery past the inbox, or a replay) teaches nothing more.
    [event] = [e for e in assigned(settings, [intake_db, routing_db], number) if e.rule_id == "triage"]
    with routing_db.begin() as conn:
        learning.triage_decided(conn, event)
    assert len(rows(routing_db)) == 1


def test_the_unit_that_takes_a_case_after_an_approved_objection_is_an_example_and_a_retrain_finds_it(
        intake: TestClient, routing: TestClient, settings: Settings, routing_db: Engine) -> None:
    number = submit(intake, category="wage_arrears", township="xishan", village="xishan-songling",
                    title="征地的钱村里不给", content="修路占了我家的地，说好的补偿到现在没给，我去问村里说等")
    wait_until(lambda: any(a["unit"] == "hrss" for a in routed(routing, number)["assignments"]),
               what="the case to reach the labour bureau")
    unit_do(settings, "hrss", "return_case", number, reason="征地补偿，不是工资")
    wait_until(lambda: objections(routing, number, "hrss", "pending"), what="the objection to be recorded")
    decide_objection(settings, number, "hrss")
    wait_until(lambda: any(a["unit"] == "xishan" and a["role"] == "lead" and a["active"]
                           for a in routed(routing, number)["assignments"]), what="the case to be re-routed")
    unit_do(settings, "xishan", "decide_acceptance", number, decision="accepted")
    wait_until(lambda: rows(routing_db), what="routing to record the unit that took the case")
    [row] = rows(routing_db)
    assert (row["source"], row["unit"], row["category"]) == ("objection", "xishan", "wage_arrears")
    taught = learning.example_of(row, routing.app.state.routing.config, routing.app.state.routing.directory)
    assert taught.category is None and "land_acquisition" in taught.candidates  # the filed category led elsewhere

    # An acceptance with no approved objection before it teaches nothing.
    plain = submit(intake, n=2, category="logging_permit", title="申请砍自家的杉树")
    routed(routing, plain)
    stray = ev.ObjectionDecided(case_id=plain, unit="health", approved=True, reason="x",  # health never held it
                                actor=ev.Actor(kind="supervisor", id="s1"), occurred_at=datetime.now(timezone.utc))
    publish(settings, stray)
    accepted = unit_do(settings, "forestry", "decide_acceptance", plain, decision="accepted")
    settled(routing_db, stray, accepted)
    assert len(rows(routing_db)) == 1
    result = asyncio.run(retrain(settings))
    assert (result["examples"], result["objection"]) == (1, 1)
    assert comparable(rows(routing_db)) == comparable([row])


def test_the_replay_does_not_depend_on_routings_assignments_reaching_the_stream_first() -> None:
    """A unit acts on what routing's database says: its acceptance may be stored before the
    assignment routing's outbox relays a moment later. The fold learns the same either way."""
    actor, now = ev.Actor(kind="unit", id="x"), datetime.now(timezone.utc)
    received = ev.CaseReceived(case_id="QS-2026-000009", actor=ev.Actor(kind="clerk"), channel="walk_in",
                               title="征地的钱没给", content="修路占了我家的地", category="wage_arrears", township="xishan",
                               resident=ev.ResidentRef(name="某某"), occurred_at=now)
    brief = ev.CaseBrief.of(received)

    def assigned_to(unit: str, role: str = "lead", rule: str = "wage-arrears") -> ev.CaseAssigned:
        return ev.CaseAssigned(case_id=received.case_id, unit=unit, role=role, case=brief, rule_id=rule,
                               actor=actor, occurred_at=now)
    returned = ev.CaseReturned(case_id=received.case_id, unit="hrss", reason="不是工资", actor=actor, occurred_at=now)
    approved = ev.ObjectionDecided(case_id=received.case_id, unit="hrss", approved=True, actor=actor, occurred_at=now)
    accepted = ev.AcceptanceDecided(case_id=received.case_id, unit="xishan", decision="accepted", actor=actor,
                                    occurred_at=now)
    rerouted = assigned_to("xishan", rule="territorial")
    orders = [[received, assigned_to("hrss"), returned, approved, rerouted, accepted],
              [received, assigned_to("hrss"), returned, approved, accepted, rerouted],
              [received, returned, assigned_to("hrss"), approved, accepted, rerouted]]
    for events in orders:
        replay = learning.Replay()
        for e in events:
            replay.apply(e)
        assert [(r["source"], r["unit"], r["category"]) for r in replay.rows] == [("objection", "xishan", "wage_arrears")]
    replay = learning.Replay()  # no approved objection: an acceptance teaches nothing
    for e in [received, assigned_to("hrss"), ev.AcceptanceDecided(case_id=received.case_id, unit="hrss",
                                                                 decision="accepted", actor=actor, occurred_at=now)]:
        replay.apply(e)
    assert replay.rows == []
