"""The fault matrix: each fault lands on the running system while clerks' clients post cases, and
the invariants (``invariants.py``) must hold once the system is quiet again. The faults run in order
on one system per database; each records its recovery time (from the fault's end until the
invariants held) for the summary printed at the end.

Run with ``make faults`` (``pytest tests/faults``); ``make test`` leaves them out.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from datetime import timedelta

from sqlalchemy import text

from shared import events as ev
from shared import subjects
from tests.faults.conftest import Matrix
from tests.faults.invariants import alert_problems, read_stream
from tests.faults.system import CLOCK_START, CONSUMERS, SERVICES, System
from tests.helpers import wait_until

POISON = b"\xff\xfe{not an event"
NATS_DOWN_S = 20
DATABASE_DOWN_S = 10
JUMP = timedelta(days=40)
# The load posts at least 150 cases per fault (over 1,000 in the matrix). A fault that is one
# instant (a kill, a publish) lands once LEAD_IN of them are in, so the load ends soon after it and
# the recovery time is the system's, not the rest of the load's.
LEAD_IN = 120


def hold(seconds: float) -> None:
    """The fault's own length (the outage), not a wait for the system: that is what it must survive."""
    time.sleep(seconds)


def test_killing_each_service_mid_load_loses_no_case_and_doubles_none(matrix: Matrix) -> None:
    s = matrix.system
    with matrix.load.running("(1) SIGKILL each service in turn, restart") as run:
        for i, service in enumerate(SERVICES):
            run.wait_accepted(LEAD_IN // len(SERVICES) * (i + 1))
            s.kill(s.replicas[service][0])
            s.start_replicas([service])  # on its port: the clients find it again
        end = time.monotonic()
    matrix.settled(run, end)


def test_a_killed_replica_of_routing_and_of_supervision_leaves_its_work_to_the_other(matrix: Matrix) -> None:
    matrix.begin()
    s = matrix.system
    first = {service: s.replicas[service][0] for service in ("routing", "supervision")}
    s.start_replicas(["routing", "supervision"], new_ports=True)
    with matrix.load.running("(2) 2 replicas of routing+supervision, 1 SIGKILLed") as run:
        run.wait_accepted(LEAD_IN)
        for replica in first.values():
            s.kill(replica)
        end = time.monotonic()
    matrix.settled(run, end)


def test_intake_answers_201_while_nats_is_down_and_the_others_catch_up(matrix: Matrix) -> None:
    matrix.begin()
    s = matrix.system
    with matrix.load.running(f"(3) nats-server SIGKILLed for {NATS_DOWN_S} s") as run:
        run.wait_accepted(20)
        s.kill_nats()
        down = time.monotonic()
        hold(NATS_DOWN_S)
        with s.engine("intake").connect() as conn:
            held = conn.exec_driver_sql("SELECT count(*) FROM outbox WHERE sent_at IS NULL").scalar()
        s.start_nats()  # the same port, the same store
        end = time.monotonic()
    accepted_while_down = run.accepted_between(down, end)
    matrix.note(run, f"{accepted_while_down} cases accepted while NATS was down, {held} events held in the outbox")
    matrix.settled(run, end)
    assert accepted_while_down > 0, "intake accepted no case while NATS was down"
    assert held > 0, "intake's outbox held nothing while NATS was down"


def test_a_database_outage_costs_retries_but_no_case(matrix: Matrix) -> None:
    matrix.begin()
    s = matrix.system
    what = "proxy to PostgreSQL cut" if s.proxy else "intake.db, routing.db locked"
    with matrix.load.running(f"(4) database {DATABASE_DOWN_S} s away ({what})") as run:
        run.wait_accepted(20)
        with s.database_outage():
            hold(DATABASE_DOWN_S)
        end = time.monotonic()
    matrix.settled(run, end)


def _case_rows(s: System, case_id: str) -> dict[str, list]:
    """Everything routing, supervision and scoring hold about one case."""
    tables = {"routing": ["cases", "assignments", "triage", "leader_cases"], "supervision": ["cases", "timeline"],
              "scoring": ["case_facts"]}
    out = {}
    for service, names in tables.items():
        with s.engine(service).connect() as conn:
            for name in names:
                rows = conn.execute(text(f"SELECT * FROM {name} WHERE case_id = :case"), {"case": case_id}).all()
                out[f"{service}.{name}"] = sorted(map(repr, rows))
    return out


def _received(s: System) -> list[ev.CaseReceived]:
    out = []
    for m in asyncio.run(read_stream(s, s.settings.stream_name)):
        if m.subject == subjects.RECEIVED:
            with contextlib.suppress(ev.UndecodableEvent):
                out.append(ev.decode(m.data))
    return out


def test_a_poison_message_and_a_forged_duplicate_are_dead_lettered_by_every_consumer_and_change_nothing(
        matrix: Matrix) -> None:
    matrix.begin()
    s, ledger = matrix.system, matrix.ledger
    victim = min(set(matrix.load.accepted.values()) - ledger.quarantined)  # settled long ago
    original = next(e for e in _received(s) if e.case_id == victim)
    forged = original.model_copy(update={"event_id": str(uuid.uuid4()), "title": "伪造的重复受理",
                                         "category": "taxation", "people_count": 50, "collective": True})
    before = _case_rows(s, victim)
    with matrix.load.running("(5) poison + forged duplicate on cases.received") as run:
        run.wait_accepted(LEAD_IN)
        s.publish(subjects.RECEIVED, POISON, msg_id=f"poison-{uuid.uuid4()}")
        s.publish(forged.subject, ev.encode(forged), msg_id=forged.event_id)
        ledger.poison += 1
        ledger.forged.add(forged.event_id)
        for consumer in CONSUMERS:
            ledger.dead_letters[(consumer, "undecodable")] += 1
            ledger.dead_letters[(consumer, "conflict")] += 1
        end = time.monotonic()
    matrix.settled(run, end)
    after = _case_rows(s, victim)
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}


def test_a_40_day_clock_jump_fires_each_reminder_overdue_and_escalation_once_per_due_date(matrix: Matrix) -> None:
    matrix.begin()
    s = matrix.system
    now = CLOCK_START + JUMP
    # Cases keep coming across the jump and into the sweeps, up to 130 of them: a sweep of every case
    # under a full load takes minutes on PostgreSQL here (README, "Faults survived").
    with matrix.load.running("(6) 40-day clock jump, then two sweeps", maximum=LEAD_IN + 130) as run:
        run.wait_accepted(LEAD_IN)
        s.set_clocks(now)
        jumped = time.monotonic()
        sent = [s.sweep()["sent"], s.sweep()["sent"]]
        end = time.monotonic()
    took = f"the two sweeps took {end - jumped:.1f} s and sent {sent[0]} + {sent[1]} events"
    matrix.note(run, took)
    matrix.settled(run, end)
    # Cases the sweeps could not see yet (still on their way when they ran) get theirs from the next.
    sent.append(s.sweep()["sent"])
    matrix.note(run, f"{took}; a third, once quiet, {sent[2]}")
    matrix.holds(time.monotonic())
    fired, found = alert_problems(s, now)
    assert not found, found
    assert fired["overdue"] > 0 and fired["escalated"] > 0 and fired["reminded"] > 0, fired


def test_a_consumer_that_cannot_dead_letter_is_not_ready_and_recovers_when_the_stream_is_back(matrix: Matrix) -> None:
    matrix.begin()
    s, ledger = matrix.system, matrix.ledger
    unready: set[str] = set()

    def every_consumer_unready() -> bool:
        unready.update(c for c in CONSUMERS if any(code != 200 for code in s.readiness(c)))
        return unready == set(CONSUMERS)

    with matrix.load.running("(7) DEADLETTER deleted, a poison message, re-declared") as run:
        run.wait_accepted(LEAD_IN)
        s.delete_stream(subjects.DEAD_LETTER_STREAM)
        ledger.dead_letters = Counter()  # what it held went with it
        s.publish(subjects.RECEIVED, POISON, msg_id=f"poison-{uuid.uuid4()}")
        ledger.poison += 1
        try:
            wait_until(every_consumer_unready, timeout=30, what="every consumer's /readyz to go non-200")
            readiness = None
        except AssertionError:
            readiness = f"/readyz stayed 200 for {sorted(set(CONSUMERS) - unready)} while they could not dead-letter"
        s.declare_streams()
        end = time.monotonic()
        ledger.dead_letters.update({(c, "undecodable"): 1 for c in CONSUMERS})
    matrix.note(run, readiness or f"/readyz non-200 on {', '.join(CONSUMERS)} until the stream was back")
    matrix.settled(run, end)
    wait_until(lambda: all(code == 200 for c in CONSUMERS for code in s.readiness(c)), timeout=60,
               what="every consumer's /readyz to be 200 again")
    assert readiness is None, readiness
