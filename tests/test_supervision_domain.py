"""The lifecycle fold and the deadline calendar, without a bus."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from services.supervision import domain
from shared import events as ev
from shared.policy import load_policy
from shared.settings import REPO_ROOT

POLICY = load_policy(REPO_ROOT / "deploy" / "config")
WORKING = POLICY.model_copy(update={"calendar": "working_days"})
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)  # 09:00 in the county
SYS = ev.Actor(kind="service", id="test")
UNIT = ev.Actor(kind="unit", id="forestry")
BRIEF = ev.CaseBrief(title="t", content="c", channel="walk_in", received_at=T0, township="xishan", resident_name="甲")


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def lifecycle(case_id: str = "QS-2026-000001") -> list[ev.Event]:
    return [
        ev.CaseReceived(case_id=case_id, occurred_at=at(0), actor=SYS, channel="walk_in", title="t", content="c",
                        township="xishan", resident=ev.ResidentRef(name="甲")),
        ev.CaseAssigned(case_id=case_id, occurred_at=at(1), actor=SYS, unit="forestry", role="lead", case=BRIEF),
        ev.CaseAssigned(case_id=case_id, occurred_at=at(1), actor=SYS, unit="xishan", role="co", case=BRIEF),
        ev.UnitSigned(case_id=case_id, occurred_at=at(5), actor=UNIT, unit="forestry"),
        ev.ProgressReported(case_id=case_id, occurred_at=at(30), actor=UNIT, unit="forestry", note="现场勘查"),
        ev.ExtensionRequested(case_id=case_id, occurred_at=at(40), actor=UNIT, unit="forestry", days=20, reason="r"),
        ev.ExtensionDecided(case_id=case_id, occurred_at=at(41), actor=SYS, unit="forestry", approved=True, days=20),
        ev.CaseReplied(case_id=case_id, occurred_at=at(300), actor=UNIT, unit="forestry", result="resolved", text="已办"),
        ev.PetitionerFeedback(case_id=case_id, occurred_at=at(320), actor=SYS, satisfied=False),
        ev.ReviewRequested(case_id=case_id, occurred_at=at(330), actor=SYS, level="review", reason="不服"),
        ev.CaseReplied(case_id=case_id, occurred_at=at(500), actor=UNIT, unit="forestry", result="explained", text="复查"),
        ev.PetitionerFeedback(case_id=case_id, occurred_at=at(510), actor=SYS, satisfied=True),
        ev.CaseClosed(case_id=case_id, occurred_at=at(511), actor=SYS, reason="satisfied"),
    ]


def test_an_ordered_lifecycle_applies_every_event_and_tracks_due_dates() -> None:
    state, verdicts = domain.fold(lifecycle(), POLICY, {})
    assert [v.reason for v in verdicts if not v.applied] == []
    assert state.state == "closed" and state.lead == "forestry" and state.co == {"xishan"}
    kinds = [(d.kind, d.met_at is not None) for d in state.dues]
    assert kinds == [("accept", True), ("sign", True), ("reply", True), ("review", True)]
    reply = next(d for d in state.dues if d.kind == "reply")
    assert reply.due_at == POLICY.due(at(5), POLICY.reply_days) + timedelta(days=20)  # extended


@pytest.mark.parametrize("seed", range(25))
def test_shuffled_delivery_ends_in_the_same_state_as_ordered_delivery(seed: int) -> None:
    events = lifecycle()
    shuffled = events[:]
    random.Random(seed).shuffle(shuffled)
    ordered_state, _ = domain.fold(events, POLICY, {})
    shuffled_state, verdicts = domain.fold(shuffled, POLICY, {})
    assert shuffled_state == ordered_state
    assert all(v.applied for v in verdicts)


@pytest.mark.parametrize("late, reason", [
    (ev.CaseReplied(case_id="X", occurred_at=at(2), actor=UNIT, unit="forestry", result="resolved", text="t"),
     "cannot reply: the case is assigned"),
    (ev.CaseClosed(case_id="X", occurred_at=at(600), actor=SYS, reason="satisfied"), "the case is closed"),
    (ev.UnitSigned(case_id="X", occurred_at=at(3), actor=UNIT, unit="health"), "health does not hold the case"),
    (ev.ExtensionRequested(case_id="X", occurred_at=at(45), actor=UNIT, unit="forestry", days=5, reason="r"),
     "one extension at most"),
    (ev.ReviewRequested(case_id="X", occurred_at=at(520), actor=SYS, level="review", reason="r"),
     "复查 first, then 复核, each once"),
])
def test_an_illegal_event_is_refused_with_a_reason_and_changes_nothing(late: ev.Event, reason: str) -> None:
    before, _ = domain.fold(lifecycle(), POLICY, {})
    after, verdicts = domain.fold(lifecycle() + [late], POLICY, {})
    assert verdicts[-1].applied is False and reason in verdicts[-1].reason
    assert after == before


def test_events_before_the_case_is_received_wait_for_it() -> None:
    events = lifecycle()
    state, verdicts = domain.fold(events[1:3], POLICY, {})
    assert state.state == "new" and not any(v.applied for v in verdicts)
    assert domain.fold(events[:3], POLICY, {})[0].state == "assigned"


def test_a_delegated_case_carries_the_agents_time_limit() -> None:
    case = lifecycle()[0].model_copy(update={"channel": "delegated", "delegation": ev.Delegation(
        agent_id="agent001", agency_id="chengguan-ag1", service_type="business_license")})
    state, _ = domain.fold([case], POLICY, {"business_license": 5})
    agent = next(d for d in state.dues if d.kind == "agent")
    assert agent.due_at == POLICY.due(at(0), 5)


# --- the calendar, with real dates: National Day 2026 ------------------------------------------
# 2026: 中秋 Fri 25 Sep; 国庆 1–7 Oct off; Sun 20 Sep and Sat 10 Oct are make-up working days.

def local_midnight_after(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 16, 0, tzinfo=timezone.utc)  # 24:00 in the county = 16:00 UTC


def test_calendar_days_count_straight_through_the_holiday() -> None:
    received = datetime(2026, 9, 28, 2, 0, tzinfo=timezone.utc)  # Mon 28 Sep, 10:00 in the county
    assert POLICY.due(received, 15) == local_midnight_after(2026, 10, 13)


def test_working_days_skip_national_day_and_count_the_make_up_saturday() -> None:
    received = datetime(2026, 9, 28, 2, 0, tzinfo=timezone.utc)
    # 29, 30 Sep; 8, 9, 10 (Sat, make-up), 12–16, 19–23 Oct: the 15th working day is Fri 23 Oct.
    assert WORKING.due(received, 15) == local_midnight_after(2026, 10, 23)
    # Assigned on Wed 30 Sep: 3 working days to sign are 8, 9 and Saturday 10 Oct.
    assert WORKING.due(datetime(2026, 9, 30, 3, 0, tzinfo=timezone.utc), 3) == local_midnight_after(2026, 10, 10)


def test_working_days_count_the_make_up_sunday_before_mid_autumn() -> None:
    # Fri 18 Sep + 2 working days: Sun 20 Sep (make-up) and Mon 21 Sep.
    assert WORKING.due(datetime(2026, 9, 18, 2, 0, tzinfo=timezone.utc), 2) == local_midnight_after(2026, 9, 21)


def test_sweep_stages_come_in_order_around_a_due_date() -> None:
    state, _ = domain.fold(lifecycle()[:3], POLICY, {})
    sign = next(d for d in state.dues if d.kind == "sign")
    assert domain.alerts_due(state, sign.due_at - timedelta(days=4), POLICY) == []
    stages = [s for s, d in domain.alerts_due(state, sign.due_at + timedelta(days=6), POLICY) if d.kind == "sign"]
    assert stages == ["reminded", "overdue", "escalated"]


def test_the_installed_calendar_knows_2026s_make_up_days() -> None:
    from shared.policy import schedule_known_through
    assert schedule_known_through() >= 2026
