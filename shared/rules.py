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

from pydantic import BaseModel, ConfigDict, Field

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


class RoutingConfig(_Model):
    classifier: ClassifierSettings = ClassifierSettings()
    # A case whose text pairs one of these words with a unit's name accuses that unit (检举揭发).
    accusation_words: list[str] = ["举报", "检举", "揭发", "控告", "投诉"]
    # Returns (退回) after which a case goes to a clerk instead of another unit.
    max_returns: int = Field(2, ge=1)
    rules: list[Rule]

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
    return config
