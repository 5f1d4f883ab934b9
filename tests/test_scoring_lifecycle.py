"""Scoring counts only what a case's lifecycle accepted, with the very fold supervision uses
(shared/lifecycle.py): an event supervision refuses moves no figure, a late but legal event counts
once what it follows has arrived, a second receipt of a case number changes nothing, and a rebuild
from a stream full of refused, forged and invalid events reaches exactly the live figures. The
lawful procedure's figures: 办结 is the lead unit's opinion (or 不予受理), a review reopens it until
the reviewing body's opinion, an objection re-routes only once approved, and a review's lateness is
the reviewing body's."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import nats
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from services.scoring import domain, tables
from services.scoring.handlers import HANDLERS
from services.scoring.service import RECORDS
from services.supervision import domain as supervision_domain
from shared import events as ev
from shared import lifecycle
from shared.bus import ensure_streams
from shared.db import make_engine
from shared.directory import load_directory
from shared.policy import CHINA_TZ, load_policy
from shared.settings import REPO_ROOT, Settings
from tests.helpers import read_raw, wait_until
from tests.scoring_history import History, script
from tests.test_scoring import expected, projected, publish_shuffled

CONFIG = REPO_ROOT / "deploy" / "config"
DIRECTORY = load_directory(CONFIG)
POLICY = load_policy(CONFIG)
NOW = datetime.now(timezone.utc).replace(microsecond=0)
YEAR = str((NOW - timedelta(hours=3)).astimezone(CHINA_TZ).year)
CLERK = ev.Actor(kind="clerk", id="desk3")
ROUTING = ev.Actor(kind="service", id="routing")
SUPERVISION = ev.Actor(kind="service", id="supervision")


def unit(code: str) -> ev.Actor:
    return ev.Actor(kind="unit", id=code)


def receipt(case_id: str, at: datetime, **extra) -> ev.CaseReceived:  # noqa: ANN003
    fields = {"channel": "walk_in", "township": "chengguan", "category": "logging_permit", **extra}
    return ev.CaseReceived(case_id=case_id, occurred_at=at, actor=CLERK, title="申请采伐自家承包山林木",
                           content="本人承包山林中的杉木已到采伐期，申请办理林木采伐许可。",
                           resident=ev.ResidentRef(name="王建国"), **fields)


def assignment(case: ev.CaseReceived, lead: str, at: datetime) -> ev.CaseAssigned:
    return ev.CaseAssigned(case_id=case.case_id, occurred_at=at, actor=ROUTING, unit=lead, role="lead",
                           case=ev.CaseBrief.of(case), category=case.category)


def sign(case_id: str, code: str, at: datetime) -> ev.UnitSigned:
    return ev.UnitSigned(case_id=case_id, occurred_at=at, actor=unit(code), unit=code)


def accept(case_id: str, code: str, at: datetime, decision: str = "accepted",
           **extra) -> ev.AcceptanceDecided:  # noqa: ANN003
    """受理决定: accepted, or not_accepted (with ``reason`` and ``legal_path``), or forwarded (异议)."""
    return ev.AcceptanceDecided(case_id=case_id, occurred_at=at, actor=unit(code), unit=code, decision=decision,
                                reason=extra.pop("reason", "属于本单位职责"), **extra)


def handled_by(case: ev.CaseReceived, code: str, t: datetime) -> list[ev.Event]:
    """The case, assigned to ``code`` an hour after ``t``, signed for and accepted in the next two."""
    return [case, assignment(case, code, t + timedelta(hours=1)), sign(case.case_id, code, t + timedelta(hours=2)),
            accept(case.case_id, code, t + timedelta(hours=3))]


def opinion(case_id: str, code: str, at: datetime, outcome: str | None = None) -> ev.CaseReplied:
    """处理意见书 (a lead unit's), or a reviewing body's 复查/复核意见 with its ``outcome``."""
    return ev.CaseReplied(case_id=case_id, occurred_at=at, actor=unit(code), unit=code, result="explained",
                          text="处理意见", review_outcome=outcome)


def reviewer(case: ev.CaseReceived, code: str, level: str, at: datetime) -> ev.CaseAssigned:
    return ev.CaseAssigned(case_id=case.case_id, occurred_at=at, actor=ROUTING, unit=code, role="reviewer",
                           review_level=level, case=ev.CaseBrief.of(case))


def objection(case_id: str, code: str, at: datetime) -> ev.CaseReturned:
    return ev.CaseReturned(case_id=case_id, occurred_at=at, actor=unit(code), unit=code, reason="非本单位职责")


def decided(case_id: str, code: str, at: datetime, approved: bool) -> ev.ObjectionDecided:
    return ev.ObjectionDecided(case_id=case_id, occurred_at=at, actor=SUPERVISION, unit=code, approved=approved)


def counted(*events: ev.Event) -> domain.CaseFacts:
    """The facts of one case from these events, each placed at its own time."""
    facts = domain.counted_facts(events[0].case_id, list(events), [e.occurred_at for e in events], POLICY, {})
    assert facts is not None
    return facts


# --- the bus and the databases ------------------------------------------------------------------

def publish(settings: Settings, *events: ev.Event) -> None:
    """Each on its own subject, in this order."""
    publish_raw(settings, *((e.subject, ev.encode(e), e.event_id) for e in events))


def publish_raw(settings: Settings, *messages: tuple[str, bytes, str]) -> None:
    """(subject, payload, Nats-Msg-Id), as they are: a forged subject or an undecodable payload too."""
    async def go() -> None:
        nc = await nats.connect(settings.nats_url)
        js = nc.jetstream()
        await ensure_streams(js, settings)  # scoring alone declares none: it only reads
        for subject, data, msg_id in messages:
            await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
        await nc.close()
    asyncio.run(go())


@pytest.fixture
def scoring_db(settings: Settings, scoring: TestClient) -> Iterator[Engine]:
    engine = make_engine(settings.db_url("scoring"))
    yield engine
    engine.dispose()


def applied(engine: Engine, *events: ev.Event) -> None:
    """Wait until scoring's inbox holds every one of ``events`` (applied, whatever the fold said)."""
    ids = {e.event_id for e in events}

    def done() -> bool:
        with engine.connect() as conn:
            got = set(conn.execute(select(tables.inbox.c.event_id).where(tables.inbox.c.event_id.in_(ids))).scalars())
        return got == ids
    wait_until(done, what=f"scoring to apply {len(ids)} events")


def facts_row(engine: Engine, case_id: str) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(select(tables.case_facts).where(tables.case_facts.c.case_id == case_id)).first()
    return dict(row._mapping) if row else None


def figures(scoring: TestClient, period: str = YEAR, **filters: str) -> dict:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return scoring.get(f"/api/v1/reports/{period}" + (f"?{query}" if query else "")).json()["figures"]


def dead_letter_kinds(settings: Settings, consumer: str, event_id: str) -> list[str]:
    return [h["Xf-Error-Kind"] for h, data in read_raw(settings.nats_url, "deadletter.>", stream="DEADLETTER")
            if h.get("Xf-Consumer") == consumer and event_id.encode() in data]


def supervision_status(supervision: TestClient, case_id: str, event_id: str) -> tuple[str, str | None] | None:
    answer = supervision.get(f"/api/v1/cases/{case_id}/timeline")
    steps = [s for s in answer.json() if s["event_id"] == event_id] if answer.status_code == 200 else []
    return (steps[0]["status"], steps[0]["reason"]) if steps else None


# --- one fold, two services -----------------------------------------------------------------------

def test_supervision_and_scoring_read_the_one_lifecycle_and_scoring_subscribes_to_all_it_folds() -> None:
    assert supervision_domain.fold is lifecycle.fold and supervision_domain.TRANSITIONS is lifecycle.TRANSITIONS
    assert supervision_domain.placed_at is lifecycle.placed_at and supervision_domain.CaseState is lifecycle.CaseState
    assert set(HANDLERS.handlers) == set(lifecycle.TRANSITIONS) | set(RECORDS)
    assert set(domain.FACT_RULES) <= set(lifecycle.TRANSITIONS)  # no figure moves by an event the fold never sees


def test_a_cases_facts_count_only_the_events_its_fold_applies() -> None:
    t = NOW - timedelta(hours=5)
    case = receipt("QS-2026-000001", t)
    events = [case, assignment(case, "forestry", t + timedelta(hours=1)),
              sign(case.case_id, "health", t + timedelta(hours=2)),  # holds nothing
              sign(case.case_id, "forestry", t - timedelta(hours=1)),  # before the receipt
              ev.PetitionerFeedback(case_id=case.case_id, occurred_at=t + timedelta(hours=3), actor=CLERK,
                                    satisfied=True),  # before any reply
              ev.CaseClosed(case_id=case.case_id, occurred_at=t + timedelta(hours=4), actor=SUPERVISION,
                            reason="satisfied")]  # nothing replied
    placed = [e.occurred_at for e in events]
    facts = domain.counted_facts(case.case_id, events, placed, POLICY, {})
    assert facts is not None and facts.lead_unit == "forestry" and facts.received_at == t
    assert (facts.signed_at, facts.feedback_at, facts.closed_at) == (None, None, None)
    assert domain.counted_facts(case.case_id, events[1:], placed[1:], POLICY, {}) is None  # pending: no receipt yet

    on_time = sign(case.case_id, "forestry", t + timedelta(hours=2))
    facts = domain.counted_facts(case.case_id, [*events, on_time], [*placed, on_time.occurred_at], POLICY, {})
    assert facts.signed_at == on_time.occurred_at


# --- the lawful procedure's figures ---------------------------------------------------------------

def test_the_lead_units_opinion_is_ban_jie_and_a_review_reopens_it_until_the_reviewing_bodys_opinion() -> None:
    t = NOW - timedelta(days=20)
    case = receipt("QS-2026-000201", t)
    handled = [*handled_by(case, "forestry", t), opinion(case.case_id, "forestry", t + timedelta(days=5))]
    facts = counted(*handled)
    assert domain.is_closed(facts) and facts.replied_at == t + timedelta(days=5) and facts.closed_at is None
    assert (facts.acceptance, facts.decided_at) == ("accepted", t + timedelta(hours=3))

    asked = ev.ReviewRequested(case_id=case.case_id, occurred_at=t + timedelta(days=6), actor=CLERK, level="review",
                               reason="不服处理意见")
    own = opinion(case.case_id, "forestry", t + timedelta(days=8), "upheld")  # the lead may not answer its review
    facts = counted(*handled, asked, own, reviewer(case, "county_gov", "review", t + timedelta(days=7)))
    assert not domain.is_closed(facts) and domain.pending_review(facts) == "review"
    assert (facts.replied_at, facts.reviewed_at) == (t + timedelta(days=5), None)
    assert domain.figures([facts])["closed"] == 0 and domain.figures([facts])["reviews"] == 1

    answer = opinion(case.case_id, "county_gov", t + timedelta(days=9), "changed")
    facts = counted(*handled, asked, own, reviewer(case, "county_gov", "review", t + timedelta(days=7)), answer)
    assert domain.is_closed(facts) and domain.closed_on_time(facts)
    assert (facts.replied_at, facts.reviewed_at, facts.review_outcome) == (t + timedelta(days=5), answer.occurred_at,
                                                                            "changed")
    assert facts.lead_unit == "forestry"  # naming the reviewer changes no lead
    figs = domain.figures([facts])
    assert (figs["closed"], figs["reviews"], figs["reviews_answered"], figs["reviews_changed"]) == (1, 1, 1, 1)

    again = ev.ReviewRequested(case_id=case.case_id, occurred_at=t + timedelta(days=10), actor=CLERK, level="re_review",
                               reason="不服复查意见")
    upheld = opinion(case.case_id, "city_gov", t + timedelta(days=15), "upheld")
    facts = counted(*handled, asked, reviewer(case, "county_gov", "review", t + timedelta(days=7)), answer, again,
                    upheld, reviewer(case, "city_gov", "re_review", t + timedelta(days=11)))
    figs = domain.figures([facts])
    assert (facts.re_reviewed_at, facts.re_review_outcome) == (upheld.occurred_at, "upheld")
    assert (figs["closed"], figs["re_reviews"], figs["re_reviews_answered"], figs["reviews_changed"]) == (1, 1, 1, 1)


def test_a_case_not_accepted_is_ban_jie_and_counted_on_its_own() -> None:
    t = NOW - timedelta(days=3)
    case = receipt("QS-2026-000202", t)
    other = receipt("QS-2026-000203", t)
    not_ours = counted(case, assignment(case, "forestry", t + timedelta(hours=1)),
                       sign(case.case_id, "forestry", t + timedelta(hours=2)),
                       accept(case.case_id, "forestry", t + timedelta(hours=3), "not_accepted",
                              reason="已经依法通过诉讼途径解决", legal_path="litigation"))
    waiting = counted(*handled_by(other, "forestry", t))
    assert domain.is_closed(not_ours) and domain.closed_on_time(not_ours) and not domain.is_closed(waiting)
    figs = domain.figures([not_ours, waiting])
    assert (figs["not_accepted"], figs["accepted"], figs["closed"], figs["closure_rate"]) == (1, 1, 1, 0.5)


def test_an_objection_re_routes_the_case_only_once_the_bureau_approves_it() -> None:
    t = NOW - timedelta(days=3)
    case = receipt("QS-2026-000204", t)
    routed = [case, assignment(case, "forestry", t + timedelta(hours=1)),
              objection(case.case_id, "forestry", t + timedelta(hours=2))]
    facts = counted(*routed)
    assert (facts.lead_unit, facts.objections, facts.returns) == ("forestry", ["forestry"], [])  # until decided

    rejected = [*routed, decided(case.case_id, "forestry", t + timedelta(hours=3), approved=False)]
    facts = counted(*rejected)
    assert (facts.lead_unit, facts.objections_rejected, facts.returns) == ("forestry", 1, [])

    again = [*rejected, ev.AcceptanceDecided(case_id=case.case_id, occurred_at=t + timedelta(hours=5),
                                             actor=unit("forestry"), unit="forestry", decision="forwarded",
                                             reason="属于自然资源部门职责"),
             decided(case.case_id, "forestry", t + timedelta(hours=6), approved=True)]
    facts = counted(*again)
    assert (facts.lead_unit, facts.objections, facts.returns) == (None, ["forestry", "forestry"], ["forestry"])
    figs = domain.figures([facts])
    assert (figs["assigned"], figs["objections"], figs["objections_rejected"], figs["returns"]) == (0, 2, 1, 1)

    facts = counted(*again, assignment(case, "hrss", t + timedelta(hours=7)))
    assert facts.lead_unit == "hrss" and domain.figures([facts])["assigned"] == 1


def test_a_reviews_overdue_is_the_reviewing_bodys_and_not_the_lead_units() -> None:
    t = NOW - timedelta(days=60)
    case = receipt("QS-2026-000205", t)
    asked = ev.ReviewRequested(case_id=case.case_id, occurred_at=t + timedelta(days=6), actor=CLERK, level="review",
                               reason="不服")
    due = t + timedelta(days=36)
    late = [ev.CaseOverdue(case_id=case.case_id, occurred_at=due, actor=SUPERVISION, unit="county_gov",
                           due_kind="review", due_at=due),
            ev.CaseEscalated(case_id=case.case_id, occurred_at=due + timedelta(days=5), actor=SUPERVISION,
                             unit="county_gov", due_kind="review", due_at=due)]
    facts = counted(*handled_by(case, "forestry", t), opinion(case.case_id, "forestry", t + timedelta(days=5)), asked,
                    reviewer(case, "county_gov", "review", t + timedelta(days=6, hours=1)), *late,
                    opinion(case.case_id, "county_gov", due + timedelta(days=6), "upheld"))
    figs = domain.figures([facts])
    assert (figs["ever_overdue"], figs["open_overdue"], figs["escalated_overdue"]) == (0, 0, 0)
    assert figs["review_overdue"] == 1
    assert (figs["closed"], figs["closed_on_time"]) == (1, 1)
    # the lead unit answers for none of it; the reviewing body for its own escalated lateness
    assert [(b["breach"], b["unit"]) for b in domain.accountability([facts], {}, DIRECTORY)] == [
        ("overdue_past_escalation", "county_gov")]
    assert domain.charged([facts], "forestry")["ever_overdue"] == 0
    assert domain.charged([facts], "county_gov")["review_overdue"] == 1


# --- against a real nats-server ----------------------------------------------------------------

def test_a_sign_for_by_a_unit_that_does_not_hold_the_case_counts_for_no_one_as_supervision_refuses_it(
        settings: Settings, supervision: TestClient, scoring: TestClient, scoring_db: Engine) -> None:
    case = receipt("QS-2026-000101", NOW - timedelta(hours=3))
    stranger = sign(case.case_id, "health", NOW - timedelta(hours=1))  # on its own subject, cases.signed.health
    publish(settings, case, assignment(case, "forestry", NOW - timedelta(hours=2)), stranger)
    applied(scoring_db, stranger)
    wait_until(lambda: supervision_status(supervision, case.case_id, stranger.event_id) is not None,
               what="supervision's verdict")

    assert supervision_status(supervision, case.case_id, stranger.event_id) == (
        "refused", "health does not hold the case")
    assert (figures(scoring)["signed"], figures(scoring, unit="forestry")["signed"]) == (0, 0)
    assert figures(scoring, unit="forestry")["received"] == 1
    assert facts_row(scoring_db, case.case_id)["signed_at"] is None

    own = sign(case.case_id, "forestry", NOW - timedelta(minutes=50))
    publish(settings, own)
    applied(scoring_db, own)
    assert (figures(scoring)["signed"], figures(scoring, unit="forestry")["signed"]) == (1, 1)
    wait_until(lambda: supervision_status(supervision, case.case_id, own.event_id) == ("applied", None),
               what="supervision to apply the lead's sign-for")


def test_a_sign_for_dated_before_the_cases_receipt_is_not_counted(
        settings: Settings, supervision: TestClient, scoring: TestClient, scoring_db: Engine) -> None:
    case = receipt("QS-2026-000102", NOW - timedelta(hours=3))
    early = sign(case.case_id, "forestry", NOW - timedelta(hours=4))
    publish(settings, case, assignment(case, "forestry", NOW - timedelta(hours=2)), early)
    applied(scoring_db, early)
    wait_until(lambda: supervision_status(supervision, case.case_id, early.event_id) is not None,
               what="supervision's verdict")

    assert supervision_status(supervision, case.case_id, early.event_id) == (
        "refused", "the case has not been received")
    assert figures(scoring, unit="forestry")["received"] == 1
    assert (figures(scoring)["signed"], figures(scoring, unit="forestry")["signed"]) == (0, 0)


def test_a_second_receipt_of_a_case_number_changes_nothing_in_scoring(
        settings: Settings, scoring: TestClient, scoring_db: Engine) -> None:
    first = receipt("QS-2026-000103", NOW - timedelta(hours=3))
    publish(settings, first, assignment(first, "forestry", NOW - timedelta(hours=2)))
    applied(scoring_db, first)
    before = facts_row(scoring_db, first.case_id)

    second = first.model_copy(update={"event_id": "e-second-receipt", "channel": "letter", "township": "matou",
                                      "occurred_at": first.occurred_at - timedelta(days=400)})
    publish(settings, second)
    wait_until(lambda: dead_letter_kinds(settings, "scoring", second.event_id) == ["conflict"], timeout=30,
               what="scoring to refuse the second receipt")

    after = facts_row(scoring_db, first.case_id)
    assert after == before
    assert (after["channel"], after["township"], after["received_at"]) == ("walk_in", "chengguan", first.occurred_at)
    assert figures(scoring)["received"] == 1
    earlier = str(second.occurred_at.astimezone(CHINA_TZ).year)
    assert figures(scoring, earlier)["received"] == 0
    report = scoring.get(f"/api/v1/reports/{YEAR}").json()
    assert report["channels"]["walk_in"]["received"] == 1 and report["channels"]["letter"]["received"] == 0
    with scoring_db.connect() as conn:
        kept = conn.execute(select(tables.case_events.c.event_id).where(
            tables.case_events.c.case_id == first.case_id, tables.case_events.c.type == "CaseReceived")).scalars()
        assert list(kept) == [first.event_id]


def test_a_late_but_legal_event_counts_once_what_it_follows_arrives(
        settings: Settings, scoring: TestClient, scoring_db: Engine) -> None:
    case = receipt("QS-2026-000104", NOW - timedelta(hours=3))
    signed = sign(case.case_id, "forestry", NOW - timedelta(hours=1))
    publish(settings, signed)  # first of all: its case not received yet
    applied(scoring_db, signed)
    assert facts_row(scoring_db, case.case_id) is None  # pending: nothing counts until the receipt
    assert figures(scoring)["received"] == 0

    publish(settings, case)
    applied(scoring_db, case)
    assert (figures(scoring)["received"], figures(scoring)["assigned"], figures(scoring)["signed"]) == (1, 0, 0)

    assigned = assignment(case, "forestry", NOW - timedelta(hours=2))  # happened before the sign-for, arrives after
    publish(settings, assigned)
    applied(scoring_db, assigned)
    assert (figures(scoring)["assigned"], figures(scoring)["signed"], figures(scoring, unit="forestry")["signed"]) == (
        1, 1, 1)
    assert facts_row(scoring_db, case.case_id)["signed_at"] == signed.occurred_at


# --- the rebuild ----------------------------------------------------------------------------------

def refused_by_the_lifecycle(history: History) -> list[ev.Event]:
    """Events the fold refuses, about the script's own cases; the script's count leaves them out."""
    mine = [p for p in history.cases if p.received.year == 2026]
    signed = next(p for p in mine if p.signed and p.replied)
    unsigned = [p for p in mine if not p.signed]
    closed = next(p for p in mine if p.final_closed and not p.reviews)
    replied_once = next(p for p in mine if p.replied and not p.reviews and not p.final_closed)
    reviewed = next(p for p in mine if p.review_pending)
    held = {signed.lead, signed.co, *(o.unit for o in signed.objections)}
    stranger = next(u for u in sorted(DIRECTORY.units) if u not in held)

    def late(case_id: str) -> datetime:  # after everything the script did to the case
        return max(e.occurred_at for e in history.events if getattr(e, "case_id", None) == case_id) + timedelta(days=1)
    return [
        sign(signed.case_id, stranger, late(signed.case_id)),  # a unit that does not hold the case
        sign(unsigned[0].case_id, unsigned[0].lead, unsigned[0].received - timedelta(hours=1)),  # before the receipt
        ev.PetitionerFeedback(case_id=unsigned[1].case_id, occurred_at=late(unsigned[1].case_id), actor=CLERK,
                              satisfied=True),  # no reply to be satisfied with
        ev.CaseClosed(case_id=closed.case_id, occurred_at=late(closed.case_id), actor=SUPERVISION,
                      reason="satisfied"),  # closed twice
        ev.ReviewRequested(case_id=replied_once.case_id, occurred_at=late(replied_once.case_id), actor=CLERK,
                           level="re_review", reason="复核 before any 复查"),
        opinion(reviewed.case_id, reviewed.lead, late(reviewed.case_id)),  # the lead answering its own review
        ev.ObjectionDecided(case_id=signed.case_id, occurred_at=late(signed.case_id), actor=SUPERVISION,
                            unit=signed.lead, approved=True),  # no objection waiting: the lead stays
    ]


def test_a_rebuild_from_a_stream_with_refused_forged_and_invalid_events_gives_the_live_figures(
        settings: Settings, auth: dict) -> None:
    from services.scoring.app import create_app
    from services.scoring.cli import rebuild

    history = script(DIRECTORY)
    refused = refused_by_the_lifecycle(history)
    mine = [p for p in history.cases if p.received.year == 2026 and not p.signed]
    original = next(e for e in history.events if isinstance(e, ev.CaseReceived) and e.case_id == mine[2].case_id)
    second_receipt = original.model_copy(update={"event_id": "e-second-receipt", "channel": "letter",
                                                 "township": "matou", "collective": True})
    forged = sign(mine[3].case_id, mine[3].lead, datetime(2026, 12, 31, tzinfo=timezone.utc))
    unknown = sign(mine[4].case_id, "atlantis", datetime(2026, 12, 31, tzinfo=timezone.utc))
    publish_shuffled(settings, history.events + refused)
    publish(settings, second_receipt, unknown)  # after the first receipt: the first stands
    publish_raw(settings, ("cases.signed.health", ev.encode(forged), forged.event_id),
                ("cases.received", b'{"type": "CaseReceived", "broken', "e-undecodable"))
    periods = ("2026", "2026-Q1", "2026-Q4", "2025")

    with TestClient(create_app(settings), headers=auth) as live:
        projected(settings, history.events + refused)
        for bad, kind in ((second_receipt, "conflict"), (unknown, "rejected"), (forged, "forged")):
            wait_until(lambda b=bad, k=kind: dead_letter_kinds(settings, "scoring", b.event_id) == [k], timeout=30,
                       what=f"scoring to dead-letter the {kind} event")
        before = {p: live.get(f"/api/v1/reports/{p}").json() for p in periods}
    assert before["2026"]["figures"] == expected(history.cases)  # nothing refused is counted

    assert rebuild(settings) == 0
    with TestClient(create_app(settings), headers=auth) as rebuilt:
        after = {p: rebuilt.get(f"/api/v1/reports/{p}").json() for p in periods}
    assert after == before


# --- responsibility: each breach charged to the unit responsible at the time --------------------

def overdue(case_id: str, code: str, kind: str, at: datetime) -> ev.CaseOverdue:
    return ev.CaseOverdue(case_id=case_id, occurred_at=at, actor=SUPERVISION, unit=code, due_kind=kind, due_at=at)


def escalation(case_id: str, code: str, kind: str, at: datetime) -> ev.CaseEscalated:
    return ev.CaseEscalated(case_id=case_id, occurred_at=at, actor=SUPERVISION, unit=code, due_kind=kind, due_at=at)


def test_each_breach_is_charged_to_the_unit_responsible_when_it_happened_and_the_consequence_is_named() -> None:
    from shared.scoring_weights import load_weights

    weights = load_weights(CONFIG)
    t = NOW - timedelta(days=40)
    # natres lets its sign-for lapse, then hands the case back with approval: it moved on, natres still pays
    lapsed = receipt("QS-2026-000301", t, category="land_resources")
    lapsed_events = [lapsed, assignment(lapsed, "natres", t + timedelta(hours=1)),
                     overdue(lapsed.case_id, "natres", "sign", t + timedelta(days=2)),
                     objection(lapsed.case_id, "natres", t + timedelta(days=2, hours=1)),
                     decided(lapsed.case_id, "natres", t + timedelta(days=2, hours=2), approved=True),
                     *handled_by(lapsed, "forestry", t + timedelta(days=2, hours=2))[1:],
                     opinion(lapsed.case_id, "forestry", t + timedelta(days=10))]
    # hrss hands a case back and the bureau rejects it (错退); hrss then misses its opinion, escalated
    handed = receipt("QS-2026-000302", t, category="wage_arrears")
    handed_events = [handed, assignment(handed, "hrss", t + timedelta(hours=1)),
                     sign(handed.case_id, "hrss", t + timedelta(hours=2)),
                     objection(handed.case_id, "hrss", t + timedelta(hours=3)),
                     decided(handed.case_id, "hrss", t + timedelta(hours=4), approved=False),
                     accept(handed.case_id, "hrss", t + timedelta(hours=5)),
                     overdue(handed.case_id, "hrss", "reply", t + timedelta(days=30)),
                     escalation(handed.case_id, "hrss", "reply", t + timedelta(days=35))]
    # forestry concludes two long-standing cases (积案化解): points added
    backlog = [receipt(f"QS-2026-00031{i}", t, backlog=True) for i in (1, 2)]
    backlog_events = [[*handled_by(c, "forestry", t), opinion(c.case_id, "forestry", t + timedelta(days=5))]
                      for c in backlog]
    facts = [counted(*lapsed_events), counted(*handed_events), *(counted(*e) for e in backlog_events)]
    assert facts[0].lead_unit == "forestry" and facts[0].charges == [["sign_overdue", "natres"]]

    natres = domain.unit_figures("natres", [f for f in facts if f.lead_unit == "natres"], facts)
    forestry = domain.unit_figures("forestry", [f for f in facts if f.lead_unit == "forestry"], facts)
    hrss = domain.unit_figures("hrss", [f for f in facts if f.lead_unit == "hrss"], facts)
    assert (natres["received"], natres["ever_overdue"]) == (0, 1)  # leads nothing, pays for its lapse
    assert (forestry["ever_overdue"], forestry["backlog_resolved"]) == (0, 2)
    assert (hrss["ever_overdue"], hrss["escalated_overdue"], hrss["objections_rejected"]) == (1, 1, 1)

    card = domain.scorecard("forestry", forestry, weights)
    assert card["additions"] == [{"metric": "backlog_resolved", "value": "2", "points": 2.0}]
    assert card["score"] == weights.base + 2 and card["band"] == "优秀" and card["consequence"] == "通报表扬"
    few = domain.scorecard("natres", natres, weights)  # fewer cases than min_cases: judged on nothing
    assert (few["band"], few["consequence"]) == (None, "") and few["deductions"]
    assert [c["unit"] for c in domain.rank([few, card]) if c["rank"] is not None] == ["forestry"]

    # forestry's next opinion records a mediation agreement (调解协议): points added too
    mediated = receipt("QS-2026-000313", t)
    facts.append(counted(*handled_by(mediated, "forestry", t), ev.CaseReplied(
        case_id=mediated.case_id, occurred_at=t + timedelta(days=5), actor=unit("forestry"), unit="forestry",
        result="mediated", text="经调解，双方达成调解协议")))
    forestry = domain.unit_figures("forestry", [f for f in facts if f.lead_unit == "forestry"], facts)
    card = domain.scorecard("forestry", forestry, weights)
    assert [a["metric"] for a in card["additions"]] == ["backlog_resolved", "mediated"]
    # 一票否决: a mass incident in chengguan's area puts it last and lowest, whatever its score
    vetoed = domain.scorecard("chengguan", {**forestry, "received": 1}, weights, [("mass_incident", "2026年第2次")])
    assert (vetoed["band"], vetoed["outcome"], vetoed["consequence"]) == (weights.bands[-1].band, "penalty", "一票否决")
    assert vetoed["score"] == card["score"] and vetoed["vetoed_by"] == ["2026年第2次"]
    assert [c["unit"] for c in domain.rank([vetoed, card, few])] == ["forestry", "chengguan", "natres"]

    named = {(b["breach"], b["unit"]): b for b in domain.accountability(
        facts, {}, DIRECTORY, weights.consequences, {"chengguan": ["QS-2026-000399"]})}
    assert set(named) == {("sign_overdue", "natres"), ("objection_rejected", "hrss"),
                          ("overdue_past_escalation", "hrss"), ("mass_incident", "chengguan")}
    assert named[("mass_incident", "chengguan")]["consequence"] == "一票否决，约谈第一责任人"
    assert named[("overdue_past_escalation", "hrss")]["consequence"] == weights.consequences["overdue_past_escalation"]
    assert named[("sign_overdue", "natres")]["principal_leader"]["name"] == DIRECTORY.units["natres"].principal_leader.name
