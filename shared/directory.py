"""The county's directory (DESIGN §7), loaded and validated from ``deploy/config/``.

Units (townships and departments, with their principal leader 第一责任人 and leader in charge
直接责任人), villages, case categories and their default unit, county leaders, and delegated-agent
agencies (代办点) with their agents (代办员) and service types. A bad file stops the service at
start with the file, line and field.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

_CODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _code(value: str) -> str:
    """A code becomes a NATS subject token (``cases.assigned.<unit>``): no '.', '*' or '>'."""
    if not _CODE.match(value):
        bad = sorted({c for c in value if c in ".*>"})
        why = (f"may not contain {', '.join(repr(c) for c in bad)}: codes become NATS subject tokens"
               if bad else "must be 1-64 letters, digits, '_' or '-'")
        raise ValueError(f"code {value!r} {why}")
    return value


Code = Annotated[str, AfterValidator(_code)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Model):
    name: str
    title: str


class Village(_Model):
    code: Code
    name: str


class Unit(_Model):
    """责任单位: a township (乡镇) or a county department (部门), the bureau's own office, or a
    government (人民政府: the county's, or the city's above it) that answers reviews."""

    code: Code
    name: str
    kind: Literal["township", "department", "office", "government"]
    principal_leader: Person
    leader_in_charge: Person
    superior: Code | None = None  # where a complaint against this unit goes (DESIGN §5)
    # 复查机关: the body one level above that answers a review of this unit's opinion (条例 Art. 35);
    # its own review_body answers the re-review (Art. 36). None: the county's default (county.yaml).
    review_body: Code | None = None
    # Other names a resident's text may give it (林业站 for the forestry bureau, 派出所 for the police,
    # 城关镇政府 for the township): unique across units. A township's bare name (西山乡) names a place,
    # the residents' address, never the township as the one a complaint accuses.
    aliases: list[Annotated[str, Field(min_length=2, max_length=50)]] = []
    villages: list[Village] = []
    # 机关代字 of the notices an office issues (青信联办发 → 青信联办发〔2026〕1号): one sequence per office and year
    notice_prefix: Annotated[str, Field(min_length=1, max_length=20)] | None = None


class Category(_Model):
    code: Code
    name: str
    default_unit: Code | None = None  # None: territorial, the case's own township handles it
    keywords: list[str] = []


class Portfolio(_Model):
    """分管: the units and categories a county leader is in charge of."""

    units: list[Code] = []
    categories: list[Code] = []


class Leader(_Model):
    """包案领导: a county leader who can be made responsible for important cases; an important case
    goes to a leader whose portfolio (分管) covers its lead unit or category."""

    code: Code
    name: str
    title: str
    portfolio: Portfolio = Portfolio()


class ServiceType(_Model):
    code: Code
    name: str
    time_limit_days: int = Field(gt=0, le=365)  # 代办时限


class Agent(_Model):
    code: Code
    name: str


class Agency(_Model):
    code: Code
    name: str
    township: Code
    service_types: list[Code]
    agents: list[Agent]


class County(_Model):
    code: Annotated[str, Field(pattern=r"^[A-Z0-9]{2,12}$")]  # prefix of case numbers
    name: str
    supervision_office: Code
    # The review body (复查机关) of a township or department that names none: the county government.
    review_body: Code | None = None
    # 纪委监委: receives accusations of officials' misconduct (检举控告, routing.yaml ``accusations``).
    discipline_commission: Code | None = None


FILES = {
    "county": "county.yaml", "townships": "townships.yaml", "departments": "departments.yaml",
    "categories": "categories.yaml", "leaders": "leaders.yaml", "agents": "agents.yaml",
}


class ConfigError(Exception):
    """A config file is missing or wrong; the message names the file, line and field."""


class Directory:
    """The validated directory with look-ups by code."""

    def __init__(self, county: County, units: list[Unit], categories: list[Category], leaders: list[Leader],
                 service_types: list[ServiceType], agencies: list[Agency]) -> None:
        self.county = county
        self.units = {u.code: u for u in units}
        self.townships = {u.code: u for u in units if u.kind == "township"}
        self.categories = {c.code: c for c in categories}
        self.leaders = {x.code: x for x in leaders}
        self.service_types = {s.code: s for s in service_types}
        self.agencies = {a.code: a for a in agencies}
        self.agents = {ag.code: (ag, a) for a in agencies for ag in a.agents}
        self.villages = {v.code: (v, t) for t in self.townships.values() for v in t.villages}

    def agency_of(self, agent_code: str) -> Agency:
        return self.agents[agent_code][1]

    def review_body_of(self, unit: str) -> str | None:
        """The body one level above ``unit`` that answers a review of its opinion (复查机关)."""
        u = self.units.get(unit)
        if u is None:
            return None
        if u.review_body:
            return u.review_body
        return self.county.review_body if u.kind in ("township", "department") else None

    def reviewer(self, handling_unit: str, level: str) -> str | None:
        """Who answers a ``review`` (复查: one level above the handling unit, Art. 35) or a
        ``re_review`` (复核: one level above the reviewing body, Art. 36); None when the directory
        names none."""
        body = self.review_body_of(handling_unit)
        return body if level == "review" or body is None else self.review_body_of(body)


@dataclass(frozen=True)
class ConfigDoc:
    """A YAML file with its node tree, so any error can name the line."""

    path: Path
    data: Any
    text: str

    @classmethod
    def read(cls, path: Path, needed_by: str = "") -> ConfigDoc:
        try:
            text = path.read_text(encoding="utf-8")
            return cls(path, yaml.load(text, Loader=_LOADER), text)
        except FileNotFoundError:
            raise ConfigError(f"{path}: missing{needed_by}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None

    def parse(self, model: Any, top: str | None = None) -> Any:
        """Validate the file (or its ``top`` key) as ``model``; a ConfigError names file, line and field."""
        value = (self.data or {}).get(top) if top and isinstance(self.data, dict) else self.data
        try:
            return TypeAdapter(model).validate_python(value if value is not None else ([] if top else {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            self.fail(((top,) if top else ()) + tuple(err["loc"]), err["msg"].removeprefix("Value error, "))

    @property
    def node(self) -> yaml.Node | None:
        """The node tree with line numbers: composed only when an error needs a line."""
        return yaml.compose(self.text, Loader=_LOADER)

    def fail(self, loc: tuple, message: str) -> NoReturn:
        raise ConfigError(f"{self.path}:{yaml_line(self.node, loc)}: {dotted(loc)}: {message}")


# libyaml's loader where PyYAML was built with it (a county's directory is a few thousand lines).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_directory(config_dir: Path | str) -> Directory:
    config_dir = Path(config_dir)
    needed = f" (the directory needs {', '.join(FILES.values())})"
    docs = {key: ConfigDoc.read(config_dir / name, needed) for key, name in FILES.items()}

    def parse(key: str, model: Any, top: str | None = None) -> Any:
        return docs[key].parse(model, top)

    county = parse("county", County)
    townships = parse("townships", list[Unit], "townships")
    departments = parse("departments", list[Unit], "departments")
    categories = parse("categories", list[Category], "categories")
    leaders = parse("leaders", list[Leader], "leaders")
    service_types = parse("agents", list[ServiceType], "service_types")
    agencies = parse("agents", list[Agency], "agencies")
    directory = Directory(county, townships + departments, categories, leaders, service_types, agencies)
    _check_references(directory, docs, townships, departments, categories, list(agencies), leaders)
    return directory


def _check_references(d: Directory, docs: dict, township_list: list[Unit], department_list: list[Unit],
                      category_list: list[Category], agency_list: list[Agency], leader_list: list[Leader]) -> None:
    """Codes unique and every reference known. Works on the parsed lists, before dicts hide duplicates."""
    def fail(key: str, loc: tuple, message: str) -> None:
        docs[key].fail(loc, message)

    def unique(key: str, top: str, codes: list[str], what: str) -> None:
        seen: set[str] = set()
        for i, code in enumerate(codes):
            if code in seen:
                fail(key, (top, i, "code"), f"duplicate {what} code {code!r}")
            seen.add(code)

    all_units = [u.code for u in township_list + department_list]
    unique("townships", "townships", [u.code for u in township_list], "unit")
    unique("departments", "departments", [u.code for u in department_list], "unit")
    if len(set(all_units)) != len(all_units):
        dup = next(c for c in all_units if all_units.count(c) > 1)
        fail("departments", ("departments",), f"unit code {dup!r} is both a township and a department")
    for i, u in enumerate(township_list):
        if u.kind != "township":
            fail("townships", ("townships", i, "kind"), "must be township")
    for i, u in enumerate(department_list):
        if u.kind == "township":
            fail("departments", ("departments", i, "kind"), "townships belong in townships.yaml")
        if u.superior and u.superior not in d.units:
            fail("departments", ("departments", i, "superior"), f"unknown unit {u.superior!r}")
    village_codes = [v.code for t in township_list for v in t.villages]
    if len(set(village_codes)) != len(village_codes):
        dup = next(c for c in village_codes if village_codes.count(c) > 1)
        fail("townships", ("townships",), f"village code {dup!r} appears twice")
    if d.county.supervision_office not in d.units:
        fail("county", ("supervision_office",), f"unknown unit {d.county.supervision_office!r}")
    if d.county.review_body and d.county.review_body not in d.units:
        fail("county", ("review_body",), f"unknown unit {d.county.review_body!r}")
    commission = d.county.discipline_commission
    if commission and commission not in d.units:
        fail("county", ("discipline_commission",), f"unknown unit {commission!r}")
    if commission and d.units[commission].kind == "government":
        fail("county", ("discipline_commission",), f"{commission!r} is a government (人民政府): never routed a case")
    _check_aliases(docs, township_list, department_list)
    for key, units in (("townships", township_list), ("departments", department_list)):
        for i, u in enumerate(units):
            if u.review_body and u.review_body not in d.units:
                fail(key, (key, i, "review_body"), f"unknown unit {u.review_body!r}")
            if u.review_body == u.code:
                fail(key, (key, i, "review_body"), "a unit cannot review its own opinion")
    unique("categories", "categories", [c.code for c in category_list], "category")
    for i, c in enumerate(category_list):
        if c.default_unit and c.default_unit not in d.units:
            fail("categories", ("categories", i, "default_unit"), f"unknown unit {c.default_unit!r}")
        if c.default_unit and d.units[c.default_unit].kind == "government":
            fail("categories", ("categories", i, "default_unit"),
                 f"{c.default_unit!r} is a government (人民政府): it answers reviews and is never routed a case")
    unique("agents", "agencies", [a.code for a in agency_list], "agency")
    unique("leaders", "leaders", [x.code for x in leader_list], "leader")
    for i, leader in enumerate(leader_list):
        for j, unit in enumerate(leader.portfolio.units):
            if unit not in d.units:
                fail("leaders", ("leaders", i, "portfolio", "units", j), f"unknown unit {unit!r}")
        for j, category in enumerate(leader.portfolio.categories):
            if category not in d.categories:
                fail("leaders", ("leaders", i, "portfolio", "categories", j), f"unknown category {category!r}")
    for i, a in enumerate(agency_list):
        if a.township not in d.townships:
            fail("agents", ("agencies", i, "township"), f"unknown township {a.township!r}")
        for j, s in enumerate(a.service_types):
            if s not in d.service_types:
                fail("agents", ("agencies", i, "service_types", j), f"unknown service type {s!r}")
    agent_codes = [ag.code for a in agency_list for ag in a.agents]
    if len(set(agent_codes)) != len(agent_codes):
        dup = next(c for c in agent_codes if agent_codes.count(c) > 1)
        fail("agents", ("agencies",), f"agent code {dup!r} appears twice")


def _check_aliases(docs: dict, township_list: list[Unit], department_list: list[Unit]) -> None:
    """An alias names one unit: never two units' alias, nor another unit's name."""
    names = {u.name: u.code for u in township_list + department_list}
    claimed: dict[str, str] = {}
    for key, units in (("townships", township_list), ("departments", department_list)):
        for i, u in enumerate(units):
            for j, alias in enumerate(u.aliases):
                other = claimed.get(alias) or names.get(alias)
                if other is not None and other != u.code:
                    docs[key].fail((key, i, "aliases", j), f"alias {alias!r} already names unit {other!r}")
                claimed[alias] = u.code


def dotted(loc: tuple) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def yaml_line(node: yaml.Node | None, loc: tuple) -> int:
    """The 1-based line of the deepest node of ``loc`` that exists in the YAML tree."""
    line = 1
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line
