"""Routing's classifier: the category of a case filed without one, and how sure it is.

Multinomial naive Bayes over jieba words and character bigrams (the title's count ``title_weight``
times), trained on the labelled corpus (``corpus/train.jsonl``) plus what the clerks taught it
(:mod:`services.routing.learning`), with each category's keywords (``categories.yaml``) and the
words residents use for it (:mod:`services.routing.lexicon`) as pseudo-counts. A text's scores are
divided by the square root of its length (a long letter is not that much surer than a short one)
and calibrated by one temperature, fitted by k-fold cross-validation on the corpus to minimise the
log loss. Routing decides on the lead unit, not the category: :meth:`Guess.by_unit` adds up the
categories whose rule gives the same lead (all the township matters go to the township alike).

Deterministic: the same examples in any order give the same model (examples and features are
counted in a sorted order, folds are chosen by a hash of the text), so every replica, and a
retrain from the stream, answers alike. Pure Python: a few thousand features, no numpy.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.routing import lexicon
from shared.directory import Directory

CORPUS = Path(__file__).parent / "corpus" / "train.jsonl"
# The temperatures fitted for the shipped corpus, keywords and knobs (``xinfang routing fit`` writes it):
# a process starts without the cross-validation (≈ 3 s of each routing start); a key it does not
# hold (another corpus, other keywords) is fitted as before.
FITTED = Path(__file__).parent / "corpus" / "fitted.json"

_DICTIONARY: list[tuple[dict, int]] = []  # jieba's prefix dictionary, loaded once per process
_DICTIONARY_LOCK = threading.Lock()
# corpus fingerprint → (its features, the fitted inverse temperature, the accusation model)
_FITTED: dict[str, tuple[list, float, AccusationModel]] = {}
_FITTED_LOCK = threading.Lock()


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


@dataclass(frozen=True)
class Params:
    """The model's knobs, chosen by cross-validation on the training part (``xinfang routing evaluate
    --cv``), never on the held-out part."""

    title_weight: float = 2.0  # a title's words and bigrams count this many times
    alpha: float = 0.3  # additive smoothing of every feature's count
    keyword_prior: float = 10.0  # pseudo-counts of a category's keyword (as a word and as bigrams)
    lexicon_prior: float = 5.0  # pseudo-counts of a word of lexicon.py, how residents say it
    length_power: float = 0.5  # scores divided by the text's known mass to this power before the temperature
    learned_weight: float = 1.0  # a clerk's decision counts as this many corpus examples
    folds: int = 5  # cross-validation of the temperature


@dataclass(frozen=True)
class Example:
    """A labelled text: its category, or (a clerk named a unit, not a category) the categories whose
    rule leads to that unit, shared by the corpus model's belief among them."""

    title: str
    content: str
    category: str | None = None
    candidates: tuple[str, ...] = ()
    weight: float = 1.0
    accuses: bool | None = None  # the corpus's label: does it accuse a unit (检举控告)? None: not known

    @property
    def key(self) -> tuple:
        return (self.title, self.content, self.category or "", self.candidates, self.weight, self.accuses)


@dataclass(frozen=True)
class Guess:
    """The calibrated posterior over categories, most probable first, and the evidence (``hits``: the
    words and bigrams of the text the model knows, the title's ``title_weight`` times)."""

    posterior: dict[str, float]
    hits: int

    def best(self) -> tuple[str | None, float]:
        if not self.hits:
            return None, 0.0
        category = next(iter(self.posterior))
        return category, self.posterior[category]

    def by_unit(self, lead_of: Callable[[str], str | None]) -> UnitGuess:
        """The lead unit to route on: the one whose categories (``lead_of``: the rules' lead for a
        category, for this case's township and channel) are most probable together; its category is
        its most probable one. No unit when the text has no known word."""
        units: dict[str, float] = {}
        first: dict[str, str] = {}
        for category, p in self.posterior.items():  # most probable first
            unit = lead_of(category)
            if unit is None:
                continue
            units[unit] = units.get(unit, 0.0) + p
            first.setdefault(unit, category)
        if not self.hits or not units:
            return UnitGuess(None, 0.0, self.best()[0], units)
        unit = min(units, key=lambda u: (-units[u], u))
        return UnitGuess(unit, units[unit], first[unit], dict(sorted(units.items(), key=lambda x: (-x[1], x[0]))))


@dataclass(frozen=True)
class UnitGuess:
    unit: str | None
    confidence: float  # the probability that the unit is the right lead
    category: str | None  # the unit's most probable category (what the case is routed under)
    units: dict[str, float] = field(default_factory=dict)


class Features:
    """jieba words (each category's keywords are whole words) and character bigrams of a text."""

    STOP = frozenset("的 了 是 我 在 有 和 就 都 也 把 被 说 这 那 他 她 你 们 我们 他们 你们 一个 还 又 啊 吧 呢 "
                     "吗 嘛 呀 给 让 要 去 来 到 对 跟 与 及 等 着 过 啦 哦 喔".split())
    _CJK = re.compile(r"[\u4e00-\u9fff]+")
    _WORDLIKE = re.compile(r"[\u4e00-\u9fffA-Za-z0-9]")

    def __init__(self, keywords: Iterable[str], cache_dir: Path) -> None:
        import jieba

        freq, total = _jieba_dictionary(cache_dir)
        self._jieba = jieba.Tokenizer()
        self._jieba.tmp_dir = str(cache_dir)  # never used: the dictionary is given, not loaded again
        self._jieba.FREQ, self._jieba.total, self._jieba.initialized = dict(freq), total, True
        for word in sorted(set(keywords)):
            self._jieba.add_word(word, freq=20000)  # a keyword is one token, never split

    def of(self, title: str, content: str, title_weight: float) -> Counter[str]:
        out: Counter[str] = Counter()
        for weight, text in ((title_weight, title), (1.0, content)):
            text = re.sub(r"\s+", "", text)
            for token in self._jieba.lcut(text):
                if self._WORDLIKE.search(token) and token not in self.STOP:
                    out["w:" + re.sub(r"\d+", "0", token)] += weight
            for run in self._CJK.findall(text):
                for i in range(len(run) - 1):
                    out["b:" + run[i:i + 2]] += weight
        return out

    @staticmethod
    def of_keyword(word: str) -> list[str]:
        return ["w:" + word] + ["b:" + word[i:i + 2] for i in range(len(word) - 1)]


class NaiveBayes:
    """Counts per category and feature; scores are log-likelihoods (uniform prior over categories:
    the corpus is balanced by design, the county's own mix is unknown)."""

    def __init__(self, counts: Mapping[str, Mapping[str, float]], alpha: float, length_power: float = 0.0) -> None:
        self.counts = counts
        self.alpha = alpha
        self.length_power = length_power
        self.vocabulary = frozenset(f for c in counts.values() for f in c)
        size = len(self.vocabulary)
        self.log_denominator = {c: math.log(sum(sorted(n.values())) + alpha * size) for c, n in counts.items()}

    def scores(self, features: Mapping[str, float]) -> dict[str, float]:
        known = [(f, n) for f, n in sorted(features.items()) if f in self.vocabulary]
        a, mass = self.alpha, sum(n for _, n in known)
        scale = max(mass, 1.0) ** -self.length_power  # a long text is not that much surer than a short one
        return {c: scale * (sum(n * math.log(counts.get(f, 0.0) + a) for f, n in known)
                            - self.log_denominator[c] * mass) for c, counts in sorted(self.counts.items())}


def priors(keywords: Iterable[str], weight: float, more: Iterable[str], more_weight: float) -> dict[str, float]:
    """A category's pseudo-counts: each keyword (and lexicon word) as a word and as its bigrams."""
    out: dict[str, float] = {}
    for words, w in ((keywords, weight), (more, more_weight)):
        for word in sorted(set(words)):
            for f in Features.of_keyword(word):
                out[f] = out.get(f, 0.0) + w
    return out


def softmax(scores: Mapping[str, float], beta: float) -> dict[str, float]:
    top = max(scores.values())
    weights = {c: math.exp(beta * (s - top)) for c, s in scores.items()}
    total = sum(weights.values())
    return dict(sorted(((c, w / total) for c, w in weights.items()), key=lambda x: (-x[1], x[0])))


def count(labelled: Iterable[tuple[Counter[str], Mapping[str, float]]], priors: Mapping[str, Mapping[str, float]],
          categories: Iterable[str]) -> dict[str, dict[str, float]]:
    """Per category, the keyword pseudo-counts plus each text's features times its weight for it."""
    counts = {c: dict(priors.get(c, {})) for c in sorted(categories)}
    for features, weights in labelled:
        for c, w in sorted(weights.items()):
            target = counts[c]
            for f, n in sorted(features.items()):
                target[f] = target.get(f, 0.0) + w * n
    return counts


def fit_beta(scored: list[tuple[dict[str, float], str]]) -> float:
    """The inverse temperature minimising the log loss of ``scored`` (scores, true category): the
    loss is convex in it, so a golden-section search on a log scale finds it."""
    def loss(log_beta: float) -> float:
        beta = math.exp(log_beta)
        total = 0.0
        for scores, label in scored:
            top = max(scores.values())
            total += beta * (top - scores[label]) + math.log(sum(math.exp(beta * (s - top)) for s in scores.values()))
        return total

    lo, hi = math.log(1e-4), math.log(10.0)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(a) <= loss(b):
            hi = b
        else:
            lo = a
    return round(math.exp((lo + hi) / 2), 6)


def fold_of(example: Example, folds: int) -> int:
    """A fold fixed by the text, not by its place in a file."""
    digest = hashlib.sha256(json.dumps(example.key, ensure_ascii=False).encode()).digest()
    return int.from_bytes(digest[:8], "big") % folds


def load_corpus(path: Path = CORPUS) -> list[Example]:
    """The training part of the labelled corpus (an absent file: none, the keywords alone)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Example(r["title"], r.get("content") or "", r["category"], accuses=bool(r.get("accused_unit")))
            for r in rows]


@dataclass(frozen=True)
class Model:
    bayes: NaiveBayes
    beta: float
    version: object = None  # what it was trained on (the examples table's mark), for reloading


class Classifier:
    """The category of a text, calibrated, from the corpus plus the clerks' examples.

    ``source``: where the clerks' examples come from (:class:`services.routing.learning.ExampleSource`,
    the examples table); asked before each guess whether they changed (a cheap mark), it makes every
    replica answer as the shared table says. ``None``: the corpus alone (the evaluation). ``fitted``: the
    recorded calibration (:func:`shipped_fit`), None to fit it whatever is recorded."""

    def __init__(self, directory: Directory, cache_dir: Path, corpus: list[Example] | Path | None = CORPUS,
                 params: Params = Params(), source: ExampleSource | None = None, fitted: Path | None = FITTED) -> None:
        self.params = params
        self.categories = sorted(directory.categories)
        self.keywords = {code: list(c.keywords) for code, c in directory.categories.items()}
        words = {c: w for c, w in lexicon.words().items() if c in self.keywords}
        self.features = Features([w for ws in (*self.keywords.values(), *words.values()) for w in ws], cache_dir)
        self._jieba = self.features._jieba
        self.priors = {c: priors(self.keywords[c], params.keyword_prior, words.get(c, []), params.lexicon_prior)
                       for c in self.keywords}
        examples = load_corpus(corpus) if isinstance(corpus, Path) else list(corpus or [])
        self.corpus = sorted(examples, key=lambda e: e.key)
        # Fitted once per process for a corpus, keywords and knobs (tests and replicas build many).
        self.key = hashlib.sha256(json.dumps([[e.key for e in self.corpus], sorted(self.priors.items()),
                                              repr(params)], ensure_ascii=False).encode()).hexdigest()
        with _FITTED_LOCK:
            if self.key not in _FITTED:
                self._corpus_features = [(self.features.of(e.title, e.content, params.title_weight), e)
                                         for e in self.corpus]
                shipped = shipped_fit(self.key, fitted) if fitted is not None else None
                beta = shipped["beta"] if shipped else self._fit_beta()
                accusation = AccusationModel.fit(self._corpus_features, params,
                                                 shipped["accusation_beta"] if shipped else None)
                _FITTED[self.key] = (self._corpus_features, beta, accusation)
            self._corpus_features, self.beta, self.accusation = _FITTED[self.key]
        self.base = Model(self._bayes(self._labelled(self._corpus_features)), self.beta, ())
        self.model = self.base
        self.source = source
        self._lock = threading.Lock()
        self._last: tuple[tuple[str, str], Counter[str]] | None = None  # the last text's features

    # --- training ---

    def _bayes(self, labelled: Iterable[tuple[Counter[str], Mapping[str, float]]]) -> NaiveBayes:
        return NaiveBayes(count(labelled, self.priors, self.categories), self.params.alpha, self.params.length_power)

    def _labelled(self, featured: Iterable[tuple[Counter[str], Example]], base: Model | None = None) -> list:
        out = []
        for features, e in featured:
            weights = self._weights(features, e, base)
            if weights:
                out.append((features, weights))
        return out

    def _weights(self, features: Counter[str], e: Example, base: Model | None) -> dict[str, float]:
        if e.category in self.keywords:
            return {e.category: e.weight}
        candidates = sorted(c for c in set(e.candidates) if c in self.keywords)
        if not candidates:
            return {}
        if len(candidates) == 1 or base is None:
            return {c: e.weight / len(candidates) for c in candidates}
        posterior = softmax(base.bayes.scores(features), base.beta)
        total = sum(posterior[c] for c in candidates)
        return {c: e.weight * posterior[c] / total for c in candidates}

    def _fit_beta(self) -> float:
        k = self.params.folds
        if len(self.corpus) < 2 * k:
            return 1.0
        scored = []
        for fold in range(k):
            train = [(f, e) for f, e in self._corpus_features if fold_of(e, k) != fold]
            bayes = self._bayes(self._labelled(train))
            scored += [(bayes.scores(f), e.category) for f, e in self._corpus_features
                       if fold_of(e, k) == fold and e.category in self.keywords]
        return fit_beta(scored)

    def learn(self, examples: Iterable[Example], version: object = None) -> None:
        """The model of the corpus plus ``examples`` (in any order: the same model)."""
        w = self.params.learned_weight
        learned = sorted((Example(e.title, e.content, e.category, tuple(sorted(e.candidates)), e.weight * w)
                          for e in examples), key=lambda e: e.key)
        featured = self._corpus_features + [(self.features.of(e.title, e.content, self.params.title_weight), e)
                                             for e in learned]
        self.model = Model(self._bayes(self._labelled(featured, self.base)), self.beta, version)

    def refresh(self) -> None:
        """Reload when the source's examples changed since the model was trained."""
        if self.source is None:
            return
        mark = self.source.mark()
        if mark == self.model.version:
            return
        with self._lock:
            if mark != self.model.version:
                self.learn(self.source.examples(), mark)

    # --- answers ---

    def warm_up(self) -> None:
        """Load jieba's dictionary now rather than on the first case (it is, in ``__init__``)."""
        self._jieba.initialize()

    def guess(self, title: str, content: str) -> Guess:
        self.refresh()
        model = self.model
        features = self._features_of(title, content)
        hits = sum(int(n) for f, n in features.items() if f in model.bayes.vocabulary)
        return Guess(softmax(model.bayes.scores(features), model.beta), hits)

    def accusation_probability(self, title: str, content: str) -> float:
        """The calibrated probability that the text accuses a unit's officials (:class:`AccusationModel`)."""
        return round(self.accusation.probability(self._features_of(title, content)), 3)

    def _features_of(self, title: str, content: str) -> Counter[str]:
        """A text's features, segmented once for the category and the accusation models (routing asks
        both of one case, one after the other)."""
        last = self._last
        if last is not None and last[0] == (title, content):
            return last[1]
        features = self.features.of(title, content, self.params.title_weight)
        self._last = ((title, content), features)  # one assignment: a replica's threads see either
        return features

    def classify(self, title: str, content: str, min_hits: int = 1) -> tuple[str | None, float, int]:
        """(category, confidence, hits): the most probable category and its calibrated probability;
        ``hits``, the words and bigrams of the text the model knows (the title's twice). None known:
        no category; fewer than ``min_hits``: the category, with confidence 0."""
        guess = self.guess(title, content)
        category, p = guess.best()
        return category, (round(p, 3) if guess.hits >= min_hits else 0.0), guess.hits


def shipped_fit(key: str, path: Path = FITTED) -> dict | None:
    """The temperatures ``xinfang routing fit`` recorded for a corpus, keywords and knobs (``key``)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == key else None


def record_fit(classifier: Classifier, path: Path = FITTED) -> dict:
    """Write the fitted temperatures of ``classifier`` for :func:`shipped_fit`."""
    record = {"key": classifier.key, "beta": classifier.beta, "accusation_beta": classifier.accusation.beta,
              "examples": len(classifier.corpus)}
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


class AccusationModel:
    """How likely a text accuses a unit's officials (检举控告), from the corpus's labels: naive Bayes
    over the same features, two classes, the corpus's share of accusations as the prior, calibrated
    by a temperature fitted by k-fold cross-validation. Residents hint at misconduct in more ways than
    any word list holds (送了一条中华, 跟老板喝了一顿酒); routing asks a clerk about a case this model
    finds likely an accusation when the text names the unit that would be given it."""

    def __init__(self, bayes: NaiveBayes | None, prior: float, beta: float) -> None:
        self.bayes, self.prior, self.beta = bayes, prior, beta

    @classmethod
    def fit(cls, featured: list[tuple[Counter[str], Example]], params: Params,
            beta: float | None = None) -> AccusationModel:
        """The model of ``featured``; its temperature ``beta`` when known (fitted for this corpus before)."""
        labelled = [(f, e.accuses) for f, e in featured if e.accuses is not None]
        if not any(a for _, a in labelled) or all(a for _, a in labelled):
            return cls(None, 0.0, 1.0)

        def bayes(part: list[tuple[Counter[str], bool]]) -> tuple[NaiveBayes, float]:
            counts = count(((f, {"yes" if a else "no": 1.0}) for f, a in part), {}, ("yes", "no"))
            share = (sum(a for _, a in part) + 1) / (len(part) + 2)
            return NaiveBayes(counts, params.alpha, params.length_power), math.log(share / (1 - share))

        if beta is not None:
            return cls(*bayes(labelled), beta)
        k, scored = params.folds, []
        folds = [fold_of(e, k) for _, e in featured if e.accuses is not None]
        for fold in range(k):
            nb, prior = bayes([x for x, f in zip(labelled, folds) if f != fold])
            for (features, accuses), f in zip(labelled, folds):
                if f == fold:
                    s = nb.scores(features)
                    scored.append(({"yes": s["yes"] - s["no"] + prior, "no": 0.0}, "yes" if accuses else "no"))
        nb, prior = bayes(labelled)
        return cls(nb, prior, fit_beta(scored))

    def probability(self, features: Counter[str]) -> float:
        if self.bayes is None:
            return 0.0
        s = self.bayes.scores(features)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, self.beta * (s["yes"] - s["no"] + self.prior)))))


class ExampleSource:
    """What :class:`Classifier` asks of the clerks' examples (see :mod:`services.routing.learning`)."""

    def mark(self) -> object:  # pragma: no cover - an interface
        raise NotImplementedError

    def examples(self) -> list[Example]:  # pragma: no cover - an interface
        raise NotImplementedError
