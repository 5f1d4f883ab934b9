"""Scoring's rules in plain Python: a case's facts (:class:`CaseFacts`) and how each event moves
them (:data:`FACT_RULES`), the figures of a set of cases, a unit's scorecard from the weights, and
the accountability list (责任追究).

A case's facts count only the events its lifecycle applied (:func:`counted_facts`, with the same
fold as supervision's, ``shared/lifecycle.py``): a sign-for by a unit that does not hold the case, a
reply before the sign-for or a second close moves no figure, so no score counts what the lifecycle
refused.

办结 is the lead unit's written handling opinion (处理意见书, its ``CaseReplied``), or the decision not
to accept the case (不予受理); a review request (复查/复核) reopens it until the reviewing body's
opinion. Supervision's later ``CaseClosed`` (the matter final) is a fact, not the measure; the
resident's satisfaction is a measure of its own.

Every figure counts the cases *received* in the period (the received date, county time, decides
the period); a late or out-of-order event updates its case, so it moves the figures of the period
the case belongs to. Rates are rounded half-up to 0.1% for reports; scores to 0.01.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from shared import events as ev
from shared import lifecycle
from shared.directory import Directory
from shared.policy import DeadlinePolicy
from shared.scoring_weights import RATE_METRICS, Weights


@dataclass(slots=True)
class CaseFacts:
    """What scoring knows of one case (one row of ``case_facts``), from the events its lifecycle
    applied (:func:`counted_facts`). Null until an applied event sets it."""

    case_id: str
    # 受理登记: set by CaseReceived
    received_at: datetime | None = None
    channel: str | None = None
    township: str | None = None
    category: str | None = None  # the lead assignment's category (交办), else the one given at intake
    drive_id: str | None = None
    agent_id: str | None = None  # 代办员
    agency_id: str | None = None  # 代办点
    visit_id: str | None = None
    people_count: int | None = None
    collective: bool | None = None  # 集体访
    escalated: bool | None = None  # 越级访
    backlog: bool | None = None  # 积案
    repeat_of: str | None = None  # 重复访: the earlier case
    special_period: bool | None = None
    # what happened to it since
    lead_unit: str | None = None  # 主办单位 when the fold ends: none while an approved objection re-routes it
    lead_assigned_at: datetime | None = None
    leader_id: str | None = None  # 包案领导
    signed_at: datetime | None = None  # 签收 (the first)
    acceptance: str | None = None  # 受理决定: accepted (受理) or not_accepted (不予受理, 办结)
    decided_at: datetime | None = None
    replied_at: datetime | None = None  # 处理意见书: the lead unit's opinion (办结)
    closed_at: datetime | None = None  # CaseClosed (the matter final), the last
    last_review_at: datetime | None = None
    reviewed_at: datetime | None = None  # 复查意见 by the reviewing body
    review_outcome: str | None = None  # upheld, changed or revoked the opinion reviewed
    re_reviewed_at: datetime | None = None  # 复核意见 by the body above that
    re_review_outcome: str | None = None
    feedback_at: datetime | None = None
    satisfied: bool | None = None  # the last feedback's
    overdue_kinds: list[str] = field(default_factory=list)  # 超期: the due kinds missed, sorted (review: the reviewer's)
    escalated_overdue: bool = False  # a due of the lead unit's escalated
    extensions: int = 0  # approved 延期
    reviews: int = 0  # 复查 requested
    re_reviews: int = 0  # 复核 requested
    objections: list[str] = field(default_factory=list)  # 异议: the units that objected, sorted
    objections_rejected: int = 0  # objections the bureau rejected
    returns: list[str] = field(default_factory=list)  # 退回: the units whose objection was approved, sorted
    # 责任: [breach or mark, unit] charged to the unit responsible at that moment (:data:`CHARGE_KINDS`), sorted
    charges: list[list[str]] = field(default_factory=list)
    result: str | None = None  # the lead unit's opinion: resolved, mediated (调解协议)…

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CaseFacts:
        """From a ``case_facts`` row (or any mapping with every column)."""
        return cls(**{name: row[name] for name in FACT_FIELDS})

    def as_row(self) -> dict[str, Any]:
        """The ``case_facts`` row; its lists are copies."""
        row = {name: getattr(self, name) for name in FACT_FIELDS}
        for name in ("overdue_kinds", "objections", "returns"):
            row[name] = list(row[name])
        row["charges"] = [list(c) for c in row["charges"]]
        return row


FACT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CaseFacts))


# --- how each event moves a case's facts --------------------------------------------------------
# Applied in the order the fold applied the events (:func:`counted_facts`), so whatever order a
# case's events arrive in, its facts come out the same. A reviewing body's opinion is told from the
# lead unit's by that order (the first reply after a review request answers it); every other rule
# keeps the earliest, the latest, a set or a count.

REVIEW_KINDS = frozenset({"review", "re_review"})  # due kinds of the reviewing bodies; the others are the lead unit's


# What is charged to a unit, and when (责任: 属地管理、归口办理、谁主管谁负责): a missed due date
# (``<due kind>_overdue``) to the unit the overdue names, the one holding the case then (a lapsed
# sign-for to the unit that let it lapse, even if the case moved on; an overdue opinion to the lead at
# its due date; a review's to the reviewing body); an escalation to the unit escalated; an objection
# the bureau rejected (错退) to the unit that handed the case back; an escalated (越级访) or collective
# (集体访) petition to the township it arose in.
CHARGE_KINDS = ("sign_overdue", "accept_overdue", "reply_overdue", "agent_overdue", "review_overdue",
                "re_review_overdue", "overdue_past_escalation", "objection_rejected", "escalated_petition",
                "collective_petition")
LEAD_OVERDUE = ("sign_overdue", "accept_overdue", "reply_overdue", "agent_overdue")


def _charge(f: CaseFacts, kind: str, unit: str | None, once: bool = True) -> None:
    """Charge ``kind`` to ``unit``: once per case (``once``), or once per event (错退: each rejected objection)."""
    if unit and (not once or [kind, unit] not in f.charges):
        f.charges = sorted(f.charges + [[kind, unit]])


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def on_received(f: CaseFacts, e: ev.CaseReceived) -> None:
    """受理登记: what intake recorded. A category the lead assignment set stays."""
    f.received_at, f.channel, f.township = e.occurred_at, e.channel, e.township
    f.drive_id, f.visit_id, f.people_count = e.drive_id, e.visit_id, e.people_count
    f.collective, f.escalated, f.backlog = e.collective, e.escalated, e.backlog
    f.repeat_of, f.special_period = e.repeat_of, e.special_period
    f.agent_id = e.delegation.agent_id if e.delegation else None
    f.agency_id = e.delegation.agency_id if e.delegation else None
    f.category = f.category or e.category
    if e.escalated:
        _charge(f, "escalated_petition", e.township)
    if e.collective:
        _charge(f, "collective_petition", e.township)


def on_lead_assigned(f: CaseFacts, e: ev.CaseAssigned) -> None:
    """交办 to a lead unit (主办): the latest assignment's time and its category, when it names one
    (the lead unit itself is the fold's, :func:`counted_facts`). Co-handling (协办) and reviewer
    (复查/复核机关) assignments change nothing."""
    if e.role != "lead":
        return
    if f.lead_assigned_at is None or e.occurred_at >= f.lead_assigned_at:
        f.lead_assigned_at, f.category = e.occurred_at, e.category or f.category


def on_leader_assigned(f: CaseFacts, e: ev.LeaderAssigned) -> None:
    """领导包案."""
    f.leader_id = e.leader_id


def on_signed(f: CaseFacts, e: ev.UnitSigned) -> None:
    """签收: the first signing counts."""
    f.signed_at = f.signed_at if f.signed_at and f.signed_at <= e.occurred_at else e.occurred_at


def on_acceptance(f: CaseFacts, e: ev.AcceptanceDecided) -> None:
    """受理决定: accepted or not (the fold applies one); ``forwarded`` (not ours) is an objection."""
    if e.decision == "forwarded":
        on_objected(f, e)
    else:
        f.acceptance, f.decided_at = e.decision, e.occurred_at


def on_objected(f: CaseFacts, e: ev.CaseReturned | ev.AcceptanceDecided) -> None:
    """异议: one more objection, by ``e.unit`` (lead or co-handling)."""
    f.objections = sorted(f.objections + [e.unit])


def on_objection_decided(f: CaseFacts, e: ev.ObjectionDecided) -> None:
    """异议审核: approved, the unit is relieved of the case (退回: a re-route); rejected, it stays."""
    if e.approved:
        f.returns = sorted(f.returns + [e.unit])
    else:
        f.objections_rejected += 1
        _charge(f, "objection_rejected", e.unit, once=False)


def on_replied(f: CaseFacts, e: ev.CaseReplied) -> None:
    """处理意见书: the lead unit's opinion; or, while a review asked for is unanswered, the reviewing
    body's opinion (复查/复核意见) and its outcome — the fold applies no other reply to a reopened
    case, and never the reviewing body's as the lead unit's."""
    level = pending_review(f)
    if level == "review":
        f.reviewed_at, f.review_outcome = e.occurred_at, e.review_outcome
    elif level == "re_review":
        f.re_reviewed_at, f.re_review_outcome = e.occurred_at, e.review_outcome
    else:
        f.replied_at, f.result = _later(f.replied_at, e.occurred_at), e.result


def on_overdue(f: CaseFacts, e: ev.CaseOverdue) -> None:
    """超期: which due dates were missed (``review``/``re_review`` by the reviewing body)."""
    f.overdue_kinds = sorted(set(f.overdue_kinds) | {e.due_kind})
    _charge(f, f"{e.due_kind}_overdue", e.unit)


def on_escalated(f: CaseFacts, e: ev.CaseEscalated) -> None:
    """Overdue past the grace period, escalated: a due of the lead unit's (a review's is the
    reviewing body's)."""
    if e.due_kind not in REVIEW_KINDS:
        f.escalated_overdue = True
    _charge(f, "overdue_past_escalation", e.unit)


def on_extension_decided(f: CaseFacts, e: ev.ExtensionDecided) -> None:
    """延期: approved ones count."""
    if e.approved:
        f.extensions += 1


def on_feedback(f: CaseFacts, e: ev.PetitionerFeedback) -> None:
    """信访人评价: the latest feedback counts."""
    if f.feedback_at is None or e.occurred_at >= f.feedback_at:
        f.feedback_at, f.satisfied = e.occurred_at, e.satisfied


def on_review_requested(f: CaseFacts, e: ev.ReviewRequested) -> None:
    """复查 or 复核 requested: counted; the case is reopened until the reviewing body's opinion."""
    if e.level == "review":
        f.reviews += 1
    else:
        f.re_reviews += 1
    f.last_review_at = _later(f.last_review_at, e.occurred_at)


def on_closed(f: CaseFacts, e: ev.CaseClosed) -> None:
    """CaseClosed (the matter final): the last closing counts."""
    f.closed_at = _later(f.closed_at, e.occurred_at)


# event type → how it moves a case's facts, when the case's fold applies it. Scoring's consumer
# subscribes to every event the lifecycle folds, and to visits and drives (handlers.HANDLERS).
FACT_RULES: dict[type[ev.Event], Callable[[CaseFacts, ev.Event], None]] = {
    ev.CaseReceived: on_received,
    ev.CaseAssigned: on_lead_assigned,
    ev.LeaderAssigned: on_leader_assigned,
    ev.UnitSigned: on_signed,
    ev.AcceptanceDecided: on_acceptance,
    ev.CaseReturned: on_objected,
    ev.ObjectionDecided: on_objection_decided,
    ev.CaseReplied: on_replied,
    ev.CaseOverdue: on_overdue,
    ev.CaseEscalated: on_escalated,
    ev.ExtensionDecided: on_extension_decided,
    ev.PetitionerFeedback: on_feedback,
    ev.ReviewRequested: on_review_requested,
    ev.CaseClosed: on_closed,
}


def counted_facts(case_id: str, events: list[ev.Event], placed: list[datetime], policy: DeadlinePolicy,
                  agent_days: dict[str, int]) -> CaseFacts | None:
    """The case's facts from scratch, moved only by the events its lifecycle fold applies, in the
    order it applied them (``lifecycle.in_order``); the lead
    unit is the one the fold ends with. None while its receipt has not arrived (pending: nothing
    counts until the receipt, as in supervision). ``placed``: each event's
    :func:`shared.lifecycle.placed_at`, as supervision places it."""
    state, verdicts = lifecycle.fold(events, policy, agent_days, placed)
    if state.state == lifecycle.State.NEW:
        return None
    facts = CaseFacts(case_id, lead_unit=state.lead)
    for i in lifecycle.in_order(events, placed):
        if verdicts[i].applied and (rule := ev.entry_for(FACT_RULES, events[i])) is not None:
            rule(facts, events[i])
    return facts


# --- predicates ---------------------------------------------------------------------------------

def is_received(f: CaseFacts) -> bool:
    """受理登记: its CaseReceived has arrived (only received cases count in any figure)."""
    return f.received_at is not None


def pending_review(f: CaseFacts) -> str | None:
    """The review asked for and not answered yet by the reviewing body: review, re_review or None."""
    if f.reviews and f.reviewed_at is None:
        return "review"
    if f.re_reviews and f.re_reviewed_at is None:
        return "re_review"
    return None


def is_closed(f: CaseFacts) -> bool:
    """办结: the lead unit's handling opinion issued (处理意见书, Art. 34), or the case not accepted
    (不予受理, Art. 23), and no review (复查/复核) waiting for the reviewing body's opinion.

    A case not accepted counts as 办结, in ``closed`` and ``closure_rate``: the unit has done what
    the 条例 asks of it (a written decision, with the statutory path the matter belongs to), the
    matter leaves the petition channel and cannot be reviewed, and the bureau's own reports count
    不予受理 among the concluded cases. ``not_accepted`` shows how many of them there are."""
    concluded = f.acceptance == "not_accepted" or f.replied_at is not None
    return concluded and pending_review(f) is None


def lead_overdue(f: CaseFacts) -> set[str]:
    """The lead unit's due kinds missed (sign, accept, reply, agent): a review's is the reviewing body's."""
    return set(f.overdue_kinds) - REVIEW_KINDS


def is_overdue(f: CaseFacts) -> bool:
    """超期: the lead unit ever missed a due date."""
    return bool(lead_overdue(f))


def signed_on_time(f: CaseFacts) -> bool:
    """按期签收: signed, with no sign-for overdue."""
    return f.signed_at is not None and "sign" not in f.overdue_kinds


def closed_on_time(f: CaseFacts) -> bool:
    """按期办结: 办结, and the lead unit missed neither its acceptance decision nor its opinion
    (a reviewing body's lateness is its own)."""
    return is_closed(f) and not (lead_overdue(f) & {"accept", "reply"})


def rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def figures(facts: Iterable[CaseFacts]) -> dict:
    """The bureau's figures for a set of cases (see README, "Scoring", for each definition)."""
    facts = [f for f in facts if is_received(f)]
    closed = [f for f in facts if is_closed(f)]
    on_time = [f for f in closed if closed_on_time(f)]
    signed = [f for f in facts if f.signed_at is not None]
    with_feedback = [f for f in facts if f.satisfied is not None]
    satisfied = sum(f.satisfied for f in with_feedback)
    changed = ("changed", "revoked")
    return {
        "received": len(facts),
        "assigned": sum(f.lead_unit is not None for f in facts),
        "signed": len(signed),
        "signed_on_time": sum(signed_on_time(f) for f in signed),
        "accepted": sum(f.acceptance == "accepted" for f in facts),
        "not_accepted": sum(f.acceptance == "not_accepted" for f in facts),
        "closed": len(closed),
        "closure_rate": rate(len(closed), len(facts)),
        "closed_on_time": len(on_time),
        "on_time_closure_rate": rate(len(on_time), len(facts)),
        "open_overdue": sum(is_overdue(f) and not is_closed(f) for f in facts),
        "ever_overdue": sum(is_overdue(f) for f in facts),
        "escalated_overdue": sum(f.escalated_overdue for f in facts),
        "review_overdue": sum(bool(REVIEW_KINDS & set(f.overdue_kinds)) for f in facts),
        "extensions": sum(f.extensions for f in facts),
        "with_feedback": len(with_feedback),
        "satisfied": satisfied,
        "satisfaction_rate": rate(satisfied, len(with_feedback)),
        "reviews": sum(f.reviews for f in facts),
        "re_reviews": sum(f.re_reviews for f in facts),
        "reviews_answered": sum(f.reviewed_at is not None for f in facts),
        "re_reviews_answered": sum(f.re_reviewed_at is not None for f in facts),
        "reviews_changed": sum((f.review_outcome in changed) + (f.re_review_outcome in changed) for f in facts),
        "repeat": sum(f.repeat_of is not None for f in facts),
        "escalated": sum(bool(f.escalated) for f in facts),
        "collective": sum(bool(f.collective) for f in facts),
        "backlog": sum(bool(f.backlog) for f in facts),
        "backlog_resolved": sum(bool(f.backlog) for f in closed),
        "mediated": sum(f.result == "mediated" for f in closed),
        "objections": sum(len(f.objections) for f in facts),
        "objections_rejected": sum(f.objections_rejected for f in facts),
        "returns": sum(len(f.returns) for f in facts),
    }


# The figures of :func:`charged`, each from the charge kinds that count toward it (cases, but for
# ``objections_rejected``: each rejected objection counts).
CHARGED_FIGURES = {"ever_overdue": LEAD_OVERDUE, "escalated_overdue": ("overdue_past_escalation",),
                   "review_overdue": ("review_overdue", "re_review_overdue"),
                   "escalated_from_area": ("escalated_petition",), "collective_from_area": ("collective_petition",)}


def charged(facts: Iterable[CaseFacts], unit: str) -> dict:
    """What is charged to ``unit`` across ``facts`` (:data:`CHARGE_KINDS`), whoever leads the cases now:
    the cases whose lead due dates it missed (``ever_overdue``) or let escalate, its rejected
    objections, the reviews it answered late, the escalated and collective petitions from its area."""
    return charged_by_unit(facts).get(unit) or _no_charges()


def _no_charges() -> dict:
    return dict.fromkeys(("ever_overdue", "escalated_overdue", "objections_rejected", "review_overdue",
                          "escalated_from_area", "collective_from_area"), 0)


def charged_by_unit(facts: Iterable[CaseFacts]) -> dict[str, dict]:
    """:func:`charged` of every unit charged with anything, in one pass over ``facts`` (a year's report
    has a card for each of the county's units: one pass each was most of its time)."""
    figure_of = {kind: [fig for fig, kinds in CHARGED_FIGURES.items() if kind in kinds]
                 for kinds in CHARGED_FIGURES.values() for kind in kinds}
    out: dict[str, dict] = {}
    for f in facts:
        if not f.charges or not is_received(f):
            continue
        counted: set[tuple[str, str]] = set()  # (figure, unit): a case counts once per figure
        for kind, unit in f.charges:
            if kind == "objection_rejected":
                out.setdefault(unit, _no_charges())["objections_rejected"] += 1
            for fig in figure_of.get(kind, ()):
                counted.add((fig, unit))
        for fig, unit in counted:
            out.setdefault(unit, _no_charges())[fig] += 1
    return out


def unit_figures(unit: str, led: list[CaseFacts], everything: list[CaseFacts], charges: dict | None = None) -> dict:
    """A unit's figures for its scorecard: the cases it leads (办结, 按期, 满意…), with what was charged
    to it on any case of the period (超期, 错退…) in place of its lead cases' own. ``charges``: the
    period's :func:`charged_by_unit`, when the caller has it already."""
    charges = charged_by_unit(everything) if charges is None else charges
    return {**figures(led), **(charges.get(unit) or _no_charges())}


def scorecard(unit: str, figs: dict, weights: Weights, vetoes: Iterable[tuple[str, str]] = ()) -> dict:
    """A unit's score: ``base`` less each metric's deductions and plus each metric's additions
    (``more_is_better``: 积案化解, 按期办结…), each capped, with the reason for each; its band (等次)
    and the consequence (奖惩) the weights give it. Fewer received cases than ``min_cases``: no band,
    no consequence (too few to judge), and no rank. ``vetoes``: (kind, meeting number) of the events
    that bring 一票否决 (``weights.veto``: a mass incident in the unit's area) — the lowest band and the
    veto's consequence whatever the score or the number of cases, ranked after every other unit."""
    score, reasons, additions = weights.base, [], []
    for m in weights.metrics:
        value = figs.get(m.metric)
        if value is None:
            continue
        if m.metric in RATE_METRICS:
            shortfall = max(0.0, m.target - value) if m.direction == "higher_is_better" else max(0.0, value - m.target)
            points = min(m.cap, shortfall * m.weight)
            shown = f"{value * 100:.1f}%"
        elif m.direction == "more_is_better":
            points = -min(m.cap, value * m.weight)
            shown = str(value)
        else:
            points = min(m.cap, value * m.weight) if m.direction == "lower_is_better" else 0.0
            shown = str(value)
        if points > 0:
            score -= points
            reasons.append({"metric": m.metric, "value": shown, "points": round(points, 2)})
        elif points < 0:
            score -= points
            additions.append({"metric": m.metric, "value": shown, "points": round(-points, 2)})
    score = round(score, 2)
    card = {"unit": unit, "score": score, "band": None, "outcome": "none", "consequence": "", "deductions": reasons,
            "additions": additions, "figures": figs}
    vetoed = [(kind, no) for kind, no in vetoes if kind in weights.veto]
    if vetoed:
        card.update(band=weights.bands[-1].band, outcome="penalty",
                    consequence="；".join(dict.fromkeys(weights.veto[k] for k, _ in vetoed)),
                    vetoed_by=sorted({no for _, no in vetoed}))
    elif (figs.get("received") or 0) >= weights.min_cases:
        band = next(b for b in weights.bands if score >= b.floor)
        card.update(band=band.band, outcome=band.outcome, consequence=band.consequence)
    return card


def rank(cards: list[dict]) -> list[dict]:
    """Rank the cards with a band by score (ties share a rank), then by code for a stable order; the
    vetoed (一票否决) after them; a card without a band (too few cases) follows, unranked (rank None)."""
    ordered = sorted(cards, key=lambda c: (c["band"] is None, bool(c.get("vetoed_by")), -c["score"], c["unit"]))
    for i, card in enumerate(ordered):
        if card["band"] is None:
            card["rank"] = None
        else:
            same = i and (ordered[i - 1]["score"], bool(ordered[i - 1].get("vetoed_by"))) == \
                (card["score"], bool(card.get("vetoed_by")))
            card["rank"] = ordered[i - 1]["rank"] if same else i + 1
    return ordered


def accountability(facts: list[CaseFacts], origins: dict[str, CaseFacts], directory: Directory,
                   consequences: Mapping[str, str] | None = None,
                   incidents: Mapping[str, list[str]] | None = None) -> list[dict]:
    """责任追究: each breach the rules name, with the unit charged, its principal leader (第一责任人) and
    leader in charge (直接责任人), and the consequence (``consequences``, scoring.yaml: 约谈, 通报批评…).
    ``origins`` are the earlier cases that ``facts`` repeat, by case id; ``incidents``: the cases of a
    mass incident (群体性事件) by the township it arose in (breach ``mass_incident``)."""
    breaches: dict[tuple[str, str], list[str]] = {}
    for unit, cases in (incidents or {}).items():
        breaches[("mass_incident", unit)] = list(cases)
    for f in facts:
        for kind, unit in _breaches(f, origins.get(f.repeat_of) if f.repeat_of else None):
            if unit in directory.units:
                breaches.setdefault((kind, unit), []).append(f.case_id)
    out = []
    for (kind, unit), cases in sorted(breaches.items()):
        u = directory.units[unit]
        out.append({"breach": kind, "unit": unit, "unit_name": u.name,
                    "principal_leader": u.principal_leader.model_dump(),
                    "leader_in_charge": u.leader_in_charge.model_dump(), "cases": sorted(cases),
                    "consequence": (consequences or {}).get(kind, "")})
    return out


# The charges that are breaches named in the accountability list (the others weigh on scores only).
BREACHES = ("overdue_past_escalation", "sign_overdue", "objection_rejected")


def _breaches(f: CaseFacts, earlier: CaseFacts | None) -> list[tuple[str, str | None]]:
    """(breach, the unit that answers) for one case: overdue past escalation, a lapsed sign-for and an
    objection the bureau rejected (the unit charged at the time); a collective petition repeating an
    unresolved case, or a repeat after a closed one (the earlier case's lead unit)."""
    if not is_received(f):
        return []
    out = list(dict.fromkeys((k, u) for k, u in f.charges if k in BREACHES))
    if earlier is not None:
        if f.collective and not is_closed(earlier):
            out.append(("collective_from_unresolved_case", earlier.lead_unit))
        elif is_closed(earlier):
            out.append(("repeat_after_closing", earlier.lead_unit))
    return out
