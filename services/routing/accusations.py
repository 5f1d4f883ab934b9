"""Accusations (检举控告): which units a case accuses, and whether it accuses their officials' misconduct.

A case accuses a unit when the clerk marked it at intake (``accused_units``), or when its text names
the unit — or one of its people — as the one who did what a conduct word says (吃拿卡要, 受贿, 推诿…).
An accused unit is never given the case (lead, co-handling or reviewing body) nor shown it. An
accusation of misconduct goes to the discipline commission (纪委监委, county.yaml) unless routing.yaml
says otherwise; any other accusation to the accused unit's superior (:func:`services.routing.domain.route`).

How a text names a unit: its full name, its name without the county's prefix (县林业局 → 林业局), or an
alias of the directory (林业站, 派出所, 民警, 城关镇政府…); its own township's government also as
镇政府, 乡干部… (routing.yaml ``accusations.own_township_names``). A township's bare name (西山乡)
and a village's (松岭村) are the residents' address: places, never an actor; but the officials named
after them are that township's (西山乡的干部, 柏树村书记), as are the village cadres of the case's own
township (村干部, 村支书…, ``township_official_words``: the township answers for them).

Reading a text, left to right, longest word first (村干部 before 干部), words after 不/没 not counted:

- a unit named as a place (在林业局门口, 路过派出所) is never an actor;
- a unit named as the one the resident turned to (向/到/找/要求… 林业局) is the actor of an inaction
  word (到林业局反映了三次都推诿), a bribe's receiver (给国土所送了钱) and the one a demand
  (查处, 严查) is about, never of another conduct word: who hears a complaint is not accused by its
  content (向县市场监督管理局投诉商家乱收费);
- a conduct word's actor is the nearest actor before it in its sentence: a unit, one of its people
  (干部, 工作人员, …的人: the unit the text named last) or another party (商家, 邻居…, no unit);
  with none before it, the first unit after it in its clause; a bribe's the nearest unit or official
  before it, parties passed over (they give); a demand's the nearest before it in the whole text,
  parties, the commission and the unit asked to act (要求市场监管局查处) passed over;
- a unit named right after an accusation word (举报, 投诉, 反映…), not as a place or a hearer and
  accused of no conduct, is *unclear*: the clerk decides (triage ``accusation_unclear``) unless the
  clerk answered ``accuses_unit`` at intake;
- a unit named as an actor (or one of its people), in a text with a word that hints at an accusation
  without saying it (亲戚, 私下, 懂规矩, 压着…: ``suspicion_words``), is *suspected*: should routing give
  it the case, a clerk decides instead (triage ``accusation_unclear``), unless the clerk answered.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from services.routing.domain import Decision
from shared.directory import Directory
from shared.rules import Accusations

MISCONDUCT = "misconduct"  # the rule id of a 检举控告 routed to the discipline commission
OWN = "$township"  # the case's own township
ANY = "*"  # suspected: whichever unit would be given the case (an official of no unit named)

# A unit named after one of these is the one the resident turned to (who hears the complaint) …
HEARER_BEFORE = ("向", "到", "去", "来", "找", "给", "跟", "对", "请", "求", "要求", "希望", "恳请", "请求", "由", "让",
                 "叫", "经", "告诉", "交给", "交到", "打电话给", "打到", "报到", "问过", "问了", "问")
# … and of those, the one asked to act (请镇里催一下), never suspected of what the text hints at.
ASKED_BEFORE = ("请", "求", "要求", "希望", "恳请", "请求", "由", "让", "叫")
HEARERS = ("hearer", "asked")
# … or the place where something happened.
PLACE_BEFORE = ("在", "从", "路过", "经过", "住在", "住")
PLACE_AFTER = ("门口", "旁边", "附近", "对面", "隔壁", "楼下", "楼上", "后面", "前面", "边上", "那边", "大院", "院子",
               "一带", "周边", "斜对面")
# A conduct word right after one of these is denied (不要钱, 没收一分钱): not counted, unless a threat
# follows (不塞钱就排到下个月).
NEGATION = ("不", "没", "未", "别", "无")
THREAT_AFTER = ("就", "的话")
# A unit named before one of these is where someone works (家长都在教育局上班): its people, a hint.
INSIDER_AFTER = ("上班", "工作")
# Read as one word, so that no conduct word is found inside them (好好处理 is not 好处).
MASKS = ("好好处理", "好处理", "好处置", "没关系", "有关系的话")
# A sentence ends; a clause ends (a sentence's part between commas).
_SENTENCE = re.compile(r"[。！？!?；;\n]")
_CLAUSE = re.compile(r"[，,：:、\s]")
# How far after an accusation word the unit it accuses is named (举报县林业局, 投诉一下我们镇的派出所).
OBJECT_REACH = 8

ACTS = ("conduct", "inaction", "bribe", "demand")  # the kinds of word that accuse someone
PEOPLE = ("official", "unit_people", "township_official")


@dataclass(frozen=True)
class Word:
    text: str
    kind: str  # unit, place, village, party, accusation, one of PEOPLE or one of ACTS
    code: str | None = None  # the unit a unit word names (OWN: the case's own); a place's or village's township


@dataclass(frozen=True)
class Token:
    word: Word
    start: int
    end: int
    sentence: int
    clause: int
    role: str = ""  # a unit's: actor, hearer, asked (to act), place or insider (where someone works: 在教育局上班)


@dataclass(frozen=True)
class Finding:
    """What routing reads in a case: the units it accuses and why, and what only a clerk can tell."""

    accused: frozenset[str] = frozenset()
    misconduct: bool = False  # 检举控告: an accused unit's officials' misconduct (a conduct word)
    unclear: tuple[str, ...] = ()  # named with an accusation word and no conduct: the clerk decides
    suspected: tuple[str, ...] = ()  # named as actors in a text with a hint of accusation: never given it unasked
    actors: tuple[str, ...] = ()  # every unit named as an actor (ANY: an official of none), the clerk not asked
    hints: tuple[str, ...] = ()  # those hints (suspicion words)
    conduct: tuple[str, ...] = ()  # the conduct words the accusation rests on
    by_text: tuple[str, ...] = ()  # the accused units the text names with a conduct word
    names: dict[str, str] = field(default_factory=dict)  # code → how the text named it

    def note(self, directory: Directory) -> str:
        units = ", ".join(f"{c} ({self.names.get(c) or directory.units[c].name})" for c in sorted(self.accused))
        words = "、".join(self.conduct)
        return f"检举控告: {units}" + (f" ({words})" if words else "")

    def unclear_detail(self, directory: Directory) -> str:
        named = ", ".join(f"{c} ({self.names.get(c) or directory.units[c].name})" for c in self.unclear)
        return (f"the text names {named} with an accusation word (举报/投诉/反映…) but no conduct word: is the case "
                f"an accusation against it? Never give it to a unit it accuses")

    def suspicion_detail(self, units: list[str], directory: Directory, likelihood: float | None = None) -> str:
        named = ", ".join(f"{c} ({self.names.get(c) or directory.units[c].name})" for c in units)
        why = [f"words that hint at an accusation ({'、'.join(self.hints)})"] if self.hints else []
        why += [f"a text the classifier finds likely an accusation ({likelihood})"] if likelihood is not None else []
        return (f"the text names {named}, which would be given the case, with {' and '.join(why)}: is the case an "
                f"accusation against it? Never give it to a unit it accuses")


class Lexicon:
    """Every word routing looks for in a case's text, from the directory and routing.yaml."""

    def __init__(self, directory: Directory, config: Accusations) -> None:
        self.words: dict[str, Word] = {}
        for code, names in unit_names(directory).items():
            for name in names:
                self.words[name] = Word(name, "unit", code)
        for w in config.own_township_names:
            self.words.setdefault(w, Word(w, "unit", OWN))
        for code, unit in directory.townships.items():
            self.words.setdefault(unit.name, Word(unit.name, "place", code))
        for w in MASKS:
            self.words[w] = Word(w, "mask")
        for village, township in directory.villages.values():
            self.words.setdefault(village.name, Word(village.name, "village", township.code))
        for kind, words in (("conduct", config.conduct_words), ("inaction", config.inaction_words),
                            ("bribe", config.bribe_words), ("demand", config.demand_words),
                            ("accusation", config.accusation_words), ("official", config.official_words),
                            ("unit_people", config.unit_people_words),
                            ("township_official", config.township_official_words), ("party", config.party_words),
                            ("suspicion", config.suspicion_words)):
            for w in words:
                self.words.setdefault(w, Word(w, kind))
        # What a scan tries at a position: only where some word starts, only the lengths words have
        # (most characters of a text start none; routing scans every case's text).
        self.starts = {w[0] for w in self.words}
        self.lengths = sorted({len(w) for w in self.words}, reverse=True)

    def scan(self, text: str) -> list[Token]:
        """The words of ``text``, leftmost and longest first, with their sentence and clause; a
        conduct word after a negation (不要钱) is left out."""
        tokens, i = [], 0
        sentence = clause = 0
        while i < len(text):
            if _SENTENCE.match(text, i):
                sentence, clause = sentence + 1, clause + 1
                i += 1
                continue
            if _CLAUSE.match(text, i):
                clause += 1
                i += 1
                continue
            if text[i] not in self.starts:
                i += 1
                continue
            for n in self.lengths:
                word = self.words.get(text[i:i + n]) if i + n <= len(text) else None
                if word is not None:
                    denied = text[max(0, i - 1):i] in NEGATION and not text.startswith(THREAT_AFTER, i + n)
                    if not (word.kind in ("conduct", "bribe", "demand") and denied):
                        tokens.append(Token(word, i, i + n, sentence, clause))
                    i += n
                    break
            else:
                i += 1
        return [_with_role(t, text) for t in tokens]


def _with_role(token: Token, text: str) -> Token:
    if token.word.kind != "unit":
        return token
    before, after = text[max(0, token.start - 5):token.start], text[token.end:token.end + 3]
    if after.startswith(INSIDER_AFTER):
        role = "insider"
    elif any(after.startswith(w) for w in PLACE_AFTER) or any(before.endswith(w) for w in PLACE_BEFORE):
        role = "place"
    elif any(before.endswith(w) for w in HEARER_BEFORE):
        role = "asked" if any(before.endswith(w) for w in ASKED_BEFORE) else "hearer"
    else:
        role = "actor"
    return Token(token.word, token.start, token.end, token.sentence, token.clause, role)


def unit_names(directory: Directory) -> dict[str, set[str]]:
    """How a text may name a unit as an actor: its full name, without the county's prefix (县林业局 →
    林业局), and its aliases. A short form two units share names neither (人民政府, of the county's and
    the city's: a text accusing 西山乡人民政府 accuses the township alone). A township's bare name is
    a place, not among them."""
    county = directory.county.name
    names = {}
    for code, unit in directory.units.items():
        forms = set() if unit.kind == "township" else {
            unit.name, unit.name.removeprefix("县").removeprefix("市"), unit.name.split(county)[-1]}
        names[code] = {f for f in forms if len(f) >= 3} | set(unit.aliases)
    shared = {f for f, n in Counter(f for forms in names.values() for f in forms).items() if n > 1}
    return {code: forms - shared for code, forms in names.items()}


_LEXICONS: dict[tuple[int, int], tuple[Directory, Accusations, Lexicon]] = {}


def lexicon(directory: Directory, config: Accusations) -> Lexicon:
    """The lexicon of a directory and a config, built once (both live as long as the service)."""
    key = (id(directory), id(config))
    held = _LEXICONS.get(key)
    if held is None or held[0] is not directory or held[1] is not config:
        held = _LEXICONS[key] = (directory, config, Lexicon(directory, config))
    return held[2]


@dataclass(frozen=True)
class Reading:
    """What a text says about units: who it accuses of conduct, who it names after an accusation word."""

    accused: dict[str, list[str]]  # unit → the conduct words it (or one of its people) is the actor of
    unclear: list[str]  # units named right after an accusation word, as actors
    loose_conduct: list[str]  # conduct words of an official of no unit named, or of no actor at all
    names: dict[str, str]
    actors: list[str]  # units named as actors, or whose people are named, in the text's order
    hints: list[str]  # the words that hint at an accusation (suspicion words)


class _Text:
    """A text's tokens, and whose each official is."""

    def __init__(self, tokens: list[Token], township: str, commission: str | None, text: str = "") -> None:
        self.tokens, self.township, self.commission, self.text = tokens, township, commission, text
        self.owner: dict[int, str | None] = {}  # an official's token → its unit: the last one named
        last: str | None = None  # the last unit, township or village named
        last_unit: Token | None = None  # the last unit named
        for i, t in enumerate(tokens):
            if t.word.kind in ("unit", "place", "village"):
                last = self.code(t)
                last_unit = t if t.word.kind == "unit" else last_unit
            elif t.word.kind == "official":
                self.owner[i] = last
            elif t.word.kind == "unit_people":  # …的人: of a unit named in its sentence (a village's are villagers)
                before = tokens[i - 1] if i else None
                self.owner[i] = self.owner[i - 1] if before is not None and before.word.kind == "official" and \
                    before.end == t.start else self.code(last_unit) if last_unit is not None and \
                    last_unit.sentence == t.sentence else None
            elif t.word.kind == "township_official":
                self.owner[i] = last if i and tokens[i - 1].word.kind == "village" and \
                    tokens[i - 1].end == t.start else township

    def addressed(self, t: Token) -> bool:
        """领导你好: the reader, not an actor."""
        return self.text.startswith(("你好", "您好", "们好"), t.end)

    def code(self, t: Token) -> str:
        return self.township if t.word.code == OWN else t.word.code

    def actor(self, i: int) -> str | None | bool:
        """Who did what ``tokens[i]`` says: a unit code; "", an official of no unit named; None, a
        party (no unit); False, no one named."""
        t, kind = self.tokens[i], self.tokens[i].word.kind
        for j in range(i - 1, -1, -1):
            u = self.tokens[j]
            if u.sentence != t.sentence and kind != "demand":
                break
            if u.word.kind in PEOPLE:
                if self.owner[j] is None and (kind in ("bribe", "demand") or u.word.kind == "unit_people"):
                    continue  # people of no unit: the one who gave, or not the one meant, or villagers
                return self.owner[j] or ""  # "": an official of no unit named
            if u.word.kind == "party":
                if kind in ("conduct", "inaction"):
                    return None
                continue  # a bribe's giver, or a party a demand is not about
            if u.word.kind != "unit" or u.role == "place":
                continue
            if kind == "demand" and (self.code(u) == self.commission or (u.role in HEARERS and j == i - 1)):
                continue  # 请纪委查处, 要求市场监管局查处: the one asked to act
            if u.role == "actor" or kind != "conduct":
                return self.code(u)
        if kind in ("conduct", "inaction"):
            after = next((u for u in self.tokens[i + 1:] if u.clause == t.clause and u.word.kind == "unit"
                          and u.role == "actor"), None)
            if after is not None:
                return self.code(after)
        return False


def read(title: str, content: str, township: str, lex: Lexicon, commission: str | None = None) -> Reading:
    """Read a case's title and content (one text, the title its first sentence)."""
    whole = f"{title}。{content}"
    text = _Text(lex.scan(whole), township, commission, whole)
    tokens = text.tokens
    accused: dict[str, list[str]] = {}
    loose: list[str] = []
    names: dict[str, str] = {}
    for i, t in enumerate(tokens):
        if t.word.kind == "unit":
            names.setdefault(text.code(t), t.word.text)
        if t.word.kind not in ACTS:
            continue
        actor = text.actor(i)
        if actor:
            accused.setdefault(actor, []).append(t.word.text)
        elif actor is not None:
            loose.append(t.word.text)  # no one named, or an official of no unit: not a party's own
    unclear: list[str] = []
    for i, t in enumerate(tokens):
        if t.word.kind != "accusation":
            continue
        for u in tokens[i + 1:]:
            if u.clause != t.clause or u.start - t.end > OBJECT_REACH or u.word.kind in ("accusation", "party"):
                break
            if u.word.kind == "unit":
                if u.role == "actor" and text.code(u) not in unclear:
                    unclear.append(text.code(u))
                break
    # Who may be meant by a hint: units named as actors or as where someone works, and units whose
    # people are named; a hint: a suspicion word, someone working at a unit, a conduct word of no one.
    # An official of no unit named (所长, 站里的人) may be of the unit that would handle it: ANY.
    actors = [text.code(t) if t.word.kind == "unit" else text.owner[i] or ANY for i, t in enumerate(tokens)
              if (t.word.kind == "unit" and t.role in ("actor", "hearer", "insider"))
              or (t.word.kind == "official" and not text.addressed(t)) or (t.word.kind in PEOPLE and text.owner.get(i))]
    hints = [t.word.text for t in tokens if t.word.kind in ("suspicion", *ACTS)]
    hints += [f"在{t.word.text}{INSIDER_AFTER[0]}" for t in tokens if t.role == "insider"] + loose
    return Reading(accused, [u for u in unclear if u not in accused], loose_conduct=loose, names=names,
                   actors=list(dict.fromkeys(actors)), hints=list(dict.fromkeys(hints)))


def assess(title: str, content: str, township: str, marked: frozenset[str] | set[str], answer: bool | None,
           directory: Directory, config: Accusations) -> Finding:
    """The units a case accuses and whether of misconduct, given the clerk's marks (``marked``) and
    answer (``answer``: true, it accuses a unit; false, none; None, not asked).

    - false: only the units the clerk marked (none, intake sees to it); nothing read from the text;
    - true: the marked units, those the text accuses of conduct, and those it names after an
      accusation word (failing all, every unit it names as an actor);
    - not asked: the marked units and those the text accuses of conduct; a unit named after an
      accusation word alone is unclear, unless the clerk marked a unit (the clerk has looked).
    Misconduct: a conduct word whose actor is an accused unit or its official, or (of an accusation
    the clerk made) any conduct word not a party's own."""
    marked = frozenset(marked)
    if answer is False:
        return Finding(accused=marked)
    commission = directory.county.discipline_commission
    r = read(title, content, township, lexicon(directory, config), commission)
    by_text = {u for u in r.accused if u in directory.units}
    accused = set(marked) | by_text
    unclear: list[str] = []
    suspected: list[str] = []
    actors: list[str] = []
    if answer is True:
        accused |= set(r.unclear)
        if not accused:
            accused = {u for u in r.names if u in directory.units and u != commission}
    elif not marked:
        unclear = [u for u in r.unclear if u not in accused and u in directory.units]
        actors = [u for u in r.actors if u == ANY or (u not in accused and u in directory.units and u != commission)]
        suspected = actors if r.hints else []
    conduct = [w for u in sorted(accused) for w in r.accused.get(u, [])]
    if marked or answer is True:
        conduct += r.loose_conduct
    return Finding(accused=frozenset(accused), misconduct=bool(accused) and bool(conduct),
                   unclear=tuple(unclear), suspected=tuple(suspected), actors=tuple(actors), hints=tuple(r.hints) if suspected else (),
                   conduct=tuple(dict.fromkeys(conduct)), by_text=tuple(sorted(by_text)),
                   names=dict(r.names))


def to_commission(found: Finding, directory: Directory, config: Accusations,
                  barred: set[str] | frozenset[str]) -> Decision | None:
    """检举控告: an accusation of officials' misconduct goes to the discipline commission (纪委监委,
    county.yaml), with the accused units' superiors co-handling where routing.yaml says so. None when
    it is no such accusation, the rules send it elsewhere, or the commission may not take it (accused,
    or its objection approved): then the accused unit's superior leads, as for any accusation."""
    commission = directory.county.discipline_commission
    if not (found.misconduct and config.misconduct_to_commission) or commission is None or commission in barred:
        return None
    co: tuple[str, ...] = ()
    if config.superior_co_handles:
        superiors = (directory.units[u].superior for u in sorted(found.accused) if u in directory.units)
        co = tuple(dict.fromkeys(s for s in superiors if s and s not in barred and s != commission))
    return Decision(commission, co, MISCONDUCT, found.note(directory))
