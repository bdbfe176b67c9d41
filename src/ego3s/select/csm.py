"""The counterfactual-based selection filters (CSM), over a table of per-view scores.

A sample is kept when it passes all three:
- coarse, language-prior shortcut: ``s_full - s_blind > lambda_c``;
- fine, global-context shortcut: ``(s_full - s_context) / max(s_full, eps) >= lambda_f``;
- interaction relevance: ``cos(emb(question + answer), emb(interaction description)) >= lambda_o``.

Pure functions over plain rows so they are testable on hand-made tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ego3s.config import check_fields


@dataclass
class CSMThresholds:
    lambda_c: float = field(default=0.1, metadata={"help": "coarse filter: keep if s_full - s_blind > lambda_c"})
    lambda_f: float = field(
        default=0.5, metadata={"help": "fine filter: keep if (s_full - s_context) / max(s_full, eps) >= lambda_f"}
    )
    lambda_o: float = field(
        default=0.21, metadata={"help": "interaction relevance: keep if cos(question+answer, interaction) >= lambda_o"}
    )
    eps: float = field(default=1e-6, metadata={"help": "floor of s_full in the fine criterion"})

    def __post_init__(self):
        # the criteria are at most 1 (coarse: s_full - s_blind; fine: a ratio; relevance: a cosine), so
        # a higher threshold keeps nothing; any threshold below their range keeps everything (filter off)
        check_fields(
            self, ranges={"lambda_c": "(-inf, 1)", "lambda_f": "(-inf, 1]", "lambda_o": "(-inf, 1]", "eps": "(0, 1]"}
        )


def criteria(s_full: float, s_blind: float, s_context: float, eps: float = 1e-6) -> tuple[float, float]:
    """(language-prior gain, interaction-reliance ratio) of one sample."""
    return s_full - s_blind, (s_full - s_context) / max(s_full, eps)


def apply_filters(rows: list[dict], th: CSMThresholds) -> list[dict]:
    """Add `coarse`, `fine`, `pass_coarse`, `pass_fine`, `pass_relevance`, `kept` to each row.

    Rows need `s_full`, `s_blind`, `s_context` and `relevance` (None when the sample has no
    interaction annotation: it then fails the relevance filter, since nothing says it needs the
    interaction). A row whose scores are missing, not finite or outside [0, 1] (no expected
    correctness can be) fails every filter and is marked with `invalid` so reports can count it
    instead of hiding it."""
    out = []
    for r in rows:
        r = dict(r)
        scores = [r.get("s_full"), r.get("s_blind"), r.get("s_context")]
        if not all(isinstance(x, (int, float)) and 0.0 <= x <= 1.0 for x in scores):  # NaN fails too
            r.update(
                coarse=None,
                fine=None,
                pass_coarse=False,
                pass_fine=False,
                pass_relevance=False,
                kept=False,
                invalid=True,
            )
            out.append(r)
            continue
        coarse, fine = criteria(*scores, eps=th.eps)
        rel = r.get("relevance")
        r["coarse"], r["fine"] = coarse, fine
        r["pass_coarse"] = coarse > th.lambda_c
        r["pass_fine"] = fine >= th.lambda_f
        r["pass_relevance"] = rel is not None and math.isfinite(rel) and rel >= th.lambda_o
        r["kept"] = r["pass_coarse"] and r["pass_fine"] and r["pass_relevance"]
        r["invalid"] = False
        out.append(r)
    return out


def closest_misses(rows: list[dict], exclude=()) -> list[dict]:
    """Valid rows that failed CSM, best first: most filters passed, then highest interaction
    reliance, then highest language-prior gain. Selection's `min_kept` top-up and ECR's
    `min_pool_size` refill both take from the head of this list, so both fall back the same way."""
    skip = set(exclude)
    misses = [r for r in rows if not r["kept"] and not r.get("invalid") and r["id"] not in skip]
    return sorted(
        misses, key=lambda r: (-(r["pass_coarse"] + r["pass_fine"] + r["pass_relevance"]), -r["fine"], -r["coarse"])
    )


def funnel(rows: list[dict]) -> dict[str, int]:
    """How many samples survive each filter in turn (coarse -> fine -> relevance)."""
    valid = [r for r in rows if not r.get("invalid")]
    after_c = [r for r in valid if r["pass_coarse"]]
    after_f = [r for r in after_c if r["pass_fine"]]
    after_o = [r for r in after_f if r["pass_relevance"]]
    return {
        "scored": len(rows),
        "invalid": len(rows) - len(valid),
        "after_coarse": len(after_c),
        "after_fine": len(after_f),
        "after_relevance": len(after_o),
        "kept": len(after_o),
        "failed_coarse": sum(not r["pass_coarse"] for r in valid),
        "failed_fine": sum(not r["pass_fine"] for r in valid),
        "failed_relevance": sum(not r["pass_relevance"] for r in valid),
    }


def relevance_texts(sample) -> tuple[str, str] | None:
    """The two texts compared by the relevance filter, or None without an annotation."""
    if sample.interaction is None:
        return None
    return f"{sample.question} {sample.answer_text}", sample.interaction.description()
