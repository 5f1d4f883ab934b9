"""The 信访工作条例 steps in the lifecycle fold, without a bus: acceptance (Art. 23), objections
(Art. 23), extensions by the unit head (Art. 34), the opinion and finality, review and re-review by
the bodies above (Art. 35, 36)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.supervision import domain
from shared import events as ev
from shared.policy import load_policy
from shared.settings import REPO_ROOT

POLICY = load_policy(REPO_ROOT / "deploy" / "config")
CASE = "QS-2026-000007"
SYS = ev.Actor(kind="service", id="test")
RESIDENT = ev.Actor(kind="resident")
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)  # Mon 2 Mar 2026, 09:00 in the county
BRIEF = ev.CaseBrief(title="t", content="c", channel="walk_in", received_at=T0, township="xishan", resident_name="甲")


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def unit(code: str) -> ev.Actor:
    return ev.Actor(kind="unit", id=code)


def received(t: datetime = T0) -> ev.CaseReceived:
    return ev.CaseReceived(case_id=CASE, occurred_at=t, actor=SYS, channel="walk_in", title="t", content="c",
                           township="xishan", resident=ev.ResidentRef(name="甲"))


def assigned(code: str, t: datetime, role: str = "lead", level: str | None = None) -> ev.CaseAssigned:
    return ev.CaseAssigned(case_id=CASE, occurred_at=t, actor=SYS, unit=code, role=role, review_level=level, case=BRIEF)


def signed(code: str, t: datetime) -> ev.UnitSigned:
    return ev.UnitSigned(case_id=CASE, occurred_at=t, actor=unit(code), unit=code)


def accepted(code: str, t: datetime, decision: str = "accepted", reason: str = "", **kw) -> ev.AcceptanceDecided:
    return ev.AcceptanceDecided(case_id=CASE, occurred_at=t, actor=unit(code), unit=code, decision=decision,
                                reason=reason, **kw)


def replied(code: str, t: datetime, **kw) -> ev.CaseReplied:
    return ev.CaseReplied(case_id=CASE, occurred_at=t, actor=unit(code), unit=code, result="explained", text="意见", **kw)


def objection(code: str, t: datetime) -> ev.CaseReturned:
    return ev.CaseReturned(case_id=CASE, occurred_at=t, actor=unit(code), unit=code, reason="不属于本单位职责")


def decided(code: str, t: datetime, approved: bool) -> ev.ObjectionDecided:
    return ev.ObjectionDecided(case_id=CASE, occurred_at=t, actor=ev.Actor(kind="supervisor", id="s1"), unit=code,
                               approved=approved, reason="核实")


def review(level: str, t: datetime) -> ev.ReviewRequested:
    return ev.ReviewRequested(case_id=CASE, occurred_at=t, actor=RESIDENT, level=level, reason="不服")


def fold(events: list[ev.Event]) -> tuple[domain.CaseState, list[domain.Verdict]]:
    return domain.fold(events, POLICY, {})


def opened() -> list[ev.Event]:
    """Received, assigned to forestry with xishan co-handling, signed for."""
    return [received(), assigned("forestry", at(1)), assigned("xishan", at(1), "co"), signed("forestry", at(5))]


def due(state: domain.CaseState, kind: str) -> domain.Due:
    return next(d for d in state.dues if d.kind == kind and d.met_at is None)


# --- 受理 (Art. 23) ------------------------------------------------------------------------------

def test_the_acceptance_decision_is_due_15_days_after_the_units_own_receipt() -> None:
    # Received Mon 2 Mar, assigned to the unit only on Thu 5 Mar: 15 days from the unit's receipt.
    state, _ = fold([received(), assigned("forestry", at(24 * 3))])
    assert due(state, "accept").due_at == POLICY.due(at(24 * 3), POLICY.accept_days)
    assert due(state, "accept").unit == "forestry"


def test_acceptance_starts_the_60_day_clock_of_the_opinion() -> None:
    state, verdicts = fold(opened() + [accepted("forestry", at(24 * 10))])
    assert all(v.applied for v in verdicts) and state.state == "accepted"
    assert due(state, "reply").due_at == POLICY.due(at(24 * 10), POLICY.reply_days)  # not from the sign-for
    assert all(d.met_at for d in state.dues if d.kind == "accept")


def test_a_case_not_accepted_ends_and_closes_at_once() -> None:
    state, verdicts = fold(opened() + [accepted("forestry", at(30), "not_accepted", "属于劳动争议仲裁事项",
                                                legal_path="arbitration")])
    assert all(v.applied for v in verdicts) and state.state == "not_accepted"
    assert not [d for d in state.open_dues() if d.kind == "reply"]  # nothing more to handle
    assert domain.should_close(state, at(31), POLICY) == "not_accepted"
    state, verdicts = fold(opened() + [accepted("forestry", at(30), "not_accepted", "r"),
                                       ev.CaseClosed(case_id=CASE, occurred_at=at(31), actor=SYS, reason="not_accepted"),
                                       review("review", at(40))])
    assert state.state == "closed" and not verdicts[-1].applied and "final" in verdicts[-1].reason


# --- 异议 (Art. 23) -----------------------------------------------------------------------------

def test_an_objection_alone_leaves_the_case_with_the_unit_and_its_clock_running() -> None:
    state, verdicts = fold(opened() + [objection("forestry", at(6))])
    assert verdicts[-1].applied and state.objections == {"forestry": at(6)}
    assert state.lead == "forestry" and state.state == "signed" and due(state, "reply").unit == "forestry"


def test_an_approved_objection_relieves_the_lead_and_drops_its_due_dates() -> None:
    state, verdicts = fold(opened() + [objection("forestry", at(6)), decided("forestry", at(8), True)])
    assert all(v.applied for v in verdicts)
    assert state.state == "returned" and state.lead is None and state.objections == {}
    assert not [d for d in state.dues if d.met_at is None and d.kind in ("sign", "accept", "reply")]
    # routing then assigns another unit, which gets its own sign-for and acceptance due dates
    state, verdicts = fold(opened() + [objection("forestry", at(6)), decided("forestry", at(8), True),
                                       assigned("health", at(8))])
    assert verdicts[-1].applied and state.lead == "health" and due(state, "accept").unit == "health"


def test_a_rejected_objection_keeps_the_case_and_the_unit_may_not_object_again_too_late() -> None:
    state, verdicts = fold(opened() + [objection("forestry", at(6)), decided("forestry", at(8), False)])
    assert all(v.applied for v in verdicts) and state.lead == "forestry" and state.state == "signed"
    assert due(state, "reply").due_at == POLICY.due(at(5), POLICY.reply_days)  # the clock kept running


def test_a_forwarded_acceptance_decision_is_an_objection() -> None:
    state, verdicts = fold(opened() + [accepted("forestry", at(6), "forwarded", "属县自然资源局职责")])
    assert verdicts[-1].applied and "forestry" in state.objections and state.acceptance is None


def test_a_co_handling_units_approved_objection_only_removes_it() -> None:
    state, _ = fold(opened() + [objection("xishan", at(6)), decided("xishan", at(8), True)])
    assert state.co == set() and state.lead == "forestry" and state.state == "signed"


def test_the_objection_window_counts_working_days_across_national_day() -> None:
    # Assigned Wed 30 Sep 2026 (county time). 5 working days: 8, 9, 10 (Sat, make-up), 12, 13 Oct.
    t = datetime(2026, 9, 30, 2, 0, tzinfo=timezone.utc)
    base = [received(t), assigned("forestry", t), signed("forestry", t + timedelta(hours=1))]
    last_day = datetime(2026, 10, 13, 15, 0, tzinfo=timezone.utc)  # Tue 13 Oct, 23:00 county
    assert fold(base + [objection("forestry", last_day)])[1][-1].applied
    refused = fold(base + [objection("forestry", last_day + timedelta(hours=2))])[1][-1]  # Wed 14 Oct, 01:00
    assert not refused.applied and "5 working days" in refused.reason


# --- 延期 (Art. 34) -----------------------------------------------------------------------------

def test_an_extension_approved_by_the_units_head_moves_the_opinions_due_date() -> None:
    events = opened() + [accepted("forestry", at(8)),
                         ev.ExtensionRequested(case_id=CASE, occurred_at=at(40), actor=unit("forestry"),
                                               unit="forestry", days=30, reason="需现场测绘"),
                         ev.ExtensionDecided(case_id=CASE, occurred_at=at(41), actor=unit("forestry"), unit="forestry",
                                             approved=True, days=30, approved_by="局长")]
    state, verdicts = fold(events)
    assert all(v.applied for v in verdicts) and state.extension == "approved"
    assert due(state, "reply").due_at == POLICY.extended(POLICY.due(at(8), POLICY.reply_days), 30)


# --- 处理意见书, finality (Art. 34-36) -------------------------------------------------------------

def answered() -> list[ev.Event]:
    return opened() + [accepted("forestry", at(8)), replied("forestry", at(24 * 20))]


def test_a_dissatisfied_resident_who_asks_for_nothing_leaves_a_final_case_after_the_review_window() -> None:
    feedback = ev.PetitionerFeedback(case_id=CASE, occurred_at=at(24 * 21), actor=RESIDENT, satisfied=False)
    state, _ = fold(answered() + [feedback])
    window_ends = POLICY.due(at(24 * 20), POLICY.review_request_days)
    assert domain.should_close(state, window_ends - timedelta(minutes=1), POLICY) is None  # the right is still open
    assert domain.should_close(state, window_ends, POLICY) == "no_review"


def test_a_review_is_answered_by_the_body_above_and_a_re_review_is_final() -> None:
    events = answered() + [review("review", at(24 * 22)), assigned("county_gov", at(24 * 22), "reviewer", "review"),
                           replied("county_gov", at(24 * 40), review_outcome="upheld"),
                           review("re_review", at(24 * 45)), assigned("city_gov", at(24 * 45), "reviewer", "re_review")]
    state, verdicts = fold(events)
    assert all(v.applied for v in verdicts) and state.state == "reopened"
    assert due(state, "re_review").unit == "city_gov"
    state, verdicts = fold(events + [replied("city_gov", at(24 * 60), review_outcome="upheld")])
    assert verdicts[-1].applied and state.opinion_level == "re_review" and state.final
    assert domain.should_close(state, at(24 * 60), POLICY) == "re_reviewed"
    state, verdicts = fold(events + [replied("city_gov", at(24 * 60), review_outcome="upheld"),
                                     ev.CaseClosed(case_id=CASE, occurred_at=at(24 * 60), actor=SYS, reason="re_reviewed"),
                                     review("review", at(24 * 61))])
    assert not verdicts[-1].applied and "final" in verdicts[-1].reason
    assert domain.is_final(state, at(24 * 61), POLICY)


def test_a_closed_case_within_its_review_window_is_not_final_yet() -> None:
    satisfied = ev.PetitionerFeedback(case_id=CASE, occurred_at=at(24 * 21), actor=RESIDENT, satisfied=True)
    close = ev.CaseClosed(case_id=CASE, occurred_at=at(24 * 21), actor=SYS, reason="satisfied")
    state, _ = fold(answered() + [satisfied, close])
    assert state.state == "closed" and not domain.is_final(state, at(24 * 22), POLICY)
    assert domain.is_final(state, POLICY.due(at(24 * 20), POLICY.review_request_days) + timedelta(minutes=1), POLICY)
