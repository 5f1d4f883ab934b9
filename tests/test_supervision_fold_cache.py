"""Supervision keeps each case's fold with its row and carries it forward event by event: the stored
state always equals a full fold of the case's timeline, whatever order the events arrive in; the
state survives JSON whole; sweeps visit only cases whose ``next_check_at`` has come, and that
moment is exactly when something next becomes due."""
from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from services.supervision import domain, tables
from services.supervision.service import Supervision, SupervisionMetrics, apply_events, refresh, sweep
from shared import events as ev
from shared import lifecycle
from shared.clock import ManualClock
from shared.consumer import Delivery
from shared.db import UnitOfWork, make_engine, migrate
from shared.directory import load_directory
from shared.policy import load_policy
from shared.settings import REPO_ROOT, Settings
from shared.verdict import Refusal
from tests.test_supervision_domain import BRIEF, GOV, HEAD, SYS, T0, UNIT, at
from tests.test_supervision_domain import lifecycle as full_lifecycle

CONFIG = REPO_ROOT / "deploy" / "config"
POLICY = load_policy(CONFIG)
XISHAN = ev.Actor(kind="unit", id="xishan")


# --- the cases the properties draw from ---------------------------------------------------------

def a_lifecycle(case_id: str) -> list[ev.Event]:
    """Received to the review's opinion and a satisfied resident; supervision closes it itself."""
    return full_lifecycle(case_id)[:-1]


def not_accepted(case_id: str) -> list[ev.Event]:
    """Not accepted (不予受理): the case closes at once; a late progress note and a second decision follow."""
    return [
        *full_lifecycle(case_id)[:4],
        ev.AcceptanceDecided(case_id=case_id, occurred_at=at(8), actor=UNIT, unit="forestry", decision="not_accepted",
                             reason="不属于信访事项"),
        ev.ProgressReported(case_id=case_id, occurred_at=at(9), actor=UNIT, unit="forestry", note="n"),
        ev.AcceptanceDecided(case_id=case_id, occurred_at=at(10), actor=UNIT, unit="forestry", decision="accepted"),
    ]


def objected(case_id: str) -> list[ev.Event]:
    """The co-handling unit objects and the bureau approves; an extension refused; an unsatisfied
    resident and a review asked for."""
    return [
        *full_lifecycle(case_id)[:4],
        ev.CaseReturned(case_id=case_id, occurred_at=at(6), actor=XISHAN, unit="xishan", reason="不属于本单位"),
        ev.ObjectionDecided(case_id=case_id, occurred_at=at(7), actor=ev.Actor(kind="supervisor", id="s1"),
                            unit="xishan", approved=True, reason="核实"),
        ev.AcceptanceDecided(case_id=case_id, occurred_at=at(8), actor=UNIT, unit="forestry", decision="accepted"),
        ev.ExtensionRequested(case_id=case_id, occurred_at=at(40), actor=UNIT, unit="forestry", days=20, reason="r"),
        ev.ExtensionDecided(case_id=case_id, occurred_at=at(41), actor=HEAD, unit="forestry", approved=False, days=0,
                            approved_by="局长"),
        ev.CaseReplied(case_id=case_id, occurred_at=at(300), actor=UNIT, unit="forestry", result="resolved",
                       text="已办"),
        ev.PetitionerFeedback(case_id=case_id, occurred_at=at(320), actor=SYS, satisfied=False),
        ev.ReviewRequested(case_id=case_id, occurred_at=at(330), actor=SYS, level="review", reason="不服"),
        ev.CaseAssigned(case_id=case_id, occurred_at=at(331), actor=SYS, unit="county_gov", role="reviewer",
                        review_level="review", case=BRIEF),
        ev.CaseReplied(case_id=case_id, occurred_at=at(500), actor=GOV, unit="county_gov", result="explained",
                       text="复查", review_outcome="upheld"),
    ]


SCENARIOS = [a_lifecycle, not_accepted, objected]
CASE_IDS = (f"QS-2026-{n:06d}" for n in itertools.count(1))


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[list[ev.Event]], list[float]]:
    """A case's events — most of them kept, in their order, nearly in it, or shuffled — cut into
    batches, with the hours the clock moves on (and a sweep runs) after each batch."""
    events = draw(st.sampled_from(SCENARIOS))(next(CASE_IDS))
    kept = [e for e in events if draw(st.integers(0, 9)) > 0 or (isinstance(e, ev.CaseReceived)
                                                                 and draw(st.integers(0, 9)) > 0)] or events[:1]
    order = draw(st.sampled_from(["in order", "nearly", "shuffled"]))
    if order == "shuffled":
        kept = draw(st.permutations(kept))
    elif order == "nearly" and len(kept) > 1:
        i = draw(st.integers(0, len(kept) - 2))
        kept[i], kept[i + 1] = kept[i + 1], kept[i]
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(kept) - 1)), max_size=5)))
    batches = [kept[a:b] for a, b in zip([0, *cuts], [*cuts, len(kept)]) if kept[a:b]]
    hours = [draw(st.sampled_from([0, 0, 24, 24 * 20, 24 * 100])) for _ in batches]
    return batches, hours


@pytest.fixture
def sup(database: Callable[[str], str]) -> Iterator[Supervision]:
    url = database("supervision")
    migrate("supervision", url)
    s = Supervision(uow=UnitOfWork(make_engine(url)), directory=load_directory(CONFIG), policy=POLICY,
                    clock=ManualClock(T0), metrics=SupervisionMetrics(), settings=Settings())
    yield s
    s.uow.engine.dispose()


def deliver(sup: Supervision, batch: list[ev.Event]) -> None:
    with sup.uow.begin() as conn:
        apply_events(sup, conn, [Delivery(e, e.subject, e.occurred_at) for e in batch])


def stored(sup: Supervision, case_id: str) -> tuple[dict, list[tuple]]:
    t = tables.timeline
    with sup.uow.engine.connect() as conn:
        row = conn.execute(select(tables.cases).where(tables.cases.c.case_id == case_id)).one()._mapping
        steps = conn.execute(select(t.c.event_id, t.c.payload, t.c.placed_at, t.c.status, t.c.reason)
                             .where(t.c.case_id == case_id)).all()
    return dict(row), sorted(tuple(s) for s in steps)


def full_fold(steps: list[tuple]) -> tuple[domain.CaseState, list[domain.Verdict]]:
    events = [ev.decode_dict(payload) for _, payload, *_ in steps]
    return domain.fold(events, POLICY, {}, [placed for _, _, placed, *_ in steps])


def outbox_size(sup: Supervision) -> int:
    with sup.uow.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tables.outbox)).scalar_one()


# --- the fold kept with the row -----------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=deliveries())
def test_the_stored_fold_equals_a_full_fold_of_the_timeline_in_any_arrival_order(sup: Supervision, case) -> None:  # noqa: ANN001
    batches, hours = case
    case_id = batches[0][0].case_id
    sup.clock = ManualClock(T0)
    for batch, h in zip(batches, hours):
        deliver(sup, batch)
        if h:
            sup.clock.advance(timedelta(hours=h))
            sweep(sup)
    row, steps = stored(sup, case_id)
    state, verdicts = full_fold(steps)
    assert lifecycle.state_from_dict(row["fold"]) == state
    assert row["state"] == state.state
    received = state.state != "new"
    assert [status for *_, status, _ in steps] == [
        "pending" if not received else "applied" if v.applied else "refused" for v in verdicts]
    assert [reason for *_, reason in steps] == [v.reason for v in verdicts]
    events = [ev.decode_dict(payload) for _, payload, *_ in steps]
    assert (row["folded_at"], row["folded_rank"]) == max(domain.happened(p, e.type)
                                                        for e, (_, _, p, *_) in zip(events, steps))
    # folding the whole timeline again changes nothing and sends nothing
    sent = outbox_size(sup)
    with sup.uow.begin() as conn:
        assert refresh(sup, conn, case_id) == state
    again, steps_again = stored(sup, case_id)
    assert {k: v for k, v in again.items() if k != "next_check_at"} == {
        k: v for k, v in row.items() if k != "next_check_at"}
    assert steps_again == steps and outbox_size(sup) == sent


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=deliveries(), hours=st.sampled_from([1, 24 * 3, 24 * 10, 24 * 40, 24 * 400]))
def test_a_sweep_of_the_due_cases_leaves_nothing_due_that_a_sweep_of_every_case_would_send(sup: Supervision, case,
                                                                                          hours: int) -> None:  # noqa: ANN001
    batches, _ = case
    sup.clock = ManualClock(T0)
    for batch in batches:
        deliver(sup, batch)
    sup.clock.advance(timedelta(hours=hours))
    sweep(sup)
    with sup.uow.begin() as conn:  # every open case due now, as a sweep without the index would see them
        conn.execute(update(tables.cases).values(next_check_at=domain.ALWAYS))
    assert sweep(sup) == 0


def test_a_sweep_with_nothing_due_visits_no_case_and_one_with_something_due_sends_it(sup: Supervision) -> None:
    deliver(sup, full_lifecycle("QS-2026-900001")[:4])  # signed: the opinion is due in 60 days
    with sup.uow.engine.connect() as conn:
        check = conn.execute(select(tables.cases.c.next_check_at)).scalar_one()
    state = stored(sup, "QS-2026-900001")[0]["fold"]
    assert check == domain.next_check_at(lifecycle.state_from_dict(state), POLICY) > sup.clock.now()
    assert sweep(sup) == 0
    sup.clock.advance(check - sup.clock.now())
    assert sweep(sup) == 1  # the reminder before the acceptance decision's due date
    with sup.uow.engine.connect() as conn:
        assert conn.execute(select(tables.cases.c.next_check_at)).scalar_one() > check


def test_a_case_from_before_folds_were_kept_is_folded_by_the_next_sweep_or_event(sup: Supervision) -> None:
    events = full_lifecycle("QS-2026-900002")
    deliver(sup, events[:4])
    expected = stored(sup, "QS-2026-900002")[0]
    with sup.uow.begin() as conn:  # what the migration leaves: no fold, no mark, no check time
        conn.execute(update(tables.cases).values(fold=None, folded_at=None, folded_rank=None, next_check_at=None))
    sweep(sup)
    assert stored(sup, "QS-2026-900002")[0] == expected
    with sup.uow.begin() as conn:
        conn.execute(update(tables.cases).values(fold=None, folded_at=None, folded_rank=None, next_check_at=None))
    deliver(sup, [events[4]])
    row, steps = stored(sup, "QS-2026-900002")
    assert lifecycle.state_from_dict(row["fold"]) == full_fold(steps)[0]
    assert row["state"] == "accepted"


def test_a_redelivered_batch_is_folded_once(sup: Supervision) -> None:
    events = full_lifecycle("QS-2026-900003")[:5]
    deliver(sup, events)
    before, sent = stored(sup, "QS-2026-900003"), outbox_size(sup)
    deliver(sup, events)
    deliver(sup, events[::-1])
    assert stored(sup, "QS-2026-900003") == before and outbox_size(sup) == sent


# --- CaseState as JSON --------------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(timezone.utc))
codes = st.sampled_from(["forestry", "xishan", "county_gov", "city_gov"])
dues = st.builds(domain.Due, kind=st.sampled_from(["sign", "accept", "reply", "review"]), due_at=moments,
                 unit=st.none() | codes, source=st.text(max_size=20), met_at=st.none() | moments)
states = st.builds(
    domain.CaseState, state=st.sampled_from(list(domain.State)), lead=st.none() | codes, co=st.sets(codes),
    leader=st.none() | st.just("leader01"), received_at=st.none() | moments, service_type=st.none() | st.just("s"),
    signed_at=st.none() | moments, acceptance=st.none() | st.sampled_from(["accepted", "not_accepted"]),
    decided_at=st.none() | moments, replied_at=st.none() | moments, closed_at=st.none() | moments,
    satisfied=st.none() | st.booleans(), extension=st.none() | st.sampled_from(["requested", "approved"]),
    review_level=st.none() | st.just("review"), opinion_level=st.none() | st.just("re_review"),
    received_by=st.dictionaries(codes, moments), objections=st.dictionaries(codes, moments),
    reviewers=st.dictionaries(st.sampled_from(["review", "re_review"]), codes), dues=st.lists(dues, max_size=4))


@given(states)
def test_a_case_state_survives_json_whole(state: domain.CaseState) -> None:
    back = lifecycle.state_from_dict(json.loads(json.dumps(lifecycle.state_to_dict(state))))
    assert back == state
    assert isinstance(back.state, domain.State) and isinstance(back.co, set)
    assert all(isinstance(d, domain.Due) for d in back.dues)


def test_every_field_of_a_case_state_is_kept_and_a_stored_state_missing_one_is_not_read() -> None:
    state, _ = domain.fold(full_lifecycle()[:-3], POLICY, {})  # the review asked for, its reviewer named
    state.leader, state.service_type, state.objections = "leader01", "s", {"xishan": at(3)}
    state.satisfied, state.closed_at, state.opinion_level = False, at(600), "review"
    assert all(getattr(state, f.name) not in (None, {}, set(), []) for f in fields(domain.CaseState))
    stored_state = lifecycle.state_to_dict(state)
    assert lifecycle.state_from_dict(json.loads(json.dumps(stored_state))) == state
    del stored_state["leader"]
    with pytest.raises(ValueError):
        lifecycle.state_from_dict(stored_state)


# --- when a sweep next has anything to do -------------------------------------------------------

def due_at(s: domain.CaseState, now: datetime) -> tuple:
    """Everything a sweep would do for the case at ``now``."""
    return (tuple((stage, d.kind, d.due_at) for stage, d in domain.alerts_due(s, now, POLICY)),
            domain.should_close(s, now, POLICY), domain.should_archive(s, now, POLICY))


NOTHING = ((), None, False)


def folded_states() -> list[domain.CaseState]:
    """Every prefix of every scenario, folded, and each of those closed a day after its last event."""
    out = []
    for scenario in SCENARIOS:
        events = scenario("QS-2026-000001")
        for n in range(1, len(events) + 1):
            state, _ = domain.fold(events[:n], POLICY, {})
            out.append(state)
            if state.state in (domain.State.REPLIED, domain.State.NOT_ACCEPTED):
                closing = ev.CaseClosed(case_id="QS-2026-000001", occurred_at=at(700), actor=SYS, reason="satisfied")
                out.append(domain.fold([*events[:n], closing], POLICY, {})[0])
    return out


@pytest.mark.parametrize("state", folded_states())
def test_nothing_is_due_before_the_next_check_and_something_is_at_it(state: domain.CaseState) -> None:
    tick = timedelta(microseconds=1)
    check = domain.next_check_at(state, POLICY)
    if check is None:
        assert due_at(state, T0 + timedelta(days=3650)) == NOTHING
    elif check == domain.ALWAYS:
        assert due_at(state, T0) != NOTHING
    else:
        assert due_at(state, check - tick) == NOTHING and due_at(state, check) != NOTHING
    for after in (T0, at(100), at(1000), at(5000)):  # what a sweep at ``after`` did is done
        later = domain.next_check_at(state, POLICY, after)
        if later is None:
            assert due_at(state, T0 + timedelta(days=3650)) == due_at(state, after)
        else:
            assert later > after
            assert due_at(state, later - tick) == due_at(state, after) != due_at(state, later)


def test_a_second_receipt_under_another_id_is_refused_in_the_same_batch_or_a_later_one(sup: Supervision) -> None:
    receipt = full_lifecycle("QS-2026-900004")[0]
    other = receipt.model_copy(update={"event_id": "another-receipt"})
    with pytest.raises(Refusal):
        deliver(sup, [receipt, other])
    deliver(sup, [receipt, receipt])  # a redelivery is no second receipt
    with pytest.raises(Refusal):
        deliver(sup, [other])
    assert stored(sup, "QS-2026-900004")[0]["state"] == "received"
