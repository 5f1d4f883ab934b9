"""Routing's rules without a bus: coverage of the sample county, conflicts, accusations and leaders
by portfolio (the classifier's own: test_routing_classifier.py; accusations in detail:
test_routing_accusations.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.routing import accusations, domain, leaders
from services.routing.domain import CaseFacts
from shared.directory import ConfigError, load_directory
from shared.events import CHANNELS
from shared.rules import RoutingConfig, Rule, load_routing
from shared.settings import REPO_ROOT

SAMPLE = REPO_ROOT / "deploy" / "config"
DIRECTORY = load_directory(SAMPLE)
CONFIG = load_routing(SAMPLE, DIRECTORY)
GOVERNMENTS = {"county_gov", "city_gov"}


def accused(facts: CaseFacts) -> set[str]:
    return set(accusations.assess(facts.title, facts.content, facts.township, facts.accused_units, facts.accuses_unit,
                                  DIRECTORY, CONFIG.accusations).accused)


def test_the_sample_rules_place_every_category_in_every_township_on_every_channel() -> None:
    for category in DIRECTORY.categories:
        for township in DIRECTORY.townships:
            for channel in CHANNELS:
                d = domain.route(CaseFacts(channel, township, category, "t", "c"), CONFIG, DIRECTORY)
                assert d.lead in DIRECTORY.units, (category, township, channel)
                assert d.rule_id is not None and d.lead not in d.co
                assert not {d.lead, *d.co} & GOVERNMENTS, (category, township, channel)


def test_sector_matters_go_to_the_competent_department_and_township_matters_to_the_township() -> None:
    sector = domain.route(CaseFacts("walk_in", "xishan", "logging_permit", "t", "c"), CONFIG, DIRECTORY)
    local = domain.route(CaseFacts("walk_in", "xishan", "neighbor_dispute", "t", "c"), CONFIG, DIRECTORY)
    special = domain.route(CaseFacts("walk_in", "matou", "pollution", "t", "c"), CONFIG, DIRECTORY)
    assert (sector.lead, sector.rule_id) == ("forestry", "logging-permit")
    assert (local.lead, local.rule_id) == ("xishan", "territorial")
    assert (special.lead, special.co, special.rule_id) == ("ecology", ("matou", "market"), "matou-industrial-pollution")


def test_an_accused_unit_never_gets_the_case_its_superior_does() -> None:
    # Marked by the clerk, no conduct word: the accused unit's superior leads (纪委监委 takes misconduct).
    facts = CaseFacts("letter", "xishan", "logging_permit", "举报", "举报县林业局工作人员违规发放采伐证",
                      frozenset({"forestry"}))
    assert accused(facts) == {"forestry"}
    d = domain.route(facts, CONFIG, DIRECTORY, accused=accused(facts))
    assert d.lead == "supervision_office" and "forestry" not in d.co and "forestry is accused" in d.note


def test_naming_a_unit_without_accusing_it_is_not_an_accusation() -> None:
    facts = CaseFacts("letter", "xishan", "logging_permit", "采伐证", "想去县林业局办理采伐证")
    assert accused(facts) == set()


def test_a_township_government_named_in_an_accusation_accuses_the_township_not_the_county_or_the_city() -> None:
    facts = CaseFacts("letter", "xishan", "land_resources", "举报", "举报西山乡人民政府干部违规占地，收受好处")
    assert accused(facts) == {"xishan"}
    named = CaseFacts("letter", "xishan", "land_resources", "举报", "举报青山县人民政府工作人员滥用职权违规征地")
    assert accused(named) == {"county_gov"}


def test_a_returned_case_skips_the_units_that_returned_it() -> None:
    facts = CaseFacts("walk_in", "matou", "pollution", "t", "c")
    again = domain.route(facts, CONFIG, DIRECTORY, excluded={"ecology"})
    assert again.lead == "matou" and again.rule_id == "territorial"
    assert domain.route(facts, CONFIG, DIRECTORY, excluded={"ecology", "matou"}).lead is None


def test_a_government_is_never_the_lead_or_a_co_handling_unit_of_a_case() -> None:
    # Even a rule (or a repeat petition) that names one: the governments answer reviews (复查/复核).
    config = RoutingConfig(rules=[Rule(id="county-wide", priority=99, lead="county_gov", co=["city_gov", "$township"]),
                                  Rule(id="everything", priority=50, lead="natres", co=["county_gov", "agri"]),
                                  Rule(id="territorial", lead="$township")])
    facts = CaseFacts("walk_in", "xishan", "land_resources", "t", "c")
    d = domain.route(facts, config, DIRECTORY)
    assert (d.lead, d.co, d.rule_id) == ("natres", ("agri",), "everything")
    repeat = domain.route(facts, config, DIRECTORY, preferred_lead="county_gov")
    assert (repeat.lead, repeat.rule_id) == ("natres", "everything")
    assert domain.not_routed(DIRECTORY) == GOVERNMENTS


def test_the_reviewing_body_is_one_level_above_the_unit_whose_opinion_is_reviewed() -> None:
    assert domain.reviewer(DIRECTORY, "xishan", "review") == ("county_gov", "xishan")
    assert domain.reviewer(DIRECTORY, "forestry", "review") == ("county_gov", "forestry")
    assert domain.reviewer(DIRECTORY, "xishan", "re_review", reviewed_by="county_gov") == ("city_gov", "county_gov")
    assert domain.reviewer(DIRECTORY, "xishan", "re_review") == ("city_gov", "county_gov")  # no review recorded
    assert domain.reviewer(DIRECTORY, "supervision_office", "review") == (None, None)  # the directory names none
    assert domain.reviewer(DIRECTORY, None, "review") == (None, None)


def test_leaders_are_balanced_by_open_cases_when_no_portfolio_covers_the_case() -> None:
    roster = sorted(DIRECTORY.leaders)
    assert leaders.choose(DIRECTORY, {}, None, None).leader == roster[0]
    assert leaders.choose(DIRECTORY, {roster[0]: 2, roster[1]: 1}, None, "other").leader == roster[2]
    assert leaders.choose(DIRECTORY, {code: 1 for code in roster} | {roster[4]: 0}, "chengguan", None).leader == roster[4]
    assert leaders.choose(DIRECTORY, {}, None, None).how == "load"


def test_an_important_case_gets_the_leader_in_charge_of_its_unit_or_category_the_least_loaded_among_several() -> None:
    forestry = leaders.choose(DIRECTORY, {"leader06": 9}, "forestry", "forestry_rights")
    assert (forestry.leader, forestry.how) == ("leader06", "portfolio")  # the only one in charge, however loaded
    assert leaders.choose(DIRECTORY, {}, "police", None).leader == "leader05"  # by the lead unit alone
    assert leaders.choose(DIRECTORY, {}, "discipline", "public_order").leader == "leader05"  # by the category alone
    # 征地拆迁: the 县委副书记 and the 副县长 for natural resources are both in charge; the lighter one takes it.
    assert leaders.covering(DIRECTORY, "chengguan", "land_acquisition") == ["leader03", "leader06"]
    assert leaders.choose(DIRECTORY, {}, "chengguan", "land_acquisition").leader == "leader03"  # a tie: by code
    lighter = leaders.choose(DIRECTORY, {"leader03": 2, "leader06": 1, "leader01": 0}, "chengguan", "land_acquisition")
    assert lighter.leader == "leader06" and "leader03, leader06" in lighter.note


def _rules_copy(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(SAMPLE, target)
    return target


def _append(config: Path, text: str) -> int:
    path = config / "routing.yaml"
    before = path.read_text(encoding="utf-8")
    path.write_text(before + text, encoding="utf-8")
    return before.count("\n") + 1  # the first appended line


def test_conflicting_rules_stop_start_up_with_file_and_line(tmp_path: Path) -> None:
    config = _rules_copy(tmp_path)
    line = _append(config, "- id: forestry-twice\n  priority: 10\n  categories: [logging_permit]\n  lead: agri\n")
    with pytest.raises(ConfigError, match=rf"routing\.yaml:{line}: rules\[\d+\]: conflicts with rule 'logging-permit'"):
        load_routing(config, DIRECTORY)


@pytest.mark.parametrize("rule, message", [
    ("- id: bad-unit\n  priority: 5\n  lead: nowhere\n", "lead: unknown unit 'nowhere'"),
    ("- id: bad-category\n  priority: 5\n  categories: [ufo]\n  lead: agri\n", r"categories\[0\]: unknown category 'ufo'"),
    ("- id: bad-channel\n  priority: 5\n  channels: [pigeon]\n  lead: agri\n", r"channels\[0\]: unknown channel 'pigeon'"),
    ("- id: territorial\n  priority: 5\n  lead: agri\n", "id: duplicate rule id 'territorial'"),
])
def test_unknown_codes_in_rules_stop_start_up_with_file_and_line(tmp_path: Path, rule: str, message: str) -> None:
    config = _rules_copy(tmp_path)
    _append(config, rule)
    with pytest.raises(ConfigError, match=rf"routing\.yaml:\d+: rules\[\d+\]\.?{message}"):
        load_routing(config, DIRECTORY)


def test_routing_does_not_start_on_conflicting_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    from services.cli import main

    config = _rules_copy(tmp_path)
    line = _append(config, "- id: forestry-twice\n  priority: 10\n  categories: [logging_permit]\n  lead: agri\n")
    monkeypatch.setenv("XF_CONFIG_DIR", str(config))
    assert main(["run", "routing"]) == 2
    assert f"routing.yaml:{line}: rules[24]: conflicts with rule 'logging-permit'" in capsys.readouterr().err
