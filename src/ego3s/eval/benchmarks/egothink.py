"""EgoThink (AdaCheng/EgoThink, CVPR 2024): open-ended questions on single first-person images,
700 questions in 12 dimensions.

Layout (the repository's `data/` folder): `<root>/<Dim>[/<sub>]/annotations.json` with the images
in `images/` beside it; each file is `[{"source_dataset", "image_path": ["1.jpg"], "question",
"answer"}]`. The loader walks the folder and takes every dimension it finds (or those asked for).

- Sample ids: f"egothink-{Dim}[-{sub}]-{index}" (index: position in the file, from 0, as the
  official `eval.py` numbers questions); `meta.dimension` is e.g. "Object/affordance".
- Scoring (official `gen_judgment.py` with the `single-math-v2` prompt): an LLM judge rates each
  answer 0, 0.5 or 1 against the reference (3 tries; unparsed ratings are dropped); the score of a
  dimension is the mean x 100; the overall score is the mean of the dimension scores (the
  leaderboard's "Average"). EM and ROUGE-L are always computed beside it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ego3s.answers import extract_answer
from ego3s.data.schema import Sample
from ego3s.eval.benchmarks import _common as C
from ego3s.eval.metrics import breakdown, mean

NAME = "egothink"
TASK = "openqa"
VISUAL = "image"
NEEDS_JUDGE = True
SUBDIR = "egothink"
DIMENSIONS = (
    "Activity",
    "Forecast",
    "Localization/location",
    "Localization/spatial",
    "Object/affordance",
    "Object/attribute",
    "Object/existence",
    "Planning/assistance",
    "Planning/navigation",
    "Reasoning/comparing",
    "Reasoning/counting",
    "Reasoning/situated",
)
PLANNING = ("Planning/assistance", "Planning/navigation")
# Official generation lengths (eval.py): 300 new tokens for the planning dimensions, 30 otherwise.
MAX_NEW_TOKENS, MAX_NEW_TOKENS_PLANNING = 30, 300
# The official prompt for API models (gpt_eval.py).
OFFICIAL_PROMPT = "Please let your answer be as short as possible. Question: {question} Short answer:"
FIELDS = {"score": 100.0, "em": 100.0, "rouge_l": 100.0}


def _dimension_of(ann: Path, root: Path) -> str:
    rel = ann.parent.relative_to(root).as_posix()
    for d in DIMENSIONS:
        if rel == d or rel.endswith("/" + d):
            return d
    return rel


def find_dimensions(root: str | os.PathLike) -> dict[str, Path]:
    """{dimension: annotations.json} under `root` (also under `root/data`, the repository layout)."""
    root = Path(root)
    found: dict[str, Path] = {}
    for base in (root, root / "data"):
        if not base.is_dir():
            continue
        for ann in sorted(base.rglob("annotations.json")):
            dim = _dimension_of(ann, base)
            if dim and dim != "." and dim not in found:
                found[dim] = ann
        if found:
            break
    return found


def load(
    path: str | os.PathLike, *, dimensions: Sequence[str] | None = None, skip_invalid: bool = False
) -> list[Sample]:
    """Samples of every dimension under the folder `path` (or of `dimensions` only), or of the
    one `annotations.json` file `path`."""
    p = Path(path)
    if p.is_file():
        dim = (
            "/".join(p.parent.parts[-2:])
            if p.parent.parent.name in ("Localization", "Object", "Planning", "Reasoning")
            else p.parent.name
        )
        files = {dim: p}
    elif p.is_dir():
        files = find_dimensions(p)
        if not files:
            raise FileNotFoundError(f"{p}: no EgoThink dimension folders (<Dim>[/<sub>]/annotations.json)")
        if dimensions is not None:
            dimensions = [dimensions] if isinstance(dimensions, str) else list(dimensions)
            lost = [d for d in dimensions if d not in files]
            if lost:
                raise FileNotFoundError(f"{p}: EgoThink dimension(s) {lost} not found (found {sorted(files)})")
            files = {d: files[d] for d in dimensions}
    else:
        raise FileNotFoundError(f"{p}: no such file or folder (EgoThink)")
    unknown = [d for d in files if d not in DIMENSIONS]
    if unknown:
        C.log.warning("EgoThink: folders %s are not among the 12 official dimensions", unknown)
    out: list[Sample] = []
    for dim in sorted(files, key=lambda d: (DIMENSIONS.index(d) if d in DIMENSIONS else 99, d)):
        out += _load_dimension(files[dim], dim)
    return C.finish(out, p, skip_invalid=skip_invalid)


def _load_dimension(path: Path, dim: str) -> list[Sample]:
    data = C.check_list(C.read_json(path), path)
    out = []
    for i, rec in enumerate(data):
        sid = f"egothink-{dim.replace('/', '-')}-{i}"
        images = C.field_of(rec, "image_path", (list, str), path, i, sid)
        images = [images] if isinstance(images, str) else images
        if not images or not isinstance(images[0], str):
            raise C.bad(path, i, sid, "image_path", "expected a list holding one image file name")
        name = images[0].replace("\\", "/").split("/")[-1]
        question = C.field_of(rec, "question", str, path, i, sid)
        answer = C.field_of(rec, "answer", (str, int, float), path, i, sid)
        out.append(
            Sample(
                id=sid,
                question=question.strip(),
                answer=str(answer).strip(),
                task="openqa",
                image=str(path.parent / "images" / name),
                meta={
                    "benchmark": NAME,
                    "dimension": dim,
                    "capability": dim.split("/")[0],
                    "index": i,
                    "source_dataset": rec.get("source_dataset"),
                    "image_name": name,
                },
            )
        )
    return out


def official_prompt(sample: Sample) -> str:
    return OFFICIAL_PROMPT.format(question=sample.question)


def max_new_tokens(sample: Sample, fmt: str = "direct") -> int:
    return MAX_NEW_TOKENS_PLANNING if sample.meta.get("dimension") in PLANNING else MAX_NEW_TOKENS


def extract(sample: Sample, output) -> str | None:
    """The answer text: the `<answer>` content (else the text), without a leading 'Short answer:'."""
    return C.strip_answer_prefix(extract_answer(output)) or None


def score(samples: Sequence[Sample], predictions, judge=None) -> dict:
    """Judge score (mean rating x 100) per dimension and their mean, with EM and ROUGE-L F (%)."""
    from ego3s.judge import EGOTHINK, JudgeItem

    outputs, missing = C.pair(samples, predictions)
    preds = [extract(s, o) or "" for s, o in zip(samples, outputs)]
    rows = C.open_rows(samples, preds, ("dimension",))
    jsum = None
    if judge is not None:
        items = [JudgeItem(s.id, s.question, s.answer, p) for s, p in zip(samples, preds)]
        ratings, jsum = C.run_judge(judge, EGOTHINK, items, empty=0.0)
        for row, r in zip(rows, ratings):
            row["score"] = r
    else:
        for row in rows:
            row["score"] = None
    dims = breakdown(rows, "dimension", FIELDS)
    order = {d: i for i, d in enumerate(DIMENSIONS)}
    dims = {d: dims[d] for d in sorted(dims, key=lambda d: (order.get(d, 99), d))}
    metrics = {"n": len(rows), "n_dimensions": len(dims)}
    for name in FIELDS:  # macro means over dimensions, as the leaderboard's "Average"
        v = mean(d[name] for d in dims.values())
        metrics[name] = None if v is None else round(v, 2)
    micro = mean(r["score"] for r in rows)
    metrics["score_micro"] = None if micro is None else round(100 * micro, 2)
    return C.result(NAME, samples, missing, metrics, {"dimension": dims}, rows, judge=jsum)
