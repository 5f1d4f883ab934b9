"""``xinfang routing evaluate FILE``: routing's real decision (:func:`services.routing.service.explain`:
classifier, rules, accusations) over labelled examples filed without a category, as a clerk at the
walk-in desk of the example's township would file them; no database, no NATS.

An example's expected lead: the discipline commission (纪委监委) when it accuses a unit (检举控告), else the
lead the rules give its category in its township. Figures: lead-unit accuracy, triage rate, confident
misroutes (a wrong unit at or above the confidence threshold, i.e. not sent to triage), accusations
kept away from the accused unit, a table by category, the calibration of the classifier's unit
confidence, and what other thresholds would give. ``--cv K``: each fold evaluated by a model trained
on the file's other folds only (for the training part: how min_confidence and the knobs are chosen).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from services.routing import domain, service
from services.routing.classifier import Classifier, Example, fold_of, load_corpus
from services.routing.domain import CaseFacts
from services.routing.service import Routing, RoutingMetrics
from shared.clock import SystemClock
from shared.directory import load_directory
from shared.rules import load_routing
from shared.settings import Settings

DISCIPLINE = "discipline"  # 县纪委监委: where 检举控告 go
THRESHOLDS = [round(0.30 + 0.05 * i, 2) for i in range(14)]
BINS = [(0.0, 0.3), (0.3, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.01)]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def offline(settings: Settings, corpus: list[Example] | Path | None = None) -> Routing:
    """Routing's decision without its database or the bus: the classifier of the shipped corpus (or
    of ``corpus``), without the clerks' examples."""
    directory = load_directory(settings.config_dir)
    config = load_routing(settings.config_dir, directory)
    classifier = Classifier(directory, settings.data_dir / "cache" / "jieba",
                            **({} if corpus is None else {"corpus": corpus}))
    return Routing(uow=None, directory=directory, config=config, classifier=classifier, clock=SystemClock(),
                   metrics=RoutingMetrics(), settings=settings)


def expected(routing: Routing, example: dict) -> str | None:
    if example.get("accused_unit"):
        return DISCIPLINE
    facts = CaseFacts("walk_in", example["township"], example["category"], example["title"], example["content"])
    return domain.route(facts, routing.config, routing.directory).lead


@dataclass(frozen=True)
class Outcome:
    id: str
    category: str  # the example's
    accused: str | None
    expected: str | None
    lead: str | None  # routing's decision; None: triage
    reason: str | None  # the triage reason
    confidence: float | None  # the classifier's confidence in the lead unit
    guessed: str | None  # the category routing used or suggested
    forced: str | None  # the lead at any confidence (the threshold table, the calibration)


def decide(routing: Routing, example: dict) -> Outcome:
    facts = CaseFacts("walk_in", example["township"], None, example["title"], example.get("content") or "")
    real = service.explain(routing, facts)
    anyway = Routing(**{**routing.__dict__, "config": routing.config.model_copy(update={
        "classifier": routing.config.classifier.model_copy(update={"min_confidence": 1e-9})})})
    forced = service.explain(anyway, facts)
    return Outcome(example["id"], example["category"], example.get("accused_unit"), expected(routing, example),
                   real.decision.lead, real.triage_reason, forced.confidence, real.category, forced.decision.lead)


def figures(outcomes: list[Outcome], min_confidence: float) -> dict:
    n = len(outcomes) or 1
    right = sum(o.lead == o.expected for o in outcomes)
    triaged = sum(o.lead is None for o in outcomes)
    misroutes = [o for o in outcomes if o.lead is not None and o.lead != o.expected]
    accusations = [o for o in outcomes if o.accused]
    return {
        "examples": len(outcomes), "min_confidence": min_confidence,
        "accuracy": round(right / n, 4), "triage_rate": round(triaged / n, 4),
        "confident_misroutes": round(len(misroutes) / n, 4),
        "accusations": {"examples": len(accusations),
                        "kept_away": round(sum(o.lead != o.accused for o in accusations) / (len(accusations) or 1), 4),
                        "to_discipline": round(sum(o.lead == DISCIPLINE for o in accusations)
                                               / (len(accusations) or 1), 4)},
        "by_category": by_category(outcomes),
        "calibration": calibration(outcomes),
        "calibration_error": calibration_error(outcomes),
        "by_threshold": by_threshold(outcomes),
        "misrouted": [{"id": o.id, "category": o.category, "expected": o.expected, "lead": o.lead,
                       "category_used": o.guessed, "confidence": o.confidence} for o in misroutes],
    }


def by_category(outcomes: list[Outcome]) -> dict:
    rows: dict[str, dict] = {}
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups["(accusation)" if o.accused else o.category].append(o)
    for key in sorted(groups):
        group = groups[key]
        wrong = Counter(o.lead for o in group if o.lead is not None and o.lead != o.expected)
        guessed = Counter(o.guessed for o in group if o.guessed != o.category)
        rows[key] = {"examples": len(group), "right": sum(o.lead == o.expected for o in group),
                     "triage": sum(o.lead is None for o in group), "wrong": sum(wrong.values()),
                     "wrong_units": dict(wrong.most_common()),
                     "other_categories": {k or "-": v for k, v in guessed.most_common()}}
    return rows


def calibration(outcomes: list[Outcome]) -> list[dict]:
    """Confidence bins vs how often the unit at that confidence was the right one."""
    scored = [(o.confidence, o.forced == o.expected) for o in outcomes if o.confidence is not None]
    out = []
    for lo, hi in BINS:
        inside = [(c, ok) for c, ok in scored if lo <= c < hi]
        if inside:
            out.append({"bin": f"{lo:.2f}-{min(hi, 1.0):.2f}", "examples": len(inside),
                        "mean_confidence": round(sum(c for c, _ in inside) / len(inside), 3),
                        "accuracy": round(sum(ok for _, ok in inside) / len(inside), 3)})
    return out


def calibration_error(outcomes: list[Outcome]) -> float:
    """Expected calibration error over the bins: the mean gap between confidence and accuracy."""
    bins = calibration(outcomes)
    n = sum(b["examples"] for b in bins) or 1
    return round(sum(b["examples"] * abs(b["accuracy"] - b["mean_confidence"]) for b in bins) / n, 3)


def by_threshold(outcomes: list[Outcome]) -> list[dict]:
    """What each min_confidence would give (the lead at any confidence, triage below the threshold)."""
    n = len(outcomes) or 1
    out = []
    for t in THRESHOLDS:
        leads = [(None if o.confidence is not None and o.confidence < t else o.forced, o.expected) for o in outcomes]
        out.append({"min_confidence": t, "accuracy": round(sum(a == b for a, b in leads) / n, 4),
                    "triage_rate": round(sum(a is None for a, _ in leads) / n, 4),
                    "confident_misroutes": round(sum(a is not None and a != b for a, b in leads) / n, 4)})
    return out


def run(settings: Settings, path: Path, cv: int = 0) -> dict:
    examples = read(path)
    if not cv:
        routing = offline(settings)
        outcomes = [decide(routing, e) for e in examples]
    else:
        outcomes = []
        labelled = [(e, Example(e["title"], e.get("content") or "", e["category"], accuses=bool(e.get("accused_unit"))))
                    for e in examples]
        for fold in range(cv):
            rest = [x for e, x in labelled if fold_of(x, cv) != fold]
            routing = offline(settings, rest)
            outcomes += [decide(routing, e) for e, x in labelled if fold_of(x, cv) == fold]
        outcomes.sort(key=lambda o: o.id)
    result = {"file": str(path), "cv_folds": cv, "corpus": "the file's other folds" if cv else
              f"{len(load_corpus())} examples of services/routing/corpus/train.jsonl",
              **figures(outcomes, routing.config.classifier.min_confidence)}
    result["params"] = routing.classifier.params.__dict__ | {"temperature": round(1 / routing.classifier.beta, 3)}
    return result


def render(r: dict) -> str:
    pct = "{:.1%}".format
    lines = [f"{r['file']}: {r['examples']} examples filed without a category (walk-in), "
             f"{'cross-validated in ' + str(r['cv_folds']) + ' folds' if r['cv_folds'] else 'model: ' + r['corpus']}",
             f"lead-unit accuracy    {pct(r['accuracy'])}",
             f"triage rate           {pct(r['triage_rate'])}  (min_confidence {r['min_confidence']})",
             f"confident misroutes   {pct(r['confident_misroutes'])}",
             f"accusations           {r['accusations']['examples']} examples, {pct(r['accusations']['kept_away'])} kept "
             f"away from the accused unit, {pct(r['accusations']['to_discipline'])} to {DISCIPLINE}",
             "", f"{'category':<22}{'n':>4}{'right':>7}{'triage':>8}{'wrong':>7}  wrong units / categories used instead"]
    for key, row in r["by_category"].items():
        wrong = ", ".join(f"{k}×{v}" for k, v in row["wrong_units"].items())
        other = ", ".join(f"{k}×{v}" for k, v in list(row["other_categories"].items())[:3])
        lines.append(f"{key:<22}{row['examples']:>4}{row['right']:>7}{row['triage']:>8}{row['wrong']:>7}  "
                     f"{wrong}{' / ' if wrong and other else ''}{other}")
    lines += ["", f"calibration (the unit's confidence vs how often that unit was right; "
                  f"expected calibration error {r['calibration_error']})",
              f"{'confidence':<12}{'n':>5}{'mean':>8}{'right':>8}"]
    lines += [f"{b['bin']:<12}{b['examples']:>5}{b['mean_confidence']:>8.3f}{b['accuracy']:>8.3f}" for b in r["calibration"]]
    lines += ["", "other thresholds", f"{'min_conf':<10}{'accuracy':>10}{'triage':>9}{'misroutes':>11}"]
    lines += [f"{t['min_confidence']:<10}{pct(t['accuracy']):>10}{pct(t['triage_rate']):>9}"
              f"{pct(t['confident_misroutes']):>11}" for t in r["by_threshold"]]
    return "\n".join(lines) + "\n"
