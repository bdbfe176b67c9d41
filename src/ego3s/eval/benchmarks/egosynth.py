"""EgoSynth, the project's own synthetic benchmark (`ego3s.data.egosynth`, docs/egosynth.md).

Files: `<root>/test_id.jsonl` (in distribution, a share `p_typical` of typical interactions) and
`<root>/test_atypical.jsonl` (every interaction atypical), already in the Sample schema, with
`meta.split` and `meta.typical`. Closed (4 options) and open questions are mixed.

Scoring: closed accuracy (extracted letter) and open exact match / ROUGE-L F (%), overall, per
split, per split and typical/atypical, and per question kind. A model that answers from priors
scores about `p_typical` on test_id and about 0 on test_atypical.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ego3s.answers import exact_match, extract_answer, extract_letter, rouge_l_f
from ego3s.data.io import read_jsonl
from ego3s.data.schema import Sample
from ego3s.eval.benchmarks import _common as C
from ego3s.eval.metrics import breakdown, group_means

NAME = "egosynth"
TASK = "mixed"
VISUAL = "video"
NEEDS_JUDGE = False
SUBDIR = "egosynth"
SPLITS = ("test_id", "test_atypical")
MAX_NEW_TOKENS = 32
FIELDS = {"accuracy": 100.0, "em": 100.0, "rouge_l": 100.0}


def load(path: str | os.PathLike, *, splits: Sequence[str] = SPLITS, skip_invalid: bool = False) -> list[Sample]:
    """Samples of `splits` from the folder `path` (`<split>.jsonl`), or of the one JSONL file `path`."""
    p = Path(path)
    if isinstance(splits, str):
        splits = (splits,)
    files = (
        [(p.stem, p)] if p.is_file() else [(s, C.find_file(p, (f"{s}.jsonl",), f"EgoSynth {s} split")) for s in splits]
    )
    out: list[Sample] = []
    errors: list = []
    for split, file in files:
        for s in read_jsonl(file, skip_invalid=skip_invalid, errors=errors):
            s.meta.setdefault("split", split)
            s.meta.setdefault("benchmark", NAME)
            out.append(s)
    for e in errors:
        C.log.warning("skipping invalid sample: %s", e)
    return C.finish(out, p, skip_invalid=skip_invalid)


def max_new_tokens(sample: Sample, fmt: str = "direct") -> int:
    return 16 if sample.task == "closeqa" else MAX_NEW_TOKENS


def extract(sample: Sample, output) -> str | None:
    return C.extract(sample, output)


def score(samples: Sequence[Sample], predictions, judge=None) -> dict:
    """Closed accuracy and open EM / ROUGE-L F (%), overall and per split, typicality and kind."""
    outputs, missing = C.pair(samples, predictions)
    rows = []
    for s, o in zip(samples, outputs):
        row = {
            "id": s.id,
            "task": s.task,
            "split": s.meta.get("split"),
            "kind": s.meta.get("kind"),
            "typical": "typical" if s.meta.get("typical") else "atypical",
            "gold": s.answer,
            "accuracy": None,
            "em": None,
            "rouge_l": None,
        }
        if s.task == "closeqa":
            letter = extract_letter(o, s.options)
            row.update(pred=letter, accuracy=float(letter == s.answer))
        else:
            p = (extract_answer(o) or "").strip()
            row.update(pred=p, em=exact_match(p, s.answer), rouge_l=rouge_l_f(p, s.answer))
        rows.append(row)
    metrics = group_means(rows, FIELDS)
    metrics["n_closed"] = sum(r["task"] == "closeqa" for r in rows)
    metrics["n_open"] = len(rows) - metrics["n_closed"]
    by = {
        "split": breakdown(rows, "split", FIELDS),
        "typical": breakdown(rows, ("split", "typical"), FIELDS),
        "kind": breakdown(rows, "kind", FIELDS),
    }
    return C.result(NAME, samples, missing, metrics, by, rows)
