"""A scripted county history for scoring's tests: a few hundred cases across channels, units,
overdue, extensions, reviews, repeats and collective petitions — as events, and as the plain
facts the script knows it produced, from which the tests compute every figure independently. Every
event is legal where it falls in its case's lifecycle (shared/lifecycle.py): scoring counts no other."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from shared import events as ev
from shared.directory import Directory

CHINA = timezone(timedelta(hours=8))
SYS = ev.Actor(kind="service", id="script")
CHANNELS = ["walk_in", "walk_in", "letter", "phone", "online", "online", "delegated", "delegated", "night_visit",
            "screening", "screening", "referral"]


@dataclass
class Planned:
    case_id: str
    received: datetime
    channel: str
    township: str
    category: str
    lead: str
    returned_by: list[str] = field(default_factory=list)
    collective: bool = False
    escalated: bool = False
    backlog: bool = False
    repeat_of: str | None = None
    drive_id: str | None = None
    agent_id: str | None = None
    agency_id: str | None = None
    visit_id: str | None = None
    leader: str | None = None
    signed: bool = False
    sign_overdue: bool = False
    replied: bool = False
    reply_overdue: bool = False
    escalated_overdue: bool = False
    extension: bool = False
    feedback: bool | None = None
    closed: bool = False  # finally closed (after any review)
    final_satisfied: bool | None = None  # the last feedback
    reviews: int = 0
    re_reviews: int = 0


@dataclass
class History:
    cases: list[Planned]
    events: list[ev.Event]
    visits: dict[str, tuple[date, int]]  # visit → (day, households)
    drives: dict[str, str]


def script(directory: Directory, n: int = 300, seed: int = 7) -> History:
    rnd = random.Random(seed)
    units, townships = sorted(directory.units), sorted(directory.townships)
    categories, leaders = sorted(directory.categories), sorted(directory.leaders)
    agents = sorted(directory.agents)
    drives = {"D2026-001": "2026年第一季度矛盾纠纷排查", "D2026-002": "国庆节前专项排查"}
    visits = {f"NV2026-{i:05d}": (date(2026, 3 + i, 10), 10 + 7 * i) for i in range(3)}
    events: list[ev.Event] = [ev.DriveOpened(drive_id=d, actor=SYS, kind="special" if d.endswith("2") else "quarterly",
                                             name=name, starts_on=date(2026, 1, 1), ends_on=date(2026, 12, 31))
                              for d, name in drives.items()]
    for visit_id, (day, households) in visits.items():
        events.append(ev.NightVisitLogged(visit_id=visit_id, actor=SYS, cadre_unit="chengguan", township="chengguan",
                                          visited_on=day, households_visited=households, case_ids=[]))
    cases: list[Planned] = []
    for i in range(1, n + 1):
        received = datetime(2026, 1, 1, 9, tzinfo=CHINA) + timedelta(days=rnd.randrange(0, 365), hours=rnd.randrange(8))
        if i % 40 == 0:
            received = datetime(2025, 12, 31, 20, tzinfo=CHINA)  # last year's: in no 2026 figure
        p = Planned(f"QS-{received.year}-{i:06d}", received, rnd.choice(CHANNELS), rnd.choice(townships),
                    rnd.choice(categories), rnd.choice(units))
        p.collective = rnd.random() < 0.1
        p.escalated, p.backlog = rnd.random() < 0.05, rnd.random() < 0.06
        if cases and rnd.random() < 0.08:
            p.repeat_of = rnd.choice(cases).case_id
        if p.channel == "screening":
            p.drive_id = rnd.choice(sorted(drives))
        if p.channel == "delegated":
            p.agent_id = rnd.choice(agents)
            p.agency_id = directory.agency_of(p.agent_id).code
        if p.channel == "night_visit":
            p.visit_id = rnd.choice(sorted(visits))
        important = p.collective or p.escalated or p.backlog or p.repeat_of is not None or p.drive_id == "D2026-002"
        p.leader = rnd.choice(leaders) if important else None
        if rnd.random() < 0.1:
            p.returned_by = [p.lead]
            p.lead = rnd.choice([u for u in units if u != p.lead])
        p.signed = rnd.random() < 0.9
        p.sign_overdue = rnd.random() < 0.15
        p.replied = p.signed and rnd.random() < 0.85
        p.reply_overdue = p.signed and rnd.random() < 0.15
        p.escalated_overdue = p.reply_overdue and rnd.random() < 0.4
        p.extension = p.signed and rnd.random() < 0.07
        if p.replied:
            p.feedback = rnd.choice([True, True, True, False, None])
            p.closed = p.feedback is True or (p.feedback is None and rnd.random() < 0.6)
            if p.feedback is False and rnd.random() < 0.5:
                p.reviews = 1  # reviewed, answered again, then satisfied and closed
                p.re_reviews = 1 if rnd.random() < 0.3 else 0
                p.closed = True
            elif p.closed and rnd.random() < 0.05:
                p.reviews = 1  # reopened after closing, still open at the end
                p.closed = False
        p.final_satisfied = True if (p.reviews and p.feedback is False) else p.feedback
        cases.append(p)
        events += _events(p)
    overdue = [p.case_id for p in cases if p.reply_overdue][:5]
    events.append(ev.SupervisionNoticeIssued(actor=SYS, notice_no="〔2026〕1号", notice_type="overdue", year=2026, seq=1,
                                             units=["forestry"], case_ids=overdue, demands="d",
                                             reply_by=date(2026, 12, 31)))
    events.append(ev.DriveClosed(drive_id="D2026-001", actor=SYS))
    return History(cases, events, visits, drives)


def _events(p: Planned) -> list[ev.Event]:
    t = p.received.astimezone(timezone.utc)
    step = [t]

    def at(hours: float) -> datetime:
        step[0] += timedelta(hours=hours)
        return step[0]

    out: list[ev.Event] = [ev.CaseReceived(
        case_id=p.case_id, occurred_at=t, actor=SYS, channel=p.channel, title="t", content="c", category=p.category,
        township=p.township, people_count=6 if p.collective else 1, collective=p.collective, escalated=p.escalated,
        backlog=p.backlog, repeat=p.repeat_of is not None, repeat_of=p.repeat_of, drive_id=p.drive_id,
        visit_id=p.visit_id, special_period=p.drive_id == "D2026-002", resident=ev.ResidentRef(name="某"),
        delegation=ev.Delegation(agent_id=p.agent_id, agency_id=p.agency_id, service_type="business_license")
        if p.agent_id else None)]
    brief = ev.CaseBrief(title="t", content="c", channel=p.channel, received_at=t, township=p.township,
                         resident_name="某")
    for unit in p.returned_by:
        out.append(ev.CaseAssigned(case_id=p.case_id, occurred_at=at(1), actor=SYS, unit=unit, role="lead", case=brief,
                                   category=p.category))
        out.append(ev.CaseReturned(case_id=p.case_id, occurred_at=at(5), actor=SYS, unit=unit, reason="非本单位职责"))
        out.append(ev.CaseNeedsTriage(case_id=p.case_id, occurred_at=at(1), actor=SYS, reason="no_rule"))
    out.append(ev.CaseAssigned(case_id=p.case_id, occurred_at=at(1), actor=SYS, unit=p.lead, role="lead", case=brief,
                               category=p.category))
    if p.leader:
        out.append(ev.LeaderAssigned(case_id=p.case_id, occurred_at=at(0.1), actor=SYS, leader_id=p.leader,
                                     reasons=["collective"]))
    if p.sign_overdue:
        out.append(ev.CaseReminded(case_id=p.case_id, occurred_at=at(48), actor=SYS, unit=p.lead, due_kind="sign",
                                   due_at=step[0] + timedelta(days=1)))
        out.append(ev.CaseOverdue(case_id=p.case_id, occurred_at=at(72), actor=SYS, unit=p.lead, due_kind="sign",
                                  due_at=step[0]))
    if p.signed:
        out.append(ev.UnitSigned(case_id=p.case_id, occurred_at=at(2), actor=SYS, unit=p.lead))
        out.append(ev.ProgressReported(case_id=p.case_id, occurred_at=at(24), actor=SYS, unit=p.lead, note="办理中"))
    if p.extension:
        out.append(ev.ExtensionRequested(case_id=p.case_id, occurred_at=at(24), actor=SYS, unit=p.lead, days=30,
                                         reason="r"))
        out.append(ev.ExtensionDecided(case_id=p.case_id, occurred_at=at(48), actor=SYS, unit=p.lead, approved=True,
                                       days=30))
    if p.reply_overdue:
        out.append(ev.CaseOverdue(case_id=p.case_id, occurred_at=at(24 * 60), actor=SYS, unit=p.lead, due_kind="reply",
                                  due_at=step[0]))
        if p.escalated_overdue:
            out.append(ev.CaseEscalated(case_id=p.case_id, occurred_at=at(24 * 5), actor=SYS, unit=p.lead,
                                        due_kind="reply", due_at=step[0]))
    if p.replied:
        out.append(ev.CaseReplied(case_id=p.case_id, occurred_at=at(24), actor=SYS, unit=p.lead, result="resolved",
                                  text="t"))
        if p.feedback is not None:
            out.append(ev.PetitionerFeedback(case_id=p.case_id, occurred_at=at(24), actor=SYS, satisfied=p.feedback))
        if p.reviews and p.feedback is False:
            out.append(ev.ReviewRequested(case_id=p.case_id, occurred_at=at(24), actor=SYS, level="review", reason="r"))
            if p.re_reviews:  # 复查 answered, the resident still not satisfied: 复核 of that answer
                out.append(ev.CaseReplied(case_id=p.case_id, occurred_at=at(24 * 20), actor=SYS, unit=p.lead,
                                          result="explained", text="t"))
                out.append(ev.PetitionerFeedback(case_id=p.case_id, occurred_at=at(24), actor=SYS, satisfied=False))
                out.append(ev.ReviewRequested(case_id=p.case_id, occurred_at=at(24), actor=SYS, level="re_review",
                                              reason="r"))
            out.append(ev.CaseReplied(case_id=p.case_id, occurred_at=at(24 * 20), actor=SYS, unit=p.lead,
                                      result="explained", text="t"))
            out.append(ev.PetitionerFeedback(case_id=p.case_id, occurred_at=at(24), actor=SYS, satisfied=True))
            out.append(ev.CaseClosed(case_id=p.case_id, occurred_at=at(1), actor=SYS, reason="satisfied"))
        elif p.reviews:
            out.append(ev.CaseClosed(case_id=p.case_id, occurred_at=at(24 * 15), actor=SYS, reason="no_feedback"))
            out.append(ev.ReviewRequested(case_id=p.case_id, occurred_at=at(24), actor=SYS, level="review", reason="r"))
        elif p.closed:
            out.append(ev.CaseClosed(case_id=p.case_id, occurred_at=at(24 * 15), actor=SYS,
                                     reason="satisfied" if p.feedback else "no_feedback"))
            if p.escalated:
                out.append(ev.CaseArchived(case_id=p.case_id, occurred_at=at(24 * 90), actor=SYS))
    return out
