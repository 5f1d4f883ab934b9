"""Routing's rules in plain Python: which units, never an accused one; the classifier; leaders."""
from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class Decision:
    lead: str | None
    co: tuple[str, ...] = ()
    rule_id: str | None = None
    note: str = ""
    co_sees_contact: bool = False  # the rule's: the co-handling units get the resident's phone and masked ID


def accused_units(facts: CaseFacts, directory: Directory, accusation_words: Iterable[str]) -> set[str]:
    """The units a case accuses: named by intake, or named in a text that accuses (检举/揭发…)."""
    accused = set(facts.accused_units)
    text = facts.title + facts.content
    if any(word in text for word in accusation_words):
        accused |= {code for code, names in unit_names(directory).items() if any(n in text for n in names)}
    return accused


def unit_names(directory: Directory) -> dict[str, set[str]]:
    """How a text may name a unit: its full name, and without the county's prefix (县林业局 → 林业局).
    A short form two units share names neither (人民政府, of the county's and the city's: a text
    accusing 西山乡人民政府 accuses the township alone)."""
    county = directory.county.name
    names = {}
    for code, unit in directory.units.items():
        forms = {unit.name, unit.name.removeprefix("县").removeprefix("市"), unit.name.split(county)[-1]}
        names[code] = {f for f in forms if len(f) >= 3}
    shared = {f for f, n in Counter(f for forms in names.values() for f in forms).items() if n > 1}
    return {code: forms - shared for code, forms in names.items()}


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


def reviewer(directory: Directory, lead: str | None, level: str,
             reviewed_by: str | None = None) -> tuple[str, str] | tuple[None, None]:
    """(the body that answers, the unit it is one level above) for a review of a case led by ``lead``:
    a review (复查, Art. 35) goes to the body above the lead; a re-review (复核, Art. 36) to the body
    above the one that answered the review (``reviewed_by``), else to the level above that from the
    lead. (None, None): the directory names none."""
    if level == "re_review" and reviewed_by is not None and directory.review_body_of(reviewed_by) is not None:
        return directory.review_body_of(reviewed_by), reviewed_by
    body = directory.reviewer(lead, level) if lead is not None else None
    if body is None:
        return None, None
    return body, lead if level == "review" else directory.review_body_of(lead)


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


_DICTIONARY: list[tuple[dict, int]] = []  # jieba's prefix dictionary, loaded once per process
_DICTIONARY_LOCK = threading.Lock()


def _jieba_dictionary(cache_dir: Path) -> tuple[dict, int]:
    """jieba's dictionary (≈ 1 s to build, less from its cache), once per process. jieba caches it
    (marshalled) in ``cache_dir``, a folder only this user may enter (``<data_dir>/cache/jieba``),
    never the shared temp folder, where another user could replace the file it loads."""
    import jieba

    from shared.secrets import private_dir

    with _DICTIONARY_LOCK:
        if not _DICTIONARY:
            jieba.setLogLevel(logging.WARNING)
            tokenizer = jieba.Tokenizer()
            tokenizer.tmp_dir = str(private_dir(Path(cache_dir)))
            tokenizer.initialize()
            _DICTIONARY.append((tokenizer.FREQ, tokenizer.total))
        return _DICTIONARY[0]


class Classifier:
    """Keyword rules over text segmented with jieba: a suggested category and how sure it is."""

    def __init__(self, directory: Directory, cache_dir: Path) -> None:
        import jieba

        freq, total = _jieba_dictionary(cache_dir)
        self._jieba = jieba.Tokenizer()
        self._jieba.tmp_dir = str(cache_dir)  # never used: the dictionary is given, not loaded again
        self._jieba.FREQ, self._jieba.total, self._jieba.initialized = dict(freq), total, True
        self.keywords: dict[str, set[str]] = {}
        for code, category in directory.categories.items():
            for word in category.keywords:
                self._jieba.add_word(word, freq=20000)  # a keyword is one token, never split
                self.keywords.setdefault(word, set()).add(code)

    def warm_up(self) -> None:
        """Load jieba's dictionary now rather than on the first case (it is, in ``__init__``)."""
        self._jieba.initialize()

    def classify(self, title: str, content: str, min_hits: int = 1) -> tuple[str | None, float, int]:
        """(category, confidence, hits): confidence is the winner's share of all keyword hits;
        words in the title count twice."""
        score: Counter[str] = Counter()
        for weight, text in ((2, title), (1, content)):
            for token in self._jieba.lcut(re.sub(r"\s+", "", text)):
                for code in self.keywords.get(token, ()):
                    score[code] += weight
        if not score:
            return None, 0.0, 0
        (best, hits), *rest = score.most_common()
        if rest and rest[0][1] == hits:
            return None, 0.5, hits  # a tie is not a choice
        if hits < min_hits:
            return best, 0.0, hits
        return best, round(hits / sum(score.values()), 3), hits


IMPORTANT_FLAGS = ("backlog", "collective", "escalated", "repeat", "special_period")


def importance(flags: dict[str, bool]) -> list[str]:
    """Why a case is important (重要信访件), in the glossary's terms; empty when it is not."""
    return [f for f in IMPORTANT_FLAGS if flags.get(f)]


def pick_leader(roster: list[str], load: dict[str, int]) -> str:
    """领导包案: the leader with the fewest open important cases; the roster's order breaks ties."""
    return min(roster, key=lambda code: (load.get(code, 0), roster.index(code)))


@dataclass
class Explanation:
    """Why a case goes where it goes, for the API and the dry run."""

    decision: Decision
    category: str | None
    category_suggested: bool = False
    confidence: float | None = None
    accused: list[str] = field(default_factory=list)
    triage_reason: str | None = None
