"""Routing's classifier without a bus: deterministic, calibrated, learning from units as well as
categories; and ``xinfang routing evaluate`` on the shipped corpus."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from services.routing import evaluate, learning
from services.routing.classifier import CORPUS, Classifier, Example, Guess, load_corpus
from services.routing.domain import CaseFacts
from shared.directory import load_directory
from shared.rules import load_routing
from shared.settings import REPO_ROOT, Settings

SAMPLE = REPO_ROOT / "deploy" / "config"
DIRECTORY = load_directory(SAMPLE)
CONFIG = load_routing(SAMPLE, DIRECTORY)
HELDOUT = CORPUS.with_name("heldout.jsonl")
TEXTS = [("老板不给钱", "在工地干了三个月活，包工头跑了，工钱一分没拿到"),
         ("我家老人没人管", "三个儿子都不管我妈，住的房子漏雨"),
         ("村里的账不公开", "卖山的钱到哪里去了谁也不知道"),
         ("后山有人偷偷砍树", "半夜开车来拉木头"),
         ("有个情况想反映", "请领导关心一下我们的事情")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jieba")


@pytest.fixture(scope="module")
def classifier(cache: Path) -> Classifier:
    return Classifier(DIRECTORY, cache)


def answers(c: Classifier) -> list[dict]:
    return [c.guess(t, x).posterior for t, x in TEXTS]


def test_the_same_examples_in_any_order_give_the_same_model(cache: Path) -> None:
    corpus = load_corpus()
    shuffled = corpus[:]
    random.Random(7).shuffle(shuffled)
    a, b = Classifier(DIRECTORY, cache, corpus), Classifier(DIRECTORY, cache, shuffled[:-1] + shuffled[-1:])
    assert a.beta == b.beta and answers(a) == answers(b)
    taught = [Example("光伏板的钱不给", "装在屋顶的光伏板发电的钱一年没给", None, ("agri_subsidy", "consumer_rights")),
              Example("提灌站电费太贵", "抽水浇地一度电收两块", "water_conservancy")]
    a.learn(taught)
    b.learn(list(reversed(taught)))
    assert answers(a) == answers(b) != answers(Classifier(DIRECTORY, cache, corpus))


def test_a_category_is_suggested_with_a_calibrated_confidence(classifier: Classifier) -> None:
    category, confidence, hits = classifier.classify("包工头拖欠农民工工资", "干了半年活，工钱一直不给")
    assert category == "wage_arrears" and confidence >= 0.9 and hits >= 3
    assert classifier.classify("", "") == (None, 0.0, 0)  # nothing the model knows: no guess
    posterior = classifier.guess("有个情况想反映", "请领导关心一下我们的事情").posterior
    assert abs(sum(posterior.values()) - 1.0) < 1e-9 and max(posterior.values()) < 0.6  # nothing specific: unsure


def test_the_lead_units_confidence_adds_up_the_categories_its_rules_give_it() -> None:
    guess = Guess({"land_contract": 0.4, "neighbor_dispute": 0.35, "forestry_rights": 0.25}, hits=5)
    facts = CaseFacts("walk_in", "xishan", None, "t", "c")
    pick = guess.by_unit(learning.leads(facts, CONFIG, DIRECTORY))
    assert (pick.unit, pick.category, round(pick.confidence, 2)) == ("xishan", "land_contract", 0.75)
    assert pick.units == {"xishan": 0.75, "forestry": 0.25}
    assert Guess({"land_contract": 1.0}, hits=0).by_unit(lambda c: "xishan").unit is None


def test_a_unit_teaches_the_categories_whose_rule_leads_to_it() -> None:
    row = {"title": "t", "content": "c", "township": "xishan", "channel": "walk_in", "unit": "hrss", "category": None}
    assert learning.example_of(row, CONFIG, DIRECTORY).candidates == ("social_insurance", "wage_arrears")
    given = learning.example_of({**row, "category": "wage_arrears"}, CONFIG, DIRECTORY)
    assert (given.category, given.candidates) == ("wage_arrears", ())
    # A category the clerk gave that leads elsewhere teaches nothing of itself; a unit no rule leads to, nothing.
    assert learning.example_of({**row, "category": "education"}, CONFIG, DIRECTORY).category is None
    assert learning.example_of({**row, "unit": "supervision_office"}, CONFIG, DIRECTORY) is None


def test_a_case_teaches_once_its_latest_label() -> None:
    base = {"title": "t", "content": "c", "township": "xishan", "channel": "walk_in", "category": None}
    rows = [{**base, "case_id": "A", "event_id": "e2", "unit": "hrss", "occurred_at": 2},
            {**base, "case_id": "A", "event_id": "e1", "unit": "agri", "occurred_at": 1},
            {**base, "case_id": "B", "event_id": "e3", "unit": "agri", "occurred_at": 1}]
    assert [(r["case_id"], r["unit"]) for r in learning.latest_per_case(rows)] == [("A", "hrss"), ("B", "agri")]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> dict:
    settings = Settings(data_dir=tmp_path_factory.mktemp("var"))
    return evaluate.run(settings, HELDOUT)


def test_the_confidence_means_what_it_says_on_the_held_out_part(heldout: dict) -> None:
    assert heldout["calibration_error"] <= 0.15  # on texts the model never saw
    bins = heldout["calibration"]

    def right(lo: float, hi: float) -> float:
        inside = [b for b in bins if lo <= b["mean_confidence"] < hi]
        return sum(b["accuracy"] * b["examples"] for b in inside) / sum(b["examples"] for b in inside)
    assert right(0.9, 1.01) >= 0.85 and right(0.9, 1.01) - right(0.0, 0.6) >= 0.2


# The figures the README reports for the shipped corpus and model, less a margin: a check that a change
# of the model or the lexicon does not make routing worse (not of speed).
FLOOR = {"accuracy": 0.83, "triage_rate": 0.08, "confident_misroutes": 0.10, "kept_away": 0.92}


def test_the_shipped_corpus_and_model_do_no_worse_on_the_held_out_part_than_the_readme_says(heldout: dict) -> None:
    assert heldout["examples"] >= 150 and heldout["accusations"]["examples"] > 0
    assert heldout["accuracy"] >= FLOOR["accuracy"] and heldout["triage_rate"] <= FLOOR["triage_rate"]
    assert heldout["confident_misroutes"] <= FLOOR["confident_misroutes"]
    assert heldout["accusations"]["kept_away"] >= FLOOR["kept_away"]


def test_xinfang_routing_evaluate_prints_the_figures_and_writes_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from services.cli import main

    small = tmp_path / "small.jsonl"
    rows = [{"id": "t-1", "title": "老板不给钱", "content": "在工地干了三个月活，包工头跑了，工钱一分没拿到",
             "township": "xishan", "category": "wage_arrears", "accused_unit": None, "note": ""},
            {"id": "t-2", "title": "反映林业局干部吃拿卡要", "content": "办采伐证要送烟送酒，要求查处",
             "township": "xishan", "category": "logging_permit", "accused_unit": "forestry", "note": ""},
            {"id": "t-3", "title": "隔壁砌墙堵了路", "content": "邻居砌墙把我家出门的路堵了",
             "township": "nanhe", "category": "neighbor_dispute", "accused_unit": None, "note": ""}]
    small.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setenv("XF_DATA_DIR", str(tmp_path / "var"))
    out = tmp_path / "figures.json"
    assert main(["routing", "evaluate", str(small), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lead-unit accuracy" in printed and "calibration" in printed
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["examples"] == 3 and figures["accusations"]["examples"] == 1
    assert set(figures["by_category"]) == {"(accusation)", "wage_arrears", "neighbor_dispute"}
    assert figures["accusations"]["kept_away"] == 1.0  # never the forestry bureau
    assert 0 <= figures["accuracy"] <= 1 and figures["calibration"] and figures["by_threshold"]


def test_the_recorded_calibration_is_the_one_fitted_for_the_shipped_corpus(cache: Path) -> None:
    """corpus/fitted.json spares every routing start the cross-validation: it must be what fitting the
    shipped corpus gives (``xinfang routing fit`` after changing the corpus or the keywords)."""
    from services.routing import classifier as module

    shipped = Classifier(DIRECTORY, cache)
    record = module.shipped_fit(shipped.key)
    assert record is not None, "corpus/fitted.json is stale: run `xinfang routing fit`"
    with module._FITTED_LOCK:
        module._FITTED.pop(shipped.key)
    fitted = Classifier(DIRECTORY, cache, fitted=None)
    assert (fitted.beta, fitted.accusation.beta) == (record["beta"], record["accusation_beta"])
    text = ("做B超", "卫生院做B超，不塞钱就排到下个月")
    assert fitted.guess(*text) == shipped.guess(*text)
    assert fitted.accusation_probability(*text) == shipped.accusation_probability(*text)
