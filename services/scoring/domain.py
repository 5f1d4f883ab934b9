"""Scoring's rules in plain Python: how each event moves a case's facts, the figures of a set of
cases, a unit's scorecard from the weights, and the accountability list (责任追究).

Every figure counts the cases *received* in the period (the received date, county time, decides
the period); a late or out-of-order event updates its case, so it moves the figures of the period
the case belongs to. Rates are rounded half-up to 0.1% for reports; scores to 0.01.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from shared import events as ev
from shared.directory import Directory
from shared.scoring_weights import RATE_METRICS, Weights


def new_fact(case_id: str) -> dict:
    return {"case_id": case_id, "received_at": None, "channel": None, "township": None, "category": None,
            "drive_id": None, "agent_id": None, "agency_id": None, "visit_id": None, "people_count": None,
            "collective": None, "escalated": None, "backlog": None, "repeat_of": None, "special_period": None,
            "lead_unit": None, "lead_assigned_at": None, "leader_id": None, "signed_at": None, "replied_at": None,
            "closed_at": None, "last_review_at": None, "feedback_at": None, "satisfied": None, "overdue_kinds": [],
            "escalated_overdue": False, "extensions": 0, "reviews": 0, "re_reviews": 0, "returns": []}


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def apply_fact(f: dict, e: ev.Event) -> None:  # noqa: C901 - one branch per event type
    """Move one case's facts by one event. Commutative: any arrival order gives the same facts."""
    at = e.occurred_at
    if isinstance(e, ev.CaseReceived):
        f.update(received_at=at, channel=e.channel, township=e.township, drive_id=e.drive_id, visit_id=e.visit_id,
                 people_count=e.people_count, collective=e.collective, escalated=e.escalated, backlog=e.backlog,
                 repeat_of=e.repeat_of, special_period=e.special_period,
                 agent_id=e.delegation.agent_id if e.delegation else None,
                 agency_id=e.delegation.agency_id if e.delegation else None)
        f["category"] = f["category"] or e.category
    elif isinstance(e, ev.CaseAssigned) and e.role == "lead":
        if f["lead_assigned_at"] is None or at >= f["lead_assigned_at"]:
            f.update(lead_unit=e.unit, lead_assigned_at=at, category=e.category or f["category"])
    elif isinstance(e, ev.LeaderAssigned):
        f["leader_id"] = e.leader_id
    elif isinstance(e, ev.UnitSigned):
        f["signed_at"] = f["signed_at"] if f["signed_at"] and f["signed_at"] <= at else at
    elif isinstance(e, ev.CaseReturned):
        f["returns"] = sorted(f["returns"] + [e.unit])
    elif isinstance(e, ev.CaseReplied):
        f["replied_at"] = _later(f["replied_at"], at)
    elif isinstance(e, ev.CaseOverdue):
        f["overdue_kinds"] = sorted(set(f["overdue_kinds"]) | {e.due_kind})
    elif isinstance(e, ev.CaseEscalated):
        f["escalated_overdue"] = True
    elif isinstance(e, ev.ExtensionDecided) and e.approved:
        f["extensions"] += 1
    elif isinstance(e, ev.PetitionerFeedback):
        if f["feedback_at"] is None or at >= f["feedback_at"]:
            f.update(feedback_at=at, satisfied=e.satisfied)
    elif isinstance(e, ev.ReviewRequested):
        f["reviews" if e.level == "review" else "re_reviews"] += 1
        f["last_review_at"] = _later(f["last_review_at"], at)
    elif isinstance(e, ev.CaseClosed):
        f["closed_at"] = _later(f["closed_at"], at)


# event type → how it moves a case's facts (interim: the one apply_fact(); to become one function per event).
FACT_RULES = dict.fromkeys((
    ev.CaseReceived, ev.CaseAssigned, ev.LeaderAssigned, ev.UnitSigned, ev.CaseReturned, ev.CaseReplied,
    ev.CaseOverdue, ev.CaseEscalated, ev.ExtensionDecided, ev.PetitionerFeedback, ev.ReviewRequested,
    ev.CaseClosed), apply_fact)


def is_closed(f: dict) -> bool:
    """办结: closed, and not reopened by a later review request."""
    return f["closed_at"] is not None and (f["last_review_at"] is None or f["closed_at"] > f["last_review_at"])


def rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def figures(facts: Iterable[dict]) -> dict:
    """The bureau's figures for a set of cases (see README, "Scoring", for each definition)."""
    facts = [f for f in facts if f["received_at"] is not None]
    closed = [f for f in facts if is_closed(f)]
    on_time = [f for f in closed if "reply" not in f["overdue_kinds"] and "review" not in f["overdue_kinds"]]
    signed = [f for f in facts if f["signed_at"] is not None]
    with_feedback = [f for f in facts if f["satisfied"] is not None]
    return {
        "received": len(facts),
        "assigned": sum(f["lead_unit"] is not None for f in facts),
        "signed": len(signed),
        "signed_on_time": sum("sign" not in f["overdue_kinds"] for f in signed),
        "closed": len(closed),
        "closure_rate": rate(len(closed), len(facts)),
        "closed_on_time": len(on_time),
        "on_time_closure_rate": rate(len(on_time), len(facts)),
        "open_overdue": sum(bool(f["overdue_kinds"]) and not is_closed(f) for f in facts),
        "ever_overdue": sum(bool(f["overdue_kinds"]) for f in facts),
        "escalated_overdue": sum(f["escalated_overdue"] for f in facts),
        "extensions": sum(f["extensions"] for f in facts),
        "with_feedback": len(with_feedback),
        "satisfied": sum(f["satisfied"] for f in with_feedback),
        "satisfaction_rate": rate(sum(f["satisfied"] for f in with_feedback), len(with_feedback)),
        "reviews": sum(f["reviews"] for f in facts),
        "re_reviews": sum(f["re_reviews"] for f in facts),
        "repeat": sum(f["repeat_of"] is not None for f in facts),
        "escalated": sum(bool(f["escalated"]) for f in facts),
        "collective": sum(bool(f["collective"]) for f in facts),
        "backlog": sum(bool(f["backlog"]) for f in facts),
        "backlog_resolved": sum(bool(f["backlog"]) and is_closed(f) for f in closed),
        "returns": sum(len(f["returns"]) for f in facts),
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


def accountability(facts: list[dict], origins: dict[str, dict], directory: Directory) -> list[dict]:
    """责任追究: each breach the rules name, with the unit, its principal leader and leader in charge."""
    breaches: dict[tuple[str, str], list[str]] = {}

    def breach(kind: str, unit: str | None, case_id: str) -> None:
        if unit in directory.units:
            breaches.setdefault((kind, unit), []).append(case_id)

    for f in facts:
        if f["received_at"] is None:
            continue
        if f["escalated_overdue"]:
            breach("overdue_past_escalation", f["lead_unit"], f["case_id"])
        earlier = origins.get(f["repeat_of"]) if f["repeat_of"] else None
        if earlier is not None:
            if f["collective"] and not is_closed(earlier):
                breach("collective_from_unresolved_case", earlier["lead_unit"], f["case_id"])
            elif is_closed(earlier):
                breach("repeat_after_closing", earlier["lead_unit"], f["case_id"])
    out = []
    for (kind, unit), cases in sorted(breaches.items()):
        u = directory.units[unit]
        out.append({"breach": kind, "unit": unit, "unit_name": u.name,
                    "principal_leader": u.principal_leader.model_dump(),
                    "leader_in_charge": u.leader_in_charge.model_dump(), "cases": sorted(cases)})
    return out
