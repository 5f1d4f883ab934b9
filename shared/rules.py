"""The routing rules (分流规则, DESIGN §5), loaded and validated from ``deploy/config/routing.yaml``.

A rule matches a case by category × township × channel (an omitted list matches any) and names the
lead unit (主办) and co-handling units (协办); ``$township`` stands for the case's own township
(属地管理). Among matching rules the highest priority wins. Two rules of equal priority that can
match the same case with different units conflict, and stop the service at start, as does any
unknown code: the message names the file and line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.directory import Code, ConfigDoc, Directory
from shared.events import CHANNELS

TOWNSHIP = "$township"
FILE = "routing.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


UnitRef = Annotated[str, Field(pattern=r"^(\$township|[A-Za-z0-9_-]+)$")]


class Rule(_Model):
    id: Code
    priority: int = 0
    categories: list[Code] | None = None
    townships: list[Code] | None = None
    channels: list[str] | None = None
    lead: UnitRef
    co: list[UnitRef] = []
    # A co-handling unit (协办) gets the resident's phone and masked ID only when the rule says so
    # (DESIGN §9: what a unit receives is what it needs); the lead unit always gets them.
    co_sees_contact: bool = False

    def matches(self, category: str | None, township: str, channel: str) -> bool:
        return ((self.categories is None or category in self.categories)
                and (self.townships is None or township in self.townships)
                and (self.channels is None or channel in self.channels))

    def overlaps(self, other: Rule) -> bool:
        def meet(a: list | None, b: list | None) -> bool:
            return a is None or b is None or bool(set(a) & set(b))
        return (meet(self.categories, other.categories) and meet(self.townships, other.townships)
                and meet(self.channels, other.channels))


class ClassifierSettings(_Model):
    """Keyword classification of cases filed without a category (keywords are in categories.yaml)."""

    min_confidence: float = Field(0.6, gt=0, le=1)  # below it, the case goes to triage instead
    min_hits: int = Field(1, ge=1)
    # A case that names the unit it would go to, unasked whether it accuses it, goes to a clerk when
    # the accusation model finds it at least this likely an accusation (services/routing/classifier.py).
    accusation_threshold: float = Field(0.5, gt=0, le=1)
    # ... and is taken for a 检举控告 of that unit, to the discipline commission, when the model finds it
    # at least this likely an accusation (1: never; the clerk decides every such case).
    commission_threshold: float = Field(1.0, gt=0, le=1)


Word = Annotated[str, Field(min_length=1, max_length=20)]


class Accusations(_Model):
    """How routing reads an accusation in a case's text (services/routing/accusations.py), and where
    accusations of officials' misconduct go (检举控告, 信访工作条例 Art. 31)."""

    # The officials' misconduct (吃拿卡要, 受贿, 乱收费…): a unit the text names as the one who did it,
    # in the same sentence, is accused, and the case goes to the discipline commission.
    conduct_words: list[Word] = ["吃拿卡要", "受贿", "索贿", "收红包", "索要", "好处费", "乱收费", "乱罚款", "打人",
                                 "粗暴执法", "滥用职权", "徇私", "贪污", "挪用", "优亲厚友"]
    # Misconduct by not acting (不作为, 推诿…): these accuse the unit the resident turned to as well
    # (到林业局反映了三次都推诿), where a conduct word accuses only the one who did it.
    inaction_words: list[Word] = ["不作为", "推诿", "踢皮球"]
    # A bribe or favour given (送了钱, 塞烟酒, 打招呼): it accuses the unit or official who received it.
    bribe_words: list[Word] = ["送钱", "送了钱", "塞钱", "塞了钱", "送礼", "打招呼"]
    # A demand that officials be investigated (查处, 严查): it accuses the unit or official the text named
    # before it (not the one asked to act, nor the commission), and makes the accusation one of misconduct.
    demand_words: list[Word] = ["查处", "严查"]
    # Words that accuse (举报, 投诉, 反映…): a unit named right after one of them, with no conduct word,
    # may be accused or may not: the clerk decides (triage ``accusation_unclear``) unless the clerk has
    # answered ``accuses_unit`` at intake.
    accusation_words: list[Word] = ["举报", "检举", "揭发", "控告", "投诉", "反映"]
    # The people of a unit (干部, 工作人员…): their conduct is the unit's, the last one the text named (a
    # township's too, named by its bare name: 西山乡的干部).
    official_words: list[Word] = ["干部", "工作人员", "领导", "执法人员"]
    # A unit's people without a rank (…的人, 那个人): of the unit named before them in the same sentence (a
    # village's people are villagers).
    unit_people_words: list[Word] = ["的人", "那个人"]
    # Village cadres (村干部, 村支书…): the case's township answers for them (or the township of the
    # village named right before: 柏树村书记).
    township_official_words: list[Word] = ["村干部", "村支书", "村书记", "村主任"]
    # Words that hint at an accusation without saying it (亲戚, 私下, 懂规矩, 压着…): when the text names
    # as an actor a unit that would be given the case, and the clerk did not say whether it accuses it,
    # a clerk decides (triage ``accusation_unclear``): an unspoken accusation must not reach the accused.
    suspicion_words: list[Word] = ["亲戚", "私下", "懂规矩", "压着", "自己人"]
    # Others whose conduct is their own, never a unit's (商家, 老板, 邻居…).
    party_words: list[Word] = ["商家", "老板", "邻居"]
    # How a text names its own township's government without its name (镇政府, 乡干部…).
    own_township_names: list[Word] = ["镇政府", "乡政府", "镇党委", "乡党委", "镇干部", "乡干部"]
    # 检举控告 go to the county's discipline commission (county.yaml ``discipline_commission``); false:
    # the accused unit's superior leads them, as it leads any other accusation.
    misconduct_to_commission: bool = True
    # The accused unit's superior co-handles (协办) an accusation the commission leads.
    superior_co_handles: bool = False


class RoutingConfig(_Model):
    classifier: ClassifierSettings = ClassifierSettings()
    accusations: Accusations = Accusations()
    # Older files: the accusation words at the top level (now ``accusations.accusation_words``).
    accusation_words: list[Word] | None = None
    # Returns (退回) after which a case goes to a clerk instead of another unit.
    max_returns: int = Field(2, ge=1)
    rules: list[Rule]

    @model_validator(mode="after")
    def _older_accusation_words(self) -> RoutingConfig:
        if self.accusation_words is not None and "accusation_words" not in self.accusations.model_fields_set:
            object.__setattr__(self, "accusations", self.accusations.model_copy(
                update={"accusation_words": list(self.accusation_words)}))
        return self

    def ordered(self) -> list[Rule]:
        return sorted(self.rules, key=lambda r: -r.priority)


def load_routing(config_dir: Path | str, directory: Directory) -> RoutingConfig:
    doc = ConfigDoc.read(Path(config_dir) / FILE)
    config: RoutingConfig = doc.parse(RoutingConfig)
    seen: dict[str, int] = {}
    for i, rule in enumerate(config.rules):
        if rule.id in seen:
            doc.fail(("rules", i, "id"), f"duplicate rule id {rule.id!r}")
        seen[rule.id] = i
        for field, what, codes, known in (("categories", "category", rule.categories, directory.categories),
                                          ("townships", "township", rule.townships, directory.townships),
                                          ("channels", "channel", rule.channels, dict.fromkeys(CHANNELS))):
            for j, code in enumerate(codes or []):
                if code not in known:
                    doc.fail(("rules", i, field, j), f"unknown {what} {code!r}")
        for field, ref in [("lead", rule.lead)] + [(("co", j), c) for j, c in enumerate(rule.co)]:
            loc = ("rules", i) + (field if isinstance(field, tuple) else (field,))
            if ref != TOWNSHIP and ref not in directory.units:
                doc.fail(loc, f"unknown unit {ref!r}")
            if ref != TOWNSHIP and directory.units[ref].kind == "government":
                doc.fail(loc, f"{ref!r} is a government (人民政府): it answers reviews and is never routed a case")
    for i, a in enumerate(config.rules):
        for b in config.rules[i + 1:]:
            if a.priority == b.priority and a.overlaps(b) and (a.lead, sorted(a.co)) != (b.lead, sorted(b.co)):
                doc.fail(("rules", seen[b.id]), f"conflicts with rule {a.id!r} (same priority {a.priority}, "
                                                f"both match some cases, different units)")
    if not any(r.categories is None and r.townships is None and r.channels is None for r in config.rules):
        doc.fail(("rules",), "needs a default rule (no categories, townships or channels)")
    _check_accusations(doc, config.accusations, directory)
    return config


def _check_accusations(doc: ConfigDoc, a: Accusations, directory: Directory) -> None:
    """A township's own-government word never another unit's name or alias; a word in one list only."""
    names = {n: u.code for u in directory.units.values() for n in (u.name, *u.aliases)}
    for j, word in enumerate(a.own_township_names):
        if word in names:
            doc.fail(("accusations", "own_township_names", j), f"{word!r} already names unit {names[word]!r}")
    seen: dict[str, str] = {}
    for field in ("conduct_words", "inaction_words", "bribe_words", "demand_words", "accusation_words",
                  "official_words", "unit_people_words", "township_official_words", "party_words", "own_township_names"):
        for j, word in enumerate(getattr(a, field)):
            if seen.get(word, field) != field:
                doc.fail(("accusations", field, j), f"{word!r} is in {seen[word]} too")
            seen[word] = field
