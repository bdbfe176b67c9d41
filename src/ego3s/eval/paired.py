"""Paired comparisons of two prediction sets on the same questions.

Two models (base vs trained) or two views of one model (full vs context: the counterfactual
reliance of `--icu`) answer the same questions, so their per-question scores are paired. The
difference of means and its interval must respect the pairing: an unpaired interval over two
independent proportions is far too wide when most questions are answered alike.

- `paired_difference(a, b)`: mean(a) - mean(b) in percentage points with a paired bootstrap 95%
  interval (questions resampled with replacement, the same resample for both sets; percentile
  interval; a fixed seed, so the same inputs always give the same interval), and for 0/1 scores
  the exact two-sided McNemar p (binomial test on the discordant pairs).
- `compare_predictions(a, b)`: the same on two `{question id: score}` mappings, paired on the
  ids present in both (the others are counted, not used).
- `correctness(row)`: a per-sample result row's 0/1 correctness (closed `accuracy`/`correct`,
  open `em`), so two `per_sample.jsonl` files can be compared directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "paired_difference",
    "compare_predictions",
    "mcnemar_exact",
    "correctness",
    "read_correctness",
    "BOOT_RESAMPLES",
    "BOOT_SEED",
    "INTERVAL",
]

BOOT_RESAMPLES = 10_000
BOOT_SEED = 0
INTERVAL = f"paired bootstrap over questions ({BOOT_RESAMPLES} resamples, seed {BOOT_SEED}), percentile 95% interval"


def mcnemar_exact(n_a_only: int, n_b_only: int) -> float:
    """Exact two-sided McNemar p: under H0 each discordant pair is a fair coin, so the smaller
    discordant count is Binomial(n_a_only + n_b_only, 1/2); p = min(1, 2 P(X <= min)). Exact
    integer arithmetic (no overflow or rounding for any n)."""
    from fractions import Fraction
    from math import comb

    n, k = int(n_a_only) + int(n_b_only), min(int(n_a_only), int(n_b_only))
    if n == 0:
        return 1.0
    tail = Fraction(sum(comb(n, i) for i in range(k + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))


def _boot_means(d: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `resamples` bootstrap resamples of `d` (chunked: bounded memory for any n)."""
    rng = np.random.default_rng(seed)
    n = d.size
    out = np.empty(resamples, dtype=np.float64)
    chunk = max(1, min(resamples, 4_000_000 // max(n, 1)))
    for start in range(0, resamples, chunk):
        m = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(m, n))
        out[start : start + m] = d[idx].mean(axis=1)
    return out


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = BOOT_RESAMPLES,
    seed: int = BOOT_SEED,
    level: float = 0.95,
) -> dict:
    """`a[i]`, `b[i]`: the two sets' scores of question i (0/1 correctness, or a graded score in
    [0, 1]). Returns `{"value", "ci95": [lo, hi], "n", "a", "b"}` in percentage points / percent
    (None values when n = 0), plus for 0/1 scores `n_a_only`, `n_b_only` (questions only one set
    got right) and `mcnemar_p`."""
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired_difference: {x.size} scores against {y.size}; pair them by question first")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = int(x.size)
    out: dict = {"value": None, "ci95": [None, None], "n": n, "a": None, "b": None}
    binary = bool(np.all((x == 0) | (x == 1)) and np.all((y == 0) | (y == 1)))
    if binary:
        n_a = int(np.sum((x == 1) & (y == 0)))
        n_b = int(np.sum((x == 0) & (y == 1)))
        out.update(n_a_only=n_a, n_b_only=n_b, mcnemar_p=mcnemar_exact(n_a, n_b))
    if n == 0:
        return out
    d = x - y
    boots = _boot_means(d, resamples, seed)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    out.update(
        value=round(100.0 * float(d.mean()), 4),
        ci95=[round(100.0 * float(lo), 4), round(100.0 * float(hi), 4)],
        a=round(100.0 * float(x.mean()), 4),
        b=round(100.0 * float(y.mean()), 4),
    )
    return out


def compare_predictions(a: Mapping[str, float], b: Mapping[str, float], **kw) -> dict:
    """`paired_difference` of two `{question id: score}` mappings on the ids both hold (sorted);
    `only_a` / `only_b` count the ids one set lacks (left out). None scores count as missing."""
    a = {k: v for k, v in a.items() if v is not None}
    b = {k: v for k, v in b.items() if v is not None}
    ids = sorted(set(a) & set(b))
    res = paired_difference([float(a[i]) for i in ids], [float(b[i]) for i in ids], **kw)
    res.update(only_a=len(set(a) - set(b)), only_b=len(set(b) - set(a)), interval=INTERVAL)
    return res


def correctness(row: Mapping) -> float | None:
    """0/1 correctness of one per-sample result row (`<out>/<benchmark>/per_sample.jsonl`): closed
    questions' `accuracy` or `correct`, open questions' exact match `em`; None when the row has
    none (e.g. a hidden EgoSchema answer)."""
    for key in ("accuracy", "correct", "em"):
        v = row.get(key)
        if v is not None and not isinstance(v, bool) and isinstance(v, (int, float)):
            return float(v >= 1.0)
        if isinstance(v, bool):
            return float(v)
    return None


def read_correctness(path) -> dict[str, float]:
    """`{id: 0/1}` from a `per_sample.jsonl` (rows without a correctness are left out)."""
    from ego3s.files import read_log

    out = {}
    for row in read_log(path):
        if isinstance(row, dict) and row.get("id") is not None:
            c = correctness(row)
            if c is not None:
                out[str(row["id"])] = c
    return out
