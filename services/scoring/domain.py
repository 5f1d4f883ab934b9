"""Scoring's rules in plain Python: a case's facts (:class:`CaseFacts`) and how each event moves
them (:data:`FACT_RULES`), the figures of a set of cases, a unit's scorecard from the weights, and
the accountability list (责任追究).

A case's facts count only the events its lifecycle applied (:func:`counted_facts`, with the same
fold as supervision's, ``shared/lifecycle.py``): a sign-for by a unit that does not hold the case, a
reply before the sign-for or a second close moves no figure, so no score counts what the lifecycle
refused.

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
    lead_unit: str | None = None  # 主办单位
    lead_assigned_at: datetime | None = None
    leader_id: str | None = None  # 包案领导
    signed_at: datetime | None = None  # 签收 (the first)
    replied_at: datetime | None = None  # 答复 (the last)
    closed_at: datetime | None = None  # 办结 (the last)
    last_review_at: datetime | None = None
    feedback_at: datetime | None = None
    satisfied: bool | None = None  # the last feedback's
    overdue_kinds: list[str] = field(default_factory=list)  # 超期: the due kinds missed, sorted
    escalated_overdue: bool = False
    extensions: int = 0  # approved 延期
    reviews: int = 0  # 复查
    re_reviews: int = 0  # 复核
    returns: list[str] = field(default_factory=list)  # 退回: the units that returned it, sorted

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CaseFacts:
        """From a ``case_facts`` row (or any mapping with every column)."""
        return cls(**{name: row[name] for name in FACT_FIELDS})

    def as_row(self) -> dict[str, Any]:
        """The ``case_facts`` row; its lists are copies."""
        row = {name: getattr(self, name) for name in FACT_FIELDS}
        row["overdue_kinds"], row["returns"] = list(self.overdue_kinds), list(self.returns)
        return row


FACT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CaseFacts))


# --- how each event moves a case's facts --------------------------------------------------------
# Commutative: whatever order a case's events arrive in, its facts come out the same. Each rule
# keeps the earliest, the latest, a set or a count, never "the last one applied".

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


def on_lead_assigned(f: CaseFacts, e: ev.CaseAssigned) -> None:
    """交办 to a lead unit (主办): the latest assignment wins; its category, when it names one.
    Co-handling (协办) assignments change nothing."""
    if e.role != "lead":
        return
    if f.lead_assigned_at is None or e.occurred_at >= f.lead_assigned_at:
        f.lead_unit, f.lead_assigned_at, f.category = e.unit, e.occurred_at, e.category or f.category


def on_leader_assigned(f: CaseFacts, e: ev.LeaderAssigned) -> None:
    """领导包案."""
    f.leader_id = e.leader_id


def on_signed(f: CaseFacts, e: ev.UnitSigned) -> None:
    """签收: the first signing counts."""
    f.signed_at = f.signed_at if f.signed_at and f.signed_at <= e.occurred_at else e.occurred_at


def on_returned(f: CaseFacts, e: ev.CaseReturned) -> None:
    """退回: one more return, by ``e.unit``."""
    f.returns = sorted(f.returns + [e.unit])


def on_replied(f: CaseFacts, e: ev.CaseReplied) -> None:
    """答复: the last reply counts."""
    f.replied_at = _later(f.replied_at, e.occurred_at)


def on_overdue(f: CaseFacts, e: ev.CaseOverdue) -> None:
    """超期: which due dates were missed."""
    f.overdue_kinds = sorted(set(f.overdue_kinds) | {e.due_kind})


def on_escalated(f: CaseFacts, e: ev.CaseEscalated) -> None:
    """Overdue past the grace period, escalated."""
    f.escalated_overdue = True


def on_extension_decided(f: CaseFacts, e: ev.ExtensionDecided) -> None:
    """延期: approved ones count."""
    if e.approved:
        f.extensions += 1


def on_feedback(f: CaseFacts, e: ev.PetitionerFeedback) -> None:
    """信访人评价: the latest feedback counts."""
    if f.feedback_at is None or e.occurred_at >= f.feedback_at:
        f.feedback_at, f.satisfied = e.occurred_at, e.satisfied


def on_review_requested(f: CaseFacts, e: ev.ReviewRequested) -> None:
    """复查 or 复核 requested: counted, and the latest reopens a case closed before it."""
    if e.level == "review":
        f.reviews += 1
    else:
        f.re_reviews += 1
    f.last_review_at = _later(f.last_review_at, e.occurred_at)


def on_closed(f: CaseFacts, e: ev.CaseClosed) -> None:
    """办结: the last closing counts."""
    f.closed_at = _later(f.closed_at, e.occurred_at)


# event type → how it moves a case's facts, when the case's fold applies it. Scoring's consumer
# subscribes to every event the lifecycle folds, and to visits and drives (handlers.HANDLERS).
FACT_RULES: dict[type[ev.Event], Callable[[CaseFacts, ev.Event], None]] = {
    ev.CaseReceived: on_received,
    ev.CaseAssigned: on_lead_assigned,
    ev.LeaderAssigned: on_leader_assigned,
    ev.UnitSigned: on_signed,
    ev.CaseReturned: on_returned,
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
    """The case's facts from scratch, moved only by the events its lifecycle fold applies (the rules
    commute, so their order does not matter); None while its receipt has not arrived (pending:
    nothing counts until the receipt, as in supervision). ``placed``: each event's
    :func:`shared.lifecycle.placed_at`, as supervision places it."""
    state, verdicts = lifecycle.fold(events, policy, agent_days, placed)
    if state.state == lifecycle.State.NEW:
        return None
    facts = CaseFacts(case_id)
    for event, verdict in zip(events, verdicts):
        if verdict.applied and (rule := ev.entry_for(FACT_RULES, event)) is not None:
            rule(facts, event)
    return facts


# --- predicates ---------------------------------------------------------------------------------

def is_received(f: CaseFacts) -> bool:
    """受理: its CaseReceived has arrived (only received cases count in any figure)."""
    return f.received_at is not None


def is_closed(f: CaseFacts) -> bool:
    """办结: closed, and not reopened by a later review request."""
    return f.closed_at is not None and (f.last_review_at is None or f.closed_at > f.last_review_at)


def is_overdue(f: CaseFacts) -> bool:
    """超期: ever missed a due date."""
    return bool(f.overdue_kinds)


def signed_on_time(f: CaseFacts) -> bool:
    """按期签收: signed, with no sign-for overdue."""
    return f.signed_at is not None and "sign" not in f.overdue_kinds


def closed_on_time(f: CaseFacts) -> bool:
    """按期办结: closed, with no reply or review overdue."""
    return is_closed(f) and "reply" not in f.overdue_kinds and "review" not in f.overdue_kinds


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
    return {
        "received": len(facts),
        "assigned": sum(f.lead_unit is not None for f in facts),
        "signed": len(signed),
        "signed_on_time": sum(signed_on_time(f) for f in signed),
        "closed": len(closed),
        "closure_rate": rate(len(closed), len(facts)),
        "closed_on_time": len(on_time),
        "on_time_closure_rate": rate(len(on_time), len(facts)),
        "open_overdue": sum(is_overdue(f) and not is_closed(f) for f in facts),
        "ever_overdue": sum(is_overdue(f) for f in facts),
        "escalated_overdue": sum(f.escalated_overdue for f in facts),
        "extensions": sum(f.extensions for f in facts),
        "with_feedback": len(with_feedback),
        "satisfied": satisfied,
        "satisfaction_rate": rate(satisfied, len(with_feedback)),
        "reviews": sum(f.reviews for f in facts),
        "re_reviews": sum(f.re_reviews for f in facts),
        "repeat": sum(f.repeat_of is not None for f in facts),
        "escalated": sum(bool(f.escalated) for f in facts),
        "collective": sum(bool(f.collective) for f in facts),
        "backlog": sum(bool(f.backlog) for f in facts),
        "backlog_resolved": sum(bool(f.backlog) for f in closed),
        "returns": sum(len(f.returns) for f in facts),
    }


def scorecard(unit: str, figs: dict, weights: Weights) -> dict:
    """A unit's score: ``base`` less each metric's points (capped), with the reason for each."""
    score, reasons = weights.base, []
    for m in weights.metrics:
        value = figs.get(m.metric)
        if value is None:
            continue
        if m.metric in RATE_METRICS:
            shortfall = max(0.0, m.target - value) if m.direction == "higher_is_better" else max(0.0, value - m.target)
            points = min(m.cap, shortfall * m.weight)
            shown = f"{value * 100:.1f}%"
        else:
            points = min(m.cap, value * m.weight) if m.direction == "lower_is_better" else 0.0
            shown = str(value)
        if points > 0:
            score -= points
            reasons.append({"metric": m.metric, "value": shown, "points": round(points, 2)})
    score = round(score, 2)
    band = next(b for b in weights.bands if score >= b.floor)
    return {"unit": unit, "score": score, "band": band.band, "outcome": band.outcome, "deductions": reasons,
            "figures": figs}


def rank(cards: list[dict]) -> list[dict]:
    """Rank by score (ties share a rank), then by code for a stable order."""
    ordered = sorted(cards, key=lambda c: (-c["score"], c["unit"]))
    for i, card in enumerate(ordered):
        card["rank"] = ordered[i - 1]["rank"] if i and ordered[i - 1]["score"] == card["score"] else i + 1
    return ordered


def accountability(facts: list[CaseFacts], origins: dict[str, CaseFacts], directory: Directory) -> list[dict]:
    """责任追究: each breach the rules name, with the unit, its principal leader (第一责任人) and leader
    in charge (直接责任人). ``origins`` are the earlier cases that ``facts`` repeat, by case id."""
    breaches: dict[tuple[str, str], list[str]] = {}
    for f in facts:
        for kind, unit in _breaches(f, origins.get(f.repeat_of) if f.repeat_of else None):
            if unit in directory.units:
                breaches.setdefault((kind, unit), []).append(f.case_id)
    out = []
    for (kind, unit), cases in sorted(breaches.items()):
        u = directory.units[unit]
        out.append({"breach": kind, "unit": unit, "unit_name": u.name,
                    "principal_leader": u.principal_leader.model_dump(),
                    "leader_in_charge": u.leader_in_charge.model_dump(), "cases": sorted(cases)})
    return out


def _breaches(f: CaseFacts, earlier: CaseFacts | None) -> list[tuple[str, str | None]]:
    """(breach, the unit that answers) for one case: overdue past escalation (its lead unit); a
    collective petition repeating an unresolved case, or a repeat after a closed one (the earlier
    case's lead unit)."""
    if not is_received(f):
        return []
    out = [("overdue_past_escalation", f.lead_unit)] if f.escalated_overdue else []
    if earlier is not None:
        if f.collective and not is_closed(earlier):
            out.append(("collective_from_unresolved_case", earlier.lead_unit))
        elif is_closed(earlier):
            out.append(("repeat_after_closing", earlier.lead_unit))
    return out
