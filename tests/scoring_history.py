"""A scripted county history for scoring's tests: a few hundred cases across channels, units,
objections, acceptance decisions, overdue, extensions, reviews by the superior bodies, repeats and
collective petitions — as events, and as the plain facts the script knows it produced, from which
the tests compute every figure independently. Every event is legal where it falls in its case's
lifecycle (shared/lifecycle.py): scoring counts no other."""
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
OUTCOMES = ["upheld", "upheld", "changed", "revoked", None]  # None: a reviewing body's older client names none


@dataclass
class Objection:
    """异议 by a unit the case was assigned to, and the bureau's decision."""

    unit: str
    role: str  # lead, co
    approved: bool
    forwarded: bool = False  # by its acceptance decision (不属于本单位职责) after signing for it, not a CaseReturned


@dataclass
class Review:
    """复查 or 复核, answered (or not yet) by the body one level up."""

    level: str
    reviewer: str
    assigned_first: bool = False  # the reviewer named before the resident's request arrives
    overdue: bool = False
    escalated: bool = False
    answered: bool = False
    outcome: str | None = None
    satisfied: bool | None = None  # the resident's feedback on its opinion


@dataclass
class Planned:
    case_id: str
    received: datetime
    channel: str
    township: str
    category: str
    lead: str  # the lead unit at the end
    objections: list[Objection] = field(default_factory=list)
    co: str | None = None
    collective: bool = False
    escalated: bool = False
    backlog: bool = False
    repeat_of: str | None = None
    drive_id: str | None = None
    agent_id: str | None = None
    agency_id: str | None = None
    visit_id: str | None = None
    leader: str | None = None
    signed: bool = False  # by the lead at the end
    signed_by_objector: bool = False  # a lead that signed, then objected by its acceptance decision
    sign_overdue: bool = False
    acceptance: str | None = None  # accepted, not_accepted, or none recorded (an older department client)
    accept_overdue: bool = False
    replied: bool = False  # the lead unit's handling opinion
    reply_overdue: bool = False
    escalated_overdue: bool = False
    extension: bool = False  # asked for and approved
    extension_refused: bool = False
    feedback: bool | None = None  # on the lead unit's opinion
    reviews: list[Review] = field(default_factory=list)
    reopened_after_close: bool = False  # closed (no feedback), then a review asked for: still open
    final_closed: bool = False  # a CaseClosed stands at the end (not reopened)

    @property
    def returned_by(self) -> list[str]:
        """退回: the units whose objection the bureau approved."""
        return [o.unit for o in self.objections if o.approved]

    @property
    def review_pending(self) -> bool:
        return any(not r.answered for r in self.reviews)

    @property
    def closed(self) -> bool:
        """办结: the lead's opinion issued (and no review waiting for its answer), or not accepted."""
        return self.acceptance == "not_accepted" or (self.replied and not self.review_pending)

    @property
    def mediated(self) -> bool:
        """The lead unit's opinion records a mediation agreement (调解协议): one case in seven."""
        return self.replied and int(self.case_id[-3:]) % 7 == 0

    @property
    def final_satisfied(self) -> bool | None:
        """The last feedback."""
        answers = [self.feedback] + [r.satisfied for r in self.reviews if r.satisfied is not None]
        return answers[-1]

    def count(self, level: str, what: str = "asked") -> int:
        return sum(r.level == level and (what == "asked" or getattr(r, what)) for r in self.reviews)


@dataclass
class History:
    cases: list[Planned]
    events: list[ev.Event]
    visits: dict[str, tuple[date, int]]  # visit → (day, households)
    drives: dict[str, str]
    mass_incident_in: str  # the township of the year's mass incident (一票否决)


def script(directory: Directory, n: int = 300, seed: int = 7) -> History:
    rnd = random.Random(seed)
    units = sorted(u for u, x in directory.units.items() if x.kind != "government")  # governments get no cases
    townships = sorted(directory.townships)
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
        _intake(p, rnd, cases, drives, visits, agents, leaders, directory)
        _routing(p, rnd, units)
        _handling(p, rnd)
        _opinion(p, rnd, directory)
        cases.append(p)
        events += _events(p)
    overdue = [p.case_id for p in cases if p.reply_overdue][:5]
    events.append(ev.SupervisionNoticeIssued(actor=SYS, notice_no="〔2026〕1号", notice_type="overdue", year=2026, seq=1,
                                             units=["forestry"], case_ids=overdue, demands="d",
                                             reply_by=date(2026, 12, 31)))
    events.append(ev.JointMeetingHeld(actor=SYS, meeting_id="JM-2026-1", meeting_no="2026年第1次",
                                      held_on=date(2026, 6, 1), kind="prominent_problem", topic="征地补偿",
                                      units=["forestry"], case_ids=overdue[:1],
                                      decisions=[ev.MeetingDecision(n=1, text="d", unit="forestry",
                                                                    due_on=date(2026, 6, 30))]))
    # 群体性事件: a mass incident in the township of a 2026 case, which a joint meeting records (一票否决)
    incident = next(p for p in cases if p.received.year == 2026 and p.township != cases[0].township)
    events.append(ev.JointMeetingHeld(actor=SYS, meeting_id="JM-2026-2", meeting_no="2026年第2次",
                                      held_on=date(2026, 7, 1), kind="mass_incident", topic="群体性事件处置",
                                      units=[incident.lead], case_ids=[incident.case_id],
                                      decisions=[ev.MeetingDecision(n=1, text="d", unit=incident.lead,
                                                                    due_on=date(2026, 7, 31))]))
    events.append(ev.DriveClosed(drive_id="D2026-001", actor=SYS))
    return History(cases, events, visits, drives, incident.township)


def _intake(p: Planned, rnd: random.Random, cases: list[Planned], drives: dict, visits: dict, agents: list[str],
            leaders: list[str], directory: Directory) -> None:
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


def _routing(p: Planned, rnd: random.Random, units: list[str]) -> None:
    """异议: a first lead objects and the bureau approves (re-routed), or rejects (it stays); a
    co-handling unit objects too."""
    r = rnd.random()
    if r < 0.1:
        forwarded = rnd.random() < 0.4
        p.objections.append(Objection(p.lead, "lead", approved=True, forwarded=forwarded))
        p.signed_by_objector = forwarded
        p.lead = rnd.choice([u for u in units if u != p.lead])
    elif r < 0.14:
        p.objections.append(Objection(p.lead, "lead", approved=False))
    if rnd.random() < 0.06:
        p.co = rnd.choice([u for u in units if u != p.lead and u not in p.returned_by])
        if rnd.random() < 0.6:
            p.objections.append(Objection(p.co, "co", approved=rnd.random() < 0.5))


def _handling(p: Planned, rnd: random.Random) -> None:
    """签收, 受理决定 and what is overdue of the lead unit's."""
    p.signed = rnd.random() < 0.9
    p.sign_overdue = rnd.random() < 0.15
    p.accept_overdue = rnd.random() < 0.08
    if p.signed:
        r = rnd.random()
        p.acceptance = "accepted" if r < 0.75 else "not_accepted" if r < 0.85 else None
    handled = p.signed and p.acceptance != "not_accepted"
    p.replied = handled and rnd.random() < 0.85
    p.reply_overdue = handled and rnd.random() < 0.15
    p.escalated_overdue = p.reply_overdue and rnd.random() < 0.4
    asked = handled and rnd.random() < 0.09
    p.extension, p.extension_refused = asked and rnd.random() < 0.8, False
    p.extension_refused = asked and not p.extension
    if p.acceptance == "not_accepted":
        p.final_closed = rnd.random() < 0.8  # supervision closes it at once; not yet folded for the others


def _opinion(p: Planned, rnd: random.Random, directory: Directory) -> None:
    """The resident's feedback on the opinion, a review (复查) by the body one level up and a
    re-review (复核) by the one above, and supervision's close."""
    if not p.replied:
        return
    p.feedback = rnd.choice([True, True, True, False, None])
    reviewer = directory.reviewer(p.lead, "review")
    if p.feedback is False and reviewer and rnd.random() < 0.5:
        for level in ("review", "re_review"):
            r = Review(level, directory.reviewer(p.lead, level), assigned_first=rnd.random() < 0.3,
                       overdue=rnd.random() < 0.2)
            r.escalated = r.overdue and rnd.random() < 0.5
            r.answered = rnd.random() < 0.85
            if r.answered:
                r.outcome = rnd.choice(OUTCOMES)
                r.satisfied = rnd.random() < 0.5 if level == "review" else None
            p.reviews.append(r)
            if not r.answered or r.satisfied is not False or rnd.random() < 0.4:
                break
        last = p.reviews[-1]
        # 复核意见 is final; after the 复查意见 the resident is satisfied, or asks for nothing more in time
        p.final_closed = last.answered and (last.level == "re_review" or rnd.random() < 0.8)
    elif p.feedback is not False or rnd.random() < 0.6:
        p.final_closed = rnd.random() < (0.9 if p.feedback else 0.6)
        if p.final_closed and p.feedback is None and reviewer and rnd.random() < 0.1:
            p.reopened_after_close, p.final_closed = True, False  # a review asked for after the close
            p.reviews.append(Review("review", reviewer))


def _events(p: Planned) -> list[ev.Event]:
    t = p.received.astimezone(timezone.utc)
    step = [t]

    def at(hours: float) -> datetime:
        step[0] += timedelta(hours=hours)
        return step[0]

    case_id = p.case_id
    out: list[ev.Event] = [ev.CaseReceived(
        case_id=case_id, occurred_at=t, actor=SYS, channel=p.channel, title="t", content="c", category=p.category,
        township=p.township, people_count=6 if p.collective else 1, collective=p.collective, escalated=p.escalated,
        backlog=p.backlog, repeat=p.repeat_of is not None, repeat_of=p.repeat_of, drive_id=p.drive_id,
        visit_id=p.visit_id, special_period=p.drive_id == "D2026-002", resident=ev.ResidentRef(name="某"),
        delegation=ev.Delegation(agent_id=p.agent_id, agency_id=p.agency_id, service_type="business_license")
        if p.agent_id else None)]
    brief = ev.CaseBrief(title="t", content="c", channel=p.channel, received_at=t, township=p.township,
                         resident_name="某")

    def assign(unit: str, role: str = "lead", level: str | None = None) -> ev.CaseAssigned:
        return ev.CaseAssigned(case_id=case_id, occurred_at=at(1), actor=SYS, unit=unit, role=role, case=brief,
                               category=p.category if role == "lead" else None, review_level=level)

    def objection(o: Objection) -> list[ev.Event]:
        if o.forwarded:  # signed for, then "not ours" as its acceptance decision
            said = [ev.UnitSigned(case_id=case_id, occurred_at=at(1), actor=SYS, unit=o.unit),
                    ev.AcceptanceDecided(case_id=case_id, occurred_at=at(2), actor=SYS, unit=o.unit,
                                         decision="forwarded", reason="不属于本单位职责")]
        else:
            said = [ev.CaseReturned(case_id=case_id, occurred_at=at(5), actor=SYS, unit=o.unit, reason="非本单位职责")]
        return [*said, ev.ObjectionDecided(case_id=case_id, occurred_at=at(2), actor=SYS, unit=o.unit,
                                           approved=o.approved, reason="" if o.approved else "属于该单位职责",
                                           objection_event_id=said[-1].event_id)]

    for o in (o for o in p.objections if o.role == "lead" and o.approved):  # re-routed: triage, then the lead
        out += [assign(o.unit), *objection(o), ev.CaseNeedsTriage(case_id=case_id, occurred_at=at(1), actor=SYS,
                                                                  reason="no_rule")]
    out.append(assign(p.lead))
    for o in (o for o in p.objections if o.role == "lead" and not o.approved):  # rejected: the case stays
        out += objection(o)
    if p.co:
        out.append(assign(p.co, "co"))
        out += [e for o in p.objections if o.role == "co" for e in objection(o)]
    if p.leader:
        out.append(ev.LeaderAssigned(case_id=case_id, occurred_at=at(0.1), actor=SYS, leader_id=p.leader,
                                     reasons=["collective"]))
    out += _handled(p, at, step)
    out += _answered(p, at, assign)
    if p.final_closed and p.escalated:
        out.append(ev.CaseArchived(case_id=case_id, occurred_at=at(24 * 90), actor=SYS))  # 归档
    return out


def _handled(p: Planned, at, step: list[datetime]) -> list[ev.Event]:  # noqa: ANN001 - the script's clock
    """签收 to the lead unit's handling opinion."""
    case_id, lead, out = p.case_id, p.lead, []
    if p.sign_overdue:
        out.append(ev.CaseReminded(case_id=case_id, occurred_at=at(48), actor=SYS, unit=lead, due_kind="sign",
                                   due_at=step[0] + timedelta(days=1)))
        out.append(ev.CaseOverdue(case_id=case_id, occurred_at=at(72), actor=SYS, unit=lead, due_kind="sign",
                                  due_at=step[0]))
    if p.signed:
        out.append(ev.UnitSigned(case_id=case_id, occurred_at=at(2), actor=SYS, unit=lead))
    if p.accept_overdue:
        out.append(ev.CaseOverdue(case_id=case_id, occurred_at=at(24 * 16), actor=SYS, unit=lead, due_kind="accept",
                                  due_at=step[0] - timedelta(days=1)))
    if p.acceptance:
        reason = "属于本单位职责" if p.acceptance == "accepted" else "已经或者依法应当通过诉讼途径解决"
        out.append(ev.AcceptanceDecided(case_id=case_id, occurred_at=at(3), actor=SYS, unit=lead, decision=p.acceptance,
                                        reason=reason,
                                        legal_path="litigation" if p.acceptance == "not_accepted" else None))
    if p.acceptance == "not_accepted":
        if p.final_closed:
            out.append(ev.CaseClosed(case_id=case_id, occurred_at=at(0.1), actor=SYS, reason="not_accepted"))
        return out
    if p.signed:
        out.append(ev.ProgressReported(case_id=case_id, occurred_at=at(24), actor=SYS, unit=lead, note="办理中"))
    if p.extension or p.extension_refused:
        out.append(ev.ExtensionRequested(case_id=case_id, occurred_at=at(24), actor=SYS, unit=lead, days=30,
                                         reason="r"))
        out.append(ev.ExtensionDecided(case_id=case_id, occurred_at=at(48), actor=ev.Actor(kind="unit", id=lead),
                                       unit=lead, approved=p.extension, days=30 if p.extension else 0,
                                       approved_by="局长"))
    if p.reply_overdue:
        out.append(ev.CaseOverdue(case_id=case_id, occurred_at=at(24 * 60), actor=SYS, unit=lead, due_kind="reply",
                                  due_at=step[0]))
        if p.escalated_overdue:
            out.append(ev.CaseEscalated(case_id=case_id, occurred_at=at(24 * 5), actor=SYS, unit=lead,
                                        due_kind="reply", due_at=step[0]))
    if p.replied:
        out.append(ev.CaseReplied(case_id=case_id, occurred_at=at(24), actor=SYS, unit=lead,
                                  result="mediated" if p.mediated else "resolved", text="处理意见书"))
        if p.feedback is not None:
            out.append(ev.PetitionerFeedback(case_id=case_id, occurred_at=at(24), actor=SYS, satisfied=p.feedback))
    return out


def _answered(p: Planned, at, assign) -> list[ev.Event]:  # noqa: ANN001 - the script's clock and assignments
    """After the opinion: reviews answered by the superior bodies, and supervision's close."""
    case_id, out = p.case_id, []
    if not p.replied:
        return out
    if p.reopened_after_close:
        out.append(ev.CaseClosed(case_id=case_id, occurred_at=at(24 * 15), actor=SYS, reason="no_feedback"))
    elif not p.reviews and p.final_closed:
        reason = {True: "satisfied", False: "no_review", None: "no_feedback"}[p.feedback]
        out.append(ev.CaseClosed(case_id=case_id, occurred_at=at(24 * (15 if p.feedback is None else 1)), actor=SYS,
                                 reason=reason))
    for r in p.reviews:
        asked = ev.ReviewRequested(case_id=case_id, occurred_at=at(24), actor=SYS, level=r.level, reason="r")
        named = assign(r.reviewer, "reviewer", r.level)
        out += [named, asked] if r.assigned_first else [asked, named]
        if r.overdue:
            out.append(ev.CaseOverdue(case_id=case_id, occurred_at=at(24 * 31), actor=SYS, unit=r.reviewer,
                                      due_kind=r.level, due_at=at(0) - timedelta(days=1)))
            if r.escalated:
                out.append(ev.CaseEscalated(case_id=case_id, occurred_at=at(24 * 5), actor=SYS, unit=r.reviewer,
                                            due_kind=r.level, due_at=at(0) - timedelta(days=6)))
        if not r.answered:
            break
        out.append(ev.CaseReplied(case_id=case_id, occurred_at=at(24 * (2 if r.overdue else 20)), actor=SYS,
                                  unit=r.reviewer, result="explained", text="复查/复核意见", review_outcome=r.outcome))
        if r.satisfied is not None:
            out.append(ev.PetitionerFeedback(case_id=case_id, occurred_at=at(24), actor=SYS, satisfied=r.satisfied))
    if p.reviews and p.final_closed:
        last = p.reviews[-1]
        reason = "re_reviewed" if last.level == "re_review" else "satisfied" if last.satisfied else "no_review"
        out.append(ev.CaseClosed(case_id=case_id, occurred_at=at(24 * (1 if last.satisfied else 31)), actor=SYS,
                                 reason=reason))
    return out
