"""Routing's rules in plain Python: which units, never an accused one (the accusations: accusations.py;
the classifier: classifier.py; the leaders: leaders.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

from shared.directory import Directory
from shared.rules import TOWNSHIP, RoutingConfig

UNCATEGORISED = {None, "other"}


@dataclass(frozen=True)
class CaseFacts:
    """What routing decides on."""

    channel: str
    township: str
    category: str | None
    title: str
    content: str
    accused_units: frozenset[str] = frozenset()
    # The clerk's answer: does the case accuse a unit? None: not asked (services/routing/accusations.py).
    accuses_unit: bool | None = None


@dataclass(frozen=True)
class Decision:
    lead: str | None
    co: tuple[str, ...] = ()
    rule_id: str | None = None
    note: str = ""
    co_sees_contact: bool = False  # the rule's: the co-handling units get the resident's phone and masked ID


def not_routed(directory: Directory) -> set[str]:
    """Units never given an ordinary case to handle: the governments (人民政府), which answer reviews
    (复查/复核) of the units' opinions and so cannot have given one themselves."""
    return {code for code, unit in directory.units.items() if unit.kind == "government"}


def route(facts: CaseFacts, config: RoutingConfig, directory: Directory, *, excluded: set[str] = frozenset(),
          accused: set[str] = frozenset(), preferred_lead: str | None = None) -> Decision:
    """The lead and co-handling units for a case, skipping units whose objection was approved, units
    it accuses, and the governments (:func:`not_routed`).

    A rule whose lead is accused gives the lead to that unit's superior (then the supervision office);
    a rule whose lead objected, or is a government, gives way to the next matching rule. No lead: triage.
    """
    def resolve(ref: str) -> str:
        return facts.township if ref == TOWNSHIP else ref

    barred = set(excluded) | set(accused) | not_routed(directory)
    for rule in config.ordered():
        if not rule.matches(facts.category, facts.township, facts.channel):
            continue
        lead, note, rule_id = resolve(rule.lead), "", rule.id
        if preferred_lead is not None and preferred_lead not in barred:
            lead, note, rule_id = preferred_lead, "repeat petition: the unit that handled the earlier case", "repeat"
        elif lead in accused:
            lead, note = _instead_of_accused(lead, directory, barred), f"{lead} is accused"
        if lead is None or lead in barred:
            continue
        co = tuple(dict.fromkeys(u for u in map(resolve, rule.co) if u not in barred and u != lead))
        return Decision(lead, co, rule_id, note, rule.co_sees_contact)
    return Decision(None, note="no rule names a unit that may take the case")


def reviewer(directory: Directory, lead: str | None, level: str, reviewed_by: str | None = None,
             accused: set[str] | frozenset[str] = frozenset()) -> tuple[str, str] | tuple[None, None]:
    """(the body that answers, the unit it is one level above) for a review of a case led by ``lead``:
    a review (复查, Art. 35) goes to the body above the lead; a re-review (复核, Art. 36) to the body
    above the one that answered the review (``reviewed_by``), else to the level above that from the
    lead. A body the case accuses never answers it: the one above it does. (None, None): the
    directory names none."""
    if level == "re_review" and reviewed_by is not None and directory.review_body_of(reviewed_by) is not None:
        body, above = directory.review_body_of(reviewed_by), reviewed_by
    else:
        body = directory.reviewer(lead, level) if lead is not None else None
        above = lead if level == "review" else directory.review_body_of(lead) if lead is not None else None
    seen: set[str] = set()
    while body is not None and body in accused and body not in seen:
        seen.add(body)
        above, body = body, directory.review_body_of(body)
    if body is None or body in accused:
        return None, None
    return body, above


def _instead_of_accused(unit: str, directory: Directory, barred: set[str]) -> str | None:
    """An accused unit's superior, up the chain, else the supervision office; never a barred unit."""
    seen = set()
    current = directory.units[unit].superior
    while current is not None and current not in seen:
        if current not in barred:
            return current
        seen.add(current)
        current = directory.units[current].superior
    office = directory.county.supervision_office
    return office if office not in barred else None


IMPORTANT_FLAGS = ("backlog", "collective", "escalated", "repeat", "special_period")


def importance(flags: dict[str, bool]) -> list[str]:
    """Why a case is important (重要信访件), in the glossary's terms; empty when it is not."""
    return [f for f in IMPORTANT_FLAGS if flags.get(f)]


@dataclass
class Explanation:
    """Why a case goes where it goes, for the API and the dry run."""

    decision: Decision
    category: str | None
    category_suggested: bool = False
    confidence: float | None = None
    accused: list[str] = field(default_factory=list)
    triage_reason: str | None = None
