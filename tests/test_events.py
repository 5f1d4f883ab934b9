"""The event catalogue: every event round-trips, lands on its subject, and unknown ones are refused."""
from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest

from shared import events as ev
from shared import subjects

ACTOR = ev.Actor(kind="service", id="test")
NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)
RESIDENT = ev.ResidentRef(name="王建国", masked_id="331082********0015", id_hash="ab" * 32)

SAMPLES: list[ev.Event] = [
    ev.CaseReceived(case_id="QS-2026-000001", actor=ACTOR, channel="walk_in", title="t", content="c",
                    township="chengguan", resident=RESIDENT),
    ev.PetitionerFeedback(case_id="QS-2026-000001", actor=ACTOR, satisfied=True),
    ev.ReviewRequested(case_id="QS-2026-000001", actor=ACTOR, level="review", reason="r"),
    ev.DriveOpened(drive_id="D2026-001", actor=ACTOR, kind="special", name="国庆排查",
                   starts_on=date(2026, 9, 1), ends_on=date(2026, 9, 30)),
    ev.DriveClosed(drive_id="D2026-001", actor=ACTOR),
    ev.NightVisitLogged(visit_id="NV2026-00001", actor=ACTOR, cadre_unit="chengguan", township="chengguan",
                        visited_on=date(2026, 3, 1), households_visited=12, case_ids=[]),
    ev.CaseAssigned(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", role="lead", case=ev.CaseBrief(
        title="t", content="c", channel="walk_in", received_at=NOW, township="chengguan", resident_name="王建国")),
    ev.CaseNeedsTriage(case_id="QS-2026-000001", actor=ACTOR, reason="no_rule"),
    ev.LeaderAssigned(case_id="QS-2026-000001", actor=ACTOR, leader_id="leader01", reasons=["collective"]),
    ev.UnitSigned(case_id="QS-2026-000001", actor=ACTOR, unit="forestry"),
    ev.CaseReturned(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", reason="not ours"),
    ev.AcceptanceDecided(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", decision="not_accepted",
                         reason="劳动争议", legal_path="arbitration"),
    ev.ObjectionDecided(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", approved=True, reason="r"),
    ev.ProgressReported(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", note="n"),
    ev.ExtensionRequested(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", days=30, reason="r"),
    ev.CaseReplied(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", result="resolved", text="t"),
    ev.ExtensionDecided(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", approved=True, days=30),
    ev.CaseReminded(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", due_kind="reply", due_at=NOW),
    ev.CaseOverdue(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", due_kind="reply", due_at=NOW),
    ev.CaseEscalated(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", due_kind="reply", due_at=NOW),
    ev.CaseClosed(case_id="QS-2026-000001", actor=ACTOR, reason="satisfied"),
    ev.CaseArchived(case_id="QS-2026-000001", actor=ACTOR),
    ev.SupervisionNoticeIssued(actor=ACTOR, notice_no="〔2026〕1号", notice_type="overdue", year=2026, seq=1,
                               units=["forestry"], case_ids=["QS-2026-000001"], demands="d",
                               reply_by=date(2026, 3, 10)),
    ev.JointMeetingHeld(actor=ACTOR, meeting_id="JM-2026-1", meeting_no="2026年第1次", held_on=date(2026, 3, 2),
                        kind="mass_incident", topic="t", units=["forestry"], case_ids=["QS-2026-000001"],
                        decisions=[ev.MeetingDecision(n=1, text="d", unit="forestry", due_on=date(2026, 3, 10))]),
    ev.ScorecardsPublished(actor=ACTOR, period="2026", scores=[ev.UnitScore(unit="forestry", score=91.5, rank=1)]),
    ev.EventRefused(actor=ACTOR, unit="forestry", case_id="QS-2026-000001", refused_event_id="x", refused_type="UnitSigned",
                    refused_subject="cases.signed.forestry", kind="refused", reason="cannot sign: the case is closed",
                    by="supervision"),
    ev.UnitNotified(case_id="QS-2026-000001", actor=ACTOR, unit="forestry", role="lead",
                    event=ev.CaseClosed(case_id="QS-2026-000001", actor=ACTOR, reason="satisfied")),
]


def test_the_samples_cover_the_whole_catalogue() -> None:
    assert {type(e) for e in SAMPLES} == set(ev.EVENT_TYPES.values())


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_and_lands_on_a_stream_subject(event: ev.Event) -> None:
    assert ev.decode(ev.encode(event)) == event
    top = event.subject.split(".")[0]
    assert f"{top}.>" in subjects.STREAM_SUBJECTS
    assert "{" not in event.subject


def test_unit_events_are_published_under_the_units_own_code() -> None:
    signed = ev.UnitSigned(case_id="QS-2026-000001", actor=ACTOR, unit="forestry")
    assert signed.subject == "cases.signed.forestry"
    assert subjects.for_unit("forestry") == "cases.*.forestry"


def test_an_unknown_schema_version_is_refused_with_the_reason() -> None:
    raw = json.loads(ev.encode(SAMPLES[1]))
    raw["schema_version"] = 2
    with pytest.raises(ev.UndecodableEvent, match="unknown schema_version 2"):
        ev.decode(json.dumps(raw).encode())


@pytest.mark.parametrize("payload, reason", [
    (b"not json", "not JSON"),
    (b"[1]", "not a JSON object"),
    (b'{"type": "Nope"}', "unknown event type"),
    (b'{"type": "CaseClosed", "schema_version": 1, "case_id": "x", "actor": {"kind": "system"}, "reason": "?"}',
     "CaseClosed"),
])
def test_undecodable_messages_are_refused_with_the_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ev.UndecodableEvent, match=reason):
        ev.decode(payload)


def test_the_full_resident_id_cannot_ride_on_an_event() -> None:
    with pytest.raises(ValueError):
        ev.ResidentRef(name="x", id_number="331082198001010015")  # type: ignore[call-arg]
