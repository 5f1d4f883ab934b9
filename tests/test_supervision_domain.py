"""The lifecycle fold and the deadline calendar, without a bus."""
from __future__ import annotations

import copy
import inspect
import json
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
HEAD = ev.Actor(kind="unit", id="forestry-head")
GOV = ev.Actor(kind="unit", id="county_gov")
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
        ev.AcceptanceDecided(case_id=case_id, occurred_at=at(8), actor=UNIT, unit="forestry", decision="accepted"),
        ev.ProgressReported(case_id=case_id, occurred_at=at(30), actor=UNIT, unit="forestry", note="现场勘查"),
        ev.ExtensionRequested(case_id=case_id, occurred_at=at(40), actor=UNIT, unit="forestry", days=20, reason="r"),
        ev.ExtensionDecided(case_id=case_id, occurred_at=at(41), actor=HEAD, unit="forestry", approved=True, days=20,
                            approved_by="局长"),
        ev.CaseReplied(case_id=case_id, occurred_at=at(300), actor=UNIT, unit="forestry", result="resolved", text="已办"),
        ev.PetitionerFeedback(case_id=case_id, occurred_at=at(320), actor=SYS, satisfied=False),
        ev.ReviewRequested(case_id=case_id, occurred_at=at(330), actor=SYS, level="review", reason="不服"),
        ev.CaseAssigned(case_id=case_id, occurred_at=at(330), actor=SYS, unit="county_gov", role="reviewer",
                        review_level="review", case=BRIEF),
        ev.CaseReplied(case_id=case_id, occurred_at=at(500), actor=GOV, unit="county_gov", result="explained", text="复查",
                       review_outcome="upheld"),
        ev.PetitionerFeedback(case_id=case_id, occurred_at=at(510), actor=SYS, satisfied=True),
        ev.CaseClosed(case_id=case_id, occurred_at=at(511), actor=SYS, reason="satisfied"),
    ]


def test_an_ordered_lifecycle_applies_every_event_and_tracks_due_dates() -> None:
    state, verdicts = domain.fold(lifecycle(), POLICY, {})
    assert [v.reason for v in verdicts if not v.applied] == []
    assert state.state == "closed" and state.lead == "forestry" and state.co == {"xishan"}
    kinds = [(d.kind, d.met_at is not None) for d in state.dues]
    assert kinds == [("sign", True), ("accept", True), ("reply", True), ("review", True)]
    reply = next(d for d in state.dues if d.kind == "reply")
    # 60 days from acceptance (Art. 34), then extended by the unit head's 20 days
    assert reply.due_at == POLICY.extended(POLICY.due(at(8), POLICY.reply_days), 20)
    review = next(d for d in state.dues if d.kind == "review")
    assert review.unit == "county_gov" and state.reviewers == {"review": "county_gov"}


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
    assert agent.due_at == POLICY.due(at(0), 5, calendar="working_days")  # 代办时限: working days


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
    state.dues = [sign]
    assert domain.alerts_due(state, sign.due_at - timedelta(days=4), POLICY) == []
    stages = [s for s, d in domain.alerts_due(state, sign.due_at + timedelta(days=6), POLICY) if d.kind == "sign"]
    assert stages == ["reminded", "overdue", "escalated"]


def test_the_installed_calendar_knows_2026s_make_up_days() -> None:
    from shared.policy import schedule_known_through
    assert schedule_known_through() >= 2026


# --- the transition table -------------------------------------------------------------------------

LIFECYCLE_EVENTS = {ev.CaseReceived, ev.CaseAssigned, ev.CaseNeedsTriage, ev.LeaderAssigned, ev.UnitSigned,
                    ev.CaseReturned, ev.AcceptanceDecided, ev.ObjectionDecided, ev.ProgressReported, ev.ExtensionRequested, ev.ExtensionDecided, ev.CaseReplied,
                    ev.PetitionerFeedback, ev.ReviewRequested, ev.CaseReminded, ev.CaseOverdue, ev.CaseEscalated,
                    ev.CaseClosed, ev.CaseArchived}


def test_every_event_supervision_folds_has_its_own_transition() -> None:
    from services.supervision.handlers import HANDLERS
    from services.supervision.service import ALERT_EVENTS

    assert set(domain.TRANSITIONS) == LIFECYCLE_EVENTS  # supervision's consumer subscribes to these keys
    for event_type, transition in domain.TRANSITIONS.items():
        assert callable(transition) and transition is not domain.apply, event_type
        assert list(inspect.signature(transition).parameters) == ["s", "e", "at", "ctx"], event_type
        assert transition.__doc__, event_type
    # On the timeline: what the consumer receives and what supervision decides itself.
    folded = set(HANDLERS.handlers) | set(ALERT_EVENTS.values()) | {ev.ObjectionDecided, ev.CaseClosed,
                                                                   ev.CaseArchived}
    assert folded == set(domain.TRANSITIONS)
    # A new case event type needs a transition (UnitNotified only forwards one to the units).
    case_events = {t for t in ev.EVENT_TYPES.values() if issubclass(t, ev.CaseEvent)} - {ev.UnitNotified}
    assert case_events == set(domain.TRANSITIONS)


def later(hours: float) -> dict:
    return {"case_id": "QS-2026-000001", "occurred_at": at(hours)}


# (how many events of lifecycle() have happened, the event, the reason it is refused)
ILLEGAL = [
    (0, ev.UnitSigned(**later(1), actor=UNIT, unit="forestry"), "the case has not been received"),
    (1, ev.CaseReceived(**later(1), actor=SYS, channel="walk_in", title="t", content="c", township="xishan",
                        resident=ev.ResidentRef(name="乙")), "received twice"),
    (3, ev.CaseReplied(**later(2), actor=UNIT, unit="forestry", result="resolved", text="t"),
     "cannot reply: the case is assigned"),  # a reply before the sign-for
    (3, ev.UnitSigned(**later(3), actor=UNIT, unit="health"), "health does not hold the case"),
    (4, ev.UnitSigned(**later(6), actor=UNIT, unit="forestry"), "cannot sign: the case is signed"),
    (4, ev.CaseNeedsTriage(**later(6), actor=SYS, reason="no_rule"), "cannot triage: the case is signed"),
    (4, ev.CaseReturned(**later(6), actor=UNIT, unit="health", reason="r"),
     "health cannot object to a case it does not hold"),
    (4, ev.CaseReplied(**later(6), actor=UNIT, unit="xishan", result="resolved", text="t"),
     "xishan does not lead the case"),
    (4, ev.ReviewRequested(**later(6), actor=SYS, level="review", reason="r"),
     "nothing to review: the case is signed"),  # a review before the opinion
    (4, ev.PetitionerFeedback(**later(6), actor=SYS, satisfied=True), "feedback before a reply"),
    (4, ev.CaseClosed(**later(6), actor=SYS, reason="satisfied"), "cannot close: the case is signed"),
    (4, ev.CaseArchived(**later(6), actor=SYS), "cannot archive: the case is signed"),
    (4, ev.ExtensionDecided(**later(6), actor=HEAD, unit="forestry", approved=True, days=5),
     "no extension was requested"),
    (4, ev.ExtensionRequested(**later(6), actor=UNIT, unit="forestry", days=POLICY.max_extension_days + 1, reason="r"),
     f"at most {POLICY.max_extension_days} days"),
    (3, ev.ExtensionRequested(**later(2), actor=UNIT, unit="forestry", days=5, reason="r"),
     "only the lead unit handling the case may ask for an extension"),
    # 受理 (Art. 23): by the lead, after its sign-for, once; 不予受理 says why
    (4, ev.AcceptanceDecided(**later(6), actor=UNIT, unit="health", decision="accepted"), "health does not lead the case"),
    (3, ev.AcceptanceDecided(**later(4), actor=UNIT, unit="forestry", decision="accepted"),
     "sign for the case first (签收), then decide on its acceptance"),
    (5, ev.AcceptanceDecided(**later(9), actor=UNIT, unit="forestry", decision="not_accepted", reason="r"),
     "the acceptance was decided already (accepted)"),
    (4, ev.AcceptanceDecided(**later(6), actor=UNIT, unit="forestry", decision="not_accepted"),
     "not_accepted needs a reason (不予受理理由), told to the resident in writing"),
    # 异议 (Art. 23): before acceptance, with reasons, within 5 working days of the unit's receipt
    (5, ev.CaseReturned(**later(9), actor=UNIT, unit="forestry", reason="r"), "cannot object: the case is accepted"),
    (4, ev.CaseReturned(**later(6), actor=UNIT, unit="forestry", reason=" "), "an objection needs its reasons (异议理由)"),
    # assigned Mon 2 Mar 10:00: the 5th working day is Mon 9 Mar; Tue 10 Mar is too late
    (4, ev.CaseReturned(**later(24 * 8), actor=UNIT, unit="forestry", reason="r"),
     "objections are due within 5 working days of receipt (Art. 23): the case stays with forestry"),
    (4, ev.ObjectionDecided(**later(6), actor=SYS, unit="forestry", approved=True), "no objection of forestry is waiting"),
    # 延期 (Art. 34): asked before the due date, decided by the lead unit's own head, 1..30 days
    (6, ev.ExtensionRequested(**later(24 * 70), actor=UNIT, unit="forestry", days=5, reason="r"),
     "an extension is asked for before the due date (Art. 34)"),
    (7, ev.ExtensionDecided(**later(42), actor=HEAD, unit="xishan", approved=True, days=5),
     "the head of the lead unit (forestry) decides an extension, not xishan"),
    (7, ev.ExtensionDecided(**later(42), actor=HEAD, unit="forestry", approved=True, days=POLICY.max_extension_days + 1),
     f"an extension is 1 to {POLICY.max_extension_days} days"),
    (8, ev.ExtensionRequested(**later(45), actor=UNIT, unit="forestry", days=5, reason="r"),
     "one extension at most"),  # a second extension
    (9, ev.CaseAssigned(**later(301), actor=SYS, unit="health", role="lead", case=BRIEF),
     "cannot assign: the case is replied"),
    (9, ev.ReviewRequested(**later(301), actor=SYS, level="re_review", reason="r"), "复查 first, then 复核, each once"),
    (9, ev.ReviewRequested(**later(300 + 24 * (POLICY.review_request_days + 2)), actor=SYS, level="review",
                           reason="r"), "asked after the review window"),
    # 复查 (Art. 35): answered by the body one level up, never by the unit whose opinion is reviewed
    (11, ev.CaseReplied(**later(331), actor=GOV, unit="county_gov", result="explained", text="t"),
     "the review is answered by the body one level up (not named yet), not county_gov"),
    (12, ev.CaseReplied(**later(400), actor=UNIT, unit="forestry", result="explained", text="t"),
     "the review is answered by the body one level up (county_gov), not forestry"),
    (15, ev.CaseClosed(**later(600), actor=SYS, reason="satisfied"), "the case is closed"),  # a second close
    (15, ev.CaseAssigned(**later(600), actor=SYS, unit="health", role="co", case=BRIEF), "the case is closed"),
    (15, ev.ReviewRequested(**later(600), actor=SYS, level="review", reason="r"), "复查 first, then 复核, each once"),
]


@pytest.mark.parametrize("done, event, reason", ILLEGAL, ids=[f"{e.type}-{r}" for _, e, r in ILLEGAL])
def test_an_illegal_transition_is_refused_and_leaves_the_state_as_it_was(done: int, event: ev.Event,
                                                                         reason: str) -> None:
    state, verdicts = domain.fold(lifecycle()[:done], POLICY, {})
    assert all(v.applied for v in verdicts)
    before = copy.deepcopy(state)
    assert domain.apply(state, event, event.occurred_at, POLICY, {}) == domain.Verdict(False, reason)
    assert state == before


def test_an_archived_case_refuses_a_second_archiving_but_takes_notes() -> None:
    state, _ = domain.fold(lifecycle() + [ev.CaseArchived(**later(2000), actor=SYS)], POLICY, {})
    assert state.state == "archived"
    again = domain.apply(state, ev.CaseArchived(**later(2001), actor=SYS), at(2001), POLICY, {})
    assert again == domain.Verdict(False, "cannot archive: the case is archived")
    leader = ev.LeaderAssigned(**later(2002), actor=SYS, leader_id="leader01", reasons=["repeat"])
    assert domain.apply(state, leader, at(2002), POLICY, {}).applied and state.leader == "leader01"


def test_progress_from_the_lead_unit_puts_a_signed_case_in_progress() -> None:
    state, _ = domain.fold(lifecycle()[:5], POLICY, {})
    co = ev.ProgressReported(**later(6), actor=UNIT, unit="xishan", note="n")
    assert domain.apply(state, co, at(6), POLICY, {}).applied and state.state == "accepted"
    lead = ev.ProgressReported(**later(7), actor=UNIT, unit="forestry", note="n")
    assert domain.apply(state, lead, at(7), POLICY, {}).applied and state.state == domain.State.IN_PROGRESS


# --- the states, as stored --------------------------------------------------------------------------

def test_states_are_the_strings_stored_before() -> None:
    assert [s.value for s in domain.State] == ["new", "received", "assigned", "triage", "returned", "signed",
                                              "accepted", "not_accepted", "in_progress", "replied", "reopened",
                                              "closed", "archived"]
    for s in domain.State:
        assert s == s.value and str(s) == f"{s}" == s.value and json.dumps(s) == f'"{s.value}"'
        assert domain.State(s.value) is s and hash(s) == hash(s.value)
    assert domain.OPEN_STATES == {"received", "assigned", "triage", "returned", "signed", "accepted", "not_accepted",
                                  "in_progress", "replied", "reopened"}
    assert domain.FINAL_STATES == {"closed", "archived"}
    assert "closed" in domain.FINAL_STATES and domain.State.CLOSED in {"closed"}
    assert domain.CaseState(state="replied").state is domain.State.REPLIED  # a stored row reads as its member
    assert domain.CaseState().state is domain.State.NEW
