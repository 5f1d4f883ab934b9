"""Accusations (检举控告): a case that accuses a unit never reaches it, misconduct goes to the discipline
commission (纪委监委), a unit named as a place is no accusation, and the clerk's answer decides what the
text cannot. The rules without a bus first (names, aliases, clauses), then end to end through intake,
routing and a real nats-server."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from services.routing import accusations, domain, evaluate, service
from services.routing.accusations import unit_names
from services.routing.service import Routing
from shared import events as ev
from shared.directory import ConfigError, load_directory
from shared.rules import Accusations, load_routing
from shared.settings import REPO_ROOT, Settings
from tests.helpers import case_body, read_subject, resident_id, wait_until
from tests.test_routing import assigned, decide_objection, objections, publish, routed, submit, unit_do
from tests.test_routing_procedure import ask_routing

# SQLite only (tests/conftest.py): reading a complaint's text; routing on PostgreSQL runs in
# tests/test_routing.py.
pytestmark = pytest.mark.one_database

SAMPLE = REPO_ROOT / "deploy" / "config"
DIRECTORY = load_directory(SAMPLE)
CONFIG = load_routing(SAMPLE, DIRECTORY)


def assess(text: str, township: str = "xishan", marked: frozenset[str] = frozenset(),
           answer: bool | None = None, config: Accusations = CONFIG.accusations) -> accusations.Finding:
    title, _, content = text.partition("|")
    return accusations.assess(title, content, township, marked, answer, DIRECTORY, config)


# --- the rules ----------------------------------------------------------------------------------

def test_a_unit_is_named_by_its_full_name_its_short_name_or_an_alias_a_township_by_its_government() -> None:
    names = unit_names(DIRECTORY)
    assert {"县林业局", "林业局", "林业站"} <= names["forestry"]
    assert {"派出所", "公安局", "民警"} <= names["police"] and {"卫生院"} <= names["health"]
    assert {"社保局", "人社局"} <= names["hrss"] and {"市场监管局", "市场监管所", "工商所"} <= names["market"]
    assert {"税务局", "税务所"} <= names["tax"] and "国土所" in names["natres"]
    assert {"城关镇政府", "城关镇人民政府"} <= names["chengguan"]
    assert "城关镇" not in names["chengguan"]  # the residents' address: a place, never an actor
    assert not any("人民政府" in forms for forms in names.values())  # the county's and the city's: neither
    for text, unit in [("林业站站长收红包", "forestry"), ("派出所民警打人", "police"), ("工商所执法人员乱罚款", "market"),
                       ("税务所干部索要好处费", "tax"), ("国土所所长受贿", "natres"), ("社保局工作人员推诿", "hrss"),
                       ("城关镇政府干部贪污", "chengguan"), ("镇干部优亲厚友，低保给了亲戚", "xishan")]:
        assert set(assess(text).accused) == {unit}, text  # 镇干部: the case's own township


@pytest.mark.parametrize("text, accused, unclear", [
    # conduct: the unit, or its official, is the one who did it
    ("反映林业局干部吃拿卡要，要求查处", {"forestry"}, ()),
    ("举报|县林业局工作人员违规发放采伐证，收受好处。", {"forestry"}, ()),
    ("办证|我去县林业局办采伐证，工作人员吃拿卡要", {"forestry"}, ()),  # 工作人员: of the unit named last
    ("推诿|到林业局反映了三次都推诿不管", {"forestry"}, ()),  # inaction: the unit turned to is the actor
    ("打人|邻居打人，派出所不管", {"police"}, ()),
    ("看病|在卫生院看病被医生收红包", {"health"}, ()),  # 医生: the health bureau's people (an alias)
    ("林业站的人说不给两千块就别想批", {"forestry"}, ()),  # …的人: of the unit named in the sentence
    ("低保|柏树村书记优亲厚友，低保给了亲戚", {"beiling"}, ()),  # village cadres: their township answers
    ("低保|村干部优亲厚友，低保给了亲戚", {"xishan"}, ()),  # 村干部 before 干部: the longest word first
    ("送钱|举报了半年国土所没管，后来听说他家给国土所送了钱", {"natres"}, ()),  # a bribe: who received it
    ("查处|向生态环境分局举报了七八次，养猪场老板逢年过节送猪肉，要求纪委查处", {"ecology"}, ()),  # a demand
    # another party's conduct is its own, a villager's too
    ("工钱|包工头克扣我们工钱，就在林业站旁边的工地", set(), ()),
    ("投诉|我已经向县市场监督管理局投诉过商家乱收费，要求退款", set(), ()),  # the unit only heard it
    ("打人|邻居打人，我报了派出所", set(), ()),
    ("组长|肖庄村我们组的人都没选过组长，他也不管事", set(), ()),  # a village's people are villagers
    ("看病|在卫生院拔牙拔错了，找他们他们说再拔一颗不要钱", set(), ()),  # 不要钱: denied, no conduct
    # a place, or the one the resident turned to, is no accusation
    ("过期奶粉|在县市场监督管理局对面的超市买到过期奶粉，商家拒绝退货，要求赔偿", set(), ()),
    ("采伐证|想去县林业局办理采伐证，林业站说要等", set(), ()),
    ("占地|我是西山乡松岭村村民，反映邻居占我家的地", set(), ()),
    ("投诉|投诉到县市场监督管理局，一直没有回音", set(), ()),
    # named right after an accusation word, with no conduct word: only a clerk can tell
    ("投诉林业站|投诉林业站，办个证拖了三个月", set(), ("forestry",)),
    ("举报|举报西山乡人民政府违规占地", set(), ("xishan",)),
    # a conduct word in another sentence accuses nobody here
    ("林业站说要等。邻居收了别人的好处费", set(), ()),
])
def test_conduct_words_accuse_the_unit_named_as_the_one_who_did_it_in_the_same_sentence(
        text: str, accused: set[str], unclear: tuple[str, ...]) -> None:
    found = assess(text)
    assert (set(found.accused), found.unclear, found.misconduct) == (accused, unclear, bool(accused)), text


def test_the_clerks_answer_decides_what_the_text_cannot() -> None:
    unclear = "投诉林业站|投诉林业站，办个证拖了三个月"
    assert assess(unclear, answer=False) == accusations.Finding()  # a place: nothing, not even from conduct
    assert assess("反映林业局干部吃拿卡要", answer=False).accused == frozenset()
    yes = assess(unclear, answer=True)
    assert (set(yes.accused), yes.unclear, yes.misconduct) == ({"forestry"}, (), False)  # the superior leads
    # true and no unit marked nor named with an accusation word: every unit the text names as an actor
    assert set(assess("林业站办个证拖了三个月", answer=True).accused) == {"forestry"}
    # the clerk's marks: an answer; the text adds the units it accuses of conduct, never asks
    marked = assess("投诉林业站，派出所民警打人", marked=frozenset({"hrss"}))
    assert (set(marked.accused), marked.unclear, marked.misconduct) == ({"hrss", "police"}, (), True)
    # marked, and a conduct word of no one named: the clerk's accusation is of misconduct
    assert assess("收了五百元好处费才给办", marked=frozenset({"forestry"})).misconduct


def test_misconduct_goes_to_the_discipline_commission_with_the_superior_only_where_the_rules_say() -> None:
    found = assess("反映林业局干部吃拿卡要，要求查处")
    barred = set(found.accused) | domain.not_routed(DIRECTORY)
    d = accusations.to_commission(found, DIRECTORY, CONFIG.accusations, barred)
    assert (d.lead, d.co, d.rule_id, d.co_sees_contact) == ("discipline", (), "misconduct", False)
    assert "forestry" in d.note and "吃拿卡要" in d.note
    with_superior = CONFIG.accusations.model_copy(update={"superior_co_handles": True})
    assert accusations.to_commission(found, DIRECTORY, with_superior, barred).co == ("supervision_office",)
    assert accusations.to_commission(found, DIRECTORY, CONFIG.accusations, barred | {"discipline"}) is None
    off = CONFIG.accusations.model_copy(update={"misconduct_to_commission": False})
    assert accusations.to_commission(found, DIRECTORY, off, barred) is None  # then the superior (domain.route)
    assert accusations.to_commission(assess("投诉林业站", answer=True), DIRECTORY, CONFIG.accusations, barred) is None


def test_a_reviewing_body_the_case_accuses_never_answers_the_review_the_one_above_does() -> None:
    assert domain.reviewer(DIRECTORY, "xishan", "review", accused={"county_gov"}) == ("city_gov", "county_gov")
    assert domain.reviewer(DIRECTORY, "xishan", "review", accused={"county_gov", "city_gov"}) == (None, None)
    assert domain.reviewer(DIRECTORY, "xishan", "review", accused={"forestry"}) == ("county_gov", "xishan")


def test_the_accusation_is_decided_at_receipt_and_kept_a_case_stored_before_is_read_again() -> None:
    from types import SimpleNamespace

    from services.routing import service
    routing = SimpleNamespace(directory=DIRECTORY, config=CONFIG)
    brief = {"title": "反映", "content": "反映林业局干部吃拿卡要"}
    kept = SimpleNamespace(accused={"units": [], "misconduct": False, "conduct": [], "marked": [], "accuses_unit": False},
                           channel="walk_in", township="xishan", category="logging_permit", brief=brief)
    assert service.found_of_row(routing, kept) == accusations.Finding()  # the clerk said no: it stays no
    older = SimpleNamespace(accused=[], channel="walk_in", township="xishan", category="logging_permit", brief=brief)
    found = service.found_of_row(routing, older)  # stored before routing kept its decision: read again
    assert (set(found.accused), found.misconduct) == ({"forestry"}, True)


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(SAMPLE, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_an_alias_names_one_unit_and_a_word_sits_in_one_list_or_the_service_does_not_start(tmp_path: Path) -> None:
    config = _copy(tmp_path)
    _edit(config / "departments.yaml", "aliases: [卫健局,", "aliases: [林业站, 卫健局,")
    with pytest.raises(ConfigError, match=r"departments\.yaml:\d+: departments\[1\]\.aliases\[0\]: alias '林业站' "
                                          r"already names unit 'forestry'"):
        load_directory(config)
    config = _copy(tmp_path / "again")
    _edit(config / "routing.yaml", "own_township_names: [镇政府,", "own_township_names: [派出所, 镇政府,")
    with pytest.raises(ConfigError, match=r"routing\.yaml:\d+: accusations\.own_township_names\[0\]: '派出所' already "
                                          r"names unit 'police'"):
        load_routing(config, load_directory(config))
    _edit(config / "routing.yaml", "own_township_names: [派出所, 镇政府,", "own_township_names: [镇政府,")
    _edit(config / "routing.yaml", "party_words: [商家,", "party_words: [干部, 商家,")
    with pytest.raises(ConfigError, match=r"accusations\.party_words\[0\]: '干部' is in official_words too"):
        load_routing(config, load_directory(config))


def test_the_commission_is_a_unit_of_the_directory(tmp_path: Path) -> None:
    config = _copy(tmp_path)
    _edit(config / "county.yaml", "discipline_commission: discipline", "discipline_commission: nobody")
    with pytest.raises(ConfigError, match=r"county\.yaml:\d+: discipline_commission: unknown unit 'nobody'"):
        load_directory(config)


# --- end to end ---------------------------------------------------------------------------------

def test_a_complaint_of_forestry_officials_misconduct_goes_to_the_commission_and_never_reaches_forestry(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine,
        token: Callable[..., dict]) -> None:
    number = submit(intake, category="logging_permit", title="反映林业局干部吃拿卡要，要求查处",
                    content="我家办采伐证，县林业局的干部一拖再拖，私下要五百块钱才给办。")
    events = assigned(settings, [intake_db, routing_db], number)
    assert [(e.unit, e.role, e.rule_id) for e in events] == [("discipline", "lead", "misconduct")]
    assert "forestry" in events[0].note and "吃拿卡要" in events[0].note
    why = routed(routing, number)
    assert (why["accused"], why["misconduct"], why["triage"]) == (["forestry"], True, [])
    answer = ask_routing(settings, "forestry", number)
    assert (answer.assigned, answer.error) == (False, "not_assigned")
    assert ask_routing(settings, "discipline", number).role == "lead"
    # forestry's own token: the case does not exist for it, as one that does not exist at all
    as_forestry = routing.get(f"/api/v1/routing/{number}", headers=token("unit", unit="forestry"))
    missing = routing.get("/api/v1/routing/QS-2026-999999", headers=token("unit", unit="forestry"))
    assert as_forestry.status_code == missing.status_code == 404
    assert routing.get(f"/api/v1/routing/{number}", headers=token("unit", unit="discipline")).status_code == 200
    assert not [e for _, e in read_subject(settings.nats_url, "cases.*.forestry") if e.case_id == number]


def test_a_consumer_complaint_naming_the_market_bureau_as_a_place_stays_with_the_market_bureau(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = submit(intake, category="consumer_rights", title="买到过期奶粉商家不退",
                    content="在县市场监督管理局对面的超市买到过期奶粉，商家拒绝退货，已经向县市场监督管理局投诉过，"
                            "要求赔偿。")
    events = assigned(settings, [intake_db, routing_db], number)
    assert [(e.unit, e.role, e.rule_id) for e in events] == [("market", "lead", "consumer-rights")]
    why = routed(routing, number)
    assert (why["accused"], why["misconduct"], why["triage"]) == ([], False, [])
    assert ask_routing(settings, "market", number).assigned


def _received(case_id: str, content: str, accuses_unit: bool | None, **fields) -> ev.CaseReceived:  # noqa: ANN003
    return ev.CaseReceived(case_id=case_id, actor=ev.Actor(kind="clerk", id="desk1"), channel="walk_in",
                           title=fields.pop("title", "采伐证办不下来"), content=content,
                           category=fields.pop("category", "logging_permit"), township="xishan",
                           resident=ev.ResidentRef(name="甲", masked_id=resident_id(1)[:6] + "*" * 8 + "0015"),
                           occurred_at=datetime.now(timezone.utc), accuses_unit=accuses_unit, **fields)


def test_the_clerks_answer_false_keeps_a_named_unit_routable_and_true_keeps_the_case_away_from_it(
        routing: TestClient, settings: Settings, routing_db: Engine) -> None:
    text = "投诉县林业局，采伐证申请交上去三个月了还没批下来"
    place, accusation = _received("QS-2026-900101", text, False), _received("QS-2026-900102", text, True)
    wait_until(lambda: routing.get("/readyz").status_code == 200, what="routing (and its stream) to be ready")
    publish(settings, place, accusation)
    wait_until(lambda: len({e.case_id for _, e in read_subject(settings.nats_url, "cases.assigned.*")}) == 2,
               what="both cases assigned")
    got = {e.case_id: (e.unit, e.role) for _, e in read_subject(settings.nats_url, "cases.assigned.*")}
    assert got == {place.case_id: ("forestry", "lead"), accusation.case_id: ("supervision_office", "lead")}
    assert routed(routing, place.case_id)["accused"] == []
    assert (routed(routing, accusation.case_id)["accused"], routed(routing, accusation.case_id)["misconduct"]) == (
        ["forestry"], False)  # no conduct word: the superior leads, as for any accusation the clerk marks
    assert read_subject(settings.nats_url, "cases.triage") == []


def test_the_clerks_answer_at_intake_reaches_routing(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    text = {"category": "logging_permit", "title": "投诉县林业局", "content": "投诉县林业局，采伐证三个月还没批下来"}
    place = submit(intake, n=1, accuses_unit=False, **text)
    accusation = submit(intake, n=2, accuses_unit=True, **text)
    unasked = submit(intake, n=3, **text)
    assert intake.get(f"/api/v1/cases/{place}").json()["accuses_unit"] is False
    assert [e.unit for e in assigned(settings, [intake_db, routing_db], place)] == ["forestry"]
    assert [e.unit for e in assigned(settings, [intake_db, routing_db], accusation)] == ["supervision_office"]
    wait_until(lambda: any(t["case_id"] == unasked for t in routing.get("/api/v1/triage").json()), what="triage")
    received = {e.case_id: e.accuses_unit for _, e in read_subject(settings.nats_url, "cases.received")}
    assert received == {place: False, accusation: True, unasked: None}
    contradiction = intake.post("/api/v1/cases", json=case_body(n=4, accuses_unit=False, accused_units=["forestry"]))
    assert contradiction.status_code == 422 and "accuses_unit" in contradiction.text


def test_an_unanswered_case_naming_a_unit_with_only_an_accusation_word_goes_to_a_clerk(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    number = submit(intake, category="logging_permit", title="投诉林业站",
                    content="投诉林业站，采伐证申请交上去三个月了还没批下来。")
    wait_until(lambda: any(t["case_id"] == number for t in routing.get("/api/v1/triage").json()),
               what="the case in triage")
    [item] = [t for t in routing.get("/api/v1/triage").json() if t["case_id"] == number]
    assert item["reason"] == "accusation_unclear" and "forestry (林业站)" in item["detail"]
    [(_, triage)] = read_subject(settings.nats_url, "cases.triage")
    assert (triage.reason, triage.case_id) == ("accusation_unclear", number)
    assert routed(routing, number)["accused"] == []
    # The clerk reads it: a slow permit, no accusation; forestry may take it.
    decided = routing.post(f"/api/v1/triage/{number}/decision", json={"unit": "forestry", "reason": "办理时限问题，非检举"})
    assert decided.status_code == 200, decided.text
    assert [(e.unit, e.rule_id) for e in assigned(settings, [intake_db, routing_db], number)] == [("forestry", "triage")]


def test_an_accused_unit_is_never_given_the_case_when_it_is_routed_again_nor_by_a_clerk(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine) -> None:
    # Marked by the clerk, no conduct word: the superior (督办科) leads; its objection approved, the
    # commission above it; the commission's too, a clerk decides, and forestry stays out of reach.
    number = submit(intake, category="logging_permit", title="采伐证发放不公", accused_units=["forestry"],
                    content="林业站发采伐证只给熟人。")
    assert [e.unit for e in assigned(settings, [intake_db, routing_db], number)] == ["supervision_office"]
    for unit in ("supervision_office", "discipline"):
        unit_do(settings, unit, "return_case", number, reason="请另行研究")
        wait_until(lambda u=unit: objections(routing, number, u, "pending"), what=f"{unit}'s objection recorded")
        decide_objection(settings, number, unit)
        if unit == "supervision_office":
            wait_until(lambda: any(a["unit"] == "discipline" and a["active"]
                                   for a in routed(routing, number)["assignments"]), what="routed again")
    wait_until(lambda: any(t["case_id"] == number for t in routing.get("/api/v1/triage").json()), what="triage")
    refused = routing.post(f"/api/v1/triage/{number}/decision", json={"unit": "forestry", "reason": "x"})
    assert refused.status_code == 409 and "accuses forestry" in refused.json()["message"]
    assert "forestry" not in {e.unit for e in assigned(settings, [intake_db, routing_db], number)}


# --- hints: an accusation left unsaid ------------------------------------------------------------

@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Routing:
    return evaluate.offline(Settings(data_dir=tmp_path_factory.mktemp("var")))


def explained(routing: Routing, text: str, category: str | None, answer: bool | None = None,
              township: str = "xishan") -> domain.Explanation:
    title, _, content = text.partition("|")
    return service.explain(routing, domain.CaseFacts("walk_in", township, category, title, content,
                                                     accuses_unit=answer))


@pytest.mark.parametrize("text, category, unit", [
    ("采伐证一直压着|林业站的老周说今年指标紧，叫我晚上去他家坐一坐，我没去，到现在还压着", "logging_permit", "forestry"),
    ("农机补贴|农机补贴排了一年，排在后面的都拿到了，那几家都有人在农业局上班", "agri_subsidy", "agri"),
    ("做B超|卫生院做B超，不塞钱就排到下个月", "medical_dispute", "health"),  # a threat: 不塞钱就… is no denial
    ("笔录变了|跟人打了一架，签过字的笔录后来变了样，听说对方跟所长走得很近", "public_order", "police"),  # 所长: no unit named
])
def test_a_hint_of_accusation_against_the_unit_that_would_be_given_the_case_keeps_it_away(
        offline: Routing, text: str, category: str, unit: str) -> None:
    kept = explained(offline, text, category)
    assert kept.decision.lead != unit and unit not in kept.decision.co, text
    assert kept.decision.lead == "discipline" or kept.triage_reason == "accusation_unclear", text
    # the clerk answered that it accuses no one: the unit handles it
    assert explained(offline, text, category, answer=False).decision.lead == unit


def test_a_hint_about_a_unit_named_as_a_place_or_not_given_the_case_routes_as_usual(offline: Routing) -> None:
    text = "邻居占路|邻居仗着亲戚多，砌墙占了我家出门的路，我在林业站门口碰到他还骂我"
    assert explained(offline, text, "neighbor_dispute").decision.lead == "xishan"
    text = "工钱|老板欠了三个月工钱，他亲戚在林业站上班，说我们告也没用"  # forestry would not be given it
    assert explained(offline, text, "wage_arrears").decision.lead == "hrss"


def test_a_text_the_accusation_model_finds_likely_an_accusation_goes_to_a_clerk_when_it_names_the_handler(
        offline: Routing) -> None:
    text = "劳动监察|去劳动监察大队反映老板欠薪，来了两个人，中午跟老板在馆子里吃了一顿，回来就说老板困难，叫我们等"
    likely = offline.classifier.accusation_probability(*text.split("|"))
    assert likely > offline.classifier.accusation_probability("老板不给钱", "在工地干了三个月活，包工头跑了")

    def at(threshold: float, commission: float = 1.0) -> domain.Explanation:
        settings = offline.config.classifier.model_copy(update={"accusation_threshold": threshold,
                                                                "commission_threshold": commission})
        routing = Routing(**{**offline.__dict__, "config": offline.config.model_copy(update={"classifier": settings})})
        return explained(routing, text, "wage_arrears")
    asked = at(max(likely - 0.01, 0.001))
    assert asked.triage_reason == "accusation_unclear" and "likely an accusation" in asked.decision.note
    assert at(min(likely + 0.01, 1.0)).decision.lead == "hrss"
    # likelier than the commission's threshold: a 检举控告 of the unit it would have gone to
    taken = at(0.001, max(likely - 0.01, 0.001))
    assert (taken.decision.lead, taken.decision.rule_id, taken.accused) == ("discipline", "misconduct", ["hrss"])
    assert "likely" in taken.decision.note


def test_a_likely_accusation_of_the_unit_it_would_go_to_goes_to_the_commission_and_the_unit_never_sees_it(
        intake: TestClient, routing: TestClient, settings: Settings, intake_db: Engine, routing_db: Engine,
        token: Callable[..., dict]) -> None:
    # no conduct word: the accusation model reads it (routing.yaml classifier.commission_threshold)
    number = submit(intake, category="wage_arrears", title="劳动监察",
                    content="去劳动监察大队反映老板欠薪，来了两个人，中午跟老板在馆子里吃了一顿，回来就说老板困难，叫我们等")
    events = assigned(settings, [intake_db, routing_db], number)
    assert [(e.unit, e.role, e.rule_id) for e in events] == [("discipline", "lead", "misconduct")]
    why = routed(routing, number)
    assert (why["accused"], why["misconduct"], why["triage"]) == (["hrss"], True, [])  # kept with the case
    assert routing.get(f"/api/v1/routing/{number}", headers=token("unit", unit="hrss")).status_code == 404
    assert ask_routing(settings, "hrss", number).error == "not_assigned"
