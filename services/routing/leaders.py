"""领导包案: which county leader answers for an important case (leaders.yaml).

An important case goes to a leader whose portfolio (分管) covers its lead unit or its category, the
one with the fewest open important cases among several (ties: by code); when no portfolio covers it,
to the least loaded of all. The bureau may name another leader by hand, with a reason
(:func:`services.routing.service.name_leader`); the case's load moves with it.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.directory import Directory


@dataclass(frozen=True)
class Choice:
    leader: str
    how: str  # portfolio: in charge of the lead unit or category; load: none is, the least loaded of all
    note: str


def covering(directory: Directory, lead: str | None, category: str | None) -> list[str]:
    """The leaders whose portfolio covers the lead unit or the category, by code."""
    return sorted(code for code, leader in directory.leaders.items()
                  if (lead is not None and lead in leader.portfolio.units)
                  or (category is not None and category in leader.portfolio.categories))


def lightest(codes: list[str], load: dict[str, int]) -> str:
    """The leader with the fewest open important cases; ties by code."""
    return min(codes, key=lambda code: (load.get(code, 0), code))


def choose(directory: Directory, load: dict[str, int], lead: str | None, category: str | None) -> Choice:
    """The leader for an important case led by ``lead`` in ``category`` (either may be unknown: a
    case in triage), given each leader's open important cases (``load``)."""
    candidates = covering(directory, lead, category)
    if candidates:
        leader = lightest(candidates, load)
        portfolio = directory.leaders[leader].portfolio
        what = ([f"unit {lead}"] if lead in portfolio.units else []) + \
            ([f"category {category}"] if category in portfolio.categories else [])
        among = f", the least loaded of {', '.join(candidates)}" if len(candidates) > 1 else ""
        return Choice(leader, "portfolio", f"分管 {' and '.join(what)}{among}")
    return Choice(lightest(list(directory.leaders), load), "load",
                  "no portfolio covers the case: the least loaded of all leaders")
