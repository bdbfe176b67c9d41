"""What the benchmark modules share: reading annotation files, pairing samples with predictions,
prompts, closed-QA scoring and judge runs."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ego3s.answers import as_text, exact_match, extract_answer, extract_letter, rouge_l_f
from ego3s.data.schema import Sample, SampleError
from ego3s.models.prompts import FORMATS as PROMPT_FORMATS

log = logging.getLogger("ego3s.eval")

FORMATS = (*PROMPT_FORMATS, "official")  # official: the benchmark's own prompt


# ----------------------------------------------------------------------------------------------
# Files


def find_file(path: str | os.PathLike, candidates: Sequence[str], what: str) -> Path:
    """`path` itself when it is a file; else the first of `candidates` inside the folder `path`."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for c in candidates:
            if (p / c).is_file():
                return p / c
        raise FileNotFoundError(f"{p}: no {what} here (looked for {', '.join(candidates)})")
    raise FileNotFoundError(f"{p}: no such file or folder ({what})")


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def check_list(data: Any, path: Path, what: str = "a JSON list of records") -> list:
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected {what}, got {type(data).__name__}")
    return data


def field_of(rec: Any, name: str, types: type | tuple, path: Path, index: int, sid: str | None = None):
    """`rec[name]`, checked: errors name the file, the record (its index in the file), the sample
    id and the field."""
    if not isinstance(rec, dict):
        raise bad(path, index, sid, None, f"expected a JSON object, got {type(rec).__name__}")
    if name not in rec or rec[name] is None:
        raise bad(path, index, sid, name, "missing field")
    v = rec[name]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise bad(path, index, sid, name, f"expected {_names(types)}, got bool")
    if not isinstance(v, types):
        raise bad(path, index, sid, name, f"expected {_names(types)}, got {type(v).__name__} ({v!r:.40})")
    return v


def bad(path: Path, index: int, sid: str | None, field: str | None, message: str) -> SampleError:
    """A SampleError for record `index` of the JSON file `path`."""
    return SampleError(f"record {index}: {message}", field=field, file=str(path), sample_id=sid)


def _names(types) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in ts)


def finish(samples: Iterable[Sample], path: Path, *, skip_invalid: bool = False) -> list[Sample]:
    """Validate each sample and check that ids are unique. Errors name the file and sample; with
    `skip_invalid` invalid samples are logged and dropped instead."""
    out, seen = [], set()
    for s in samples:
        try:
            s.validate()
            if s.id in seen:
                raise SampleError("duplicate id", field="id")
        except SampleError as e:
            e = e.located(file=str(path), sample_id=s.id)
            if not skip_invalid:
                raise e
            log.warning("skipping invalid sample: %s", e)
            continue
        seen.add(s.id)
        out.append(s)
    return out


def number_text(v) -> str:
    """An id part from a JSON number or string: 3 -> '3', 8.1 -> '8.1', 1.0 -> '1.0'."""
    return str(v)


# ----------------------------------------------------------------------------------------------
# Predictions


def pair(samples: Sequence[Sample], predictions) -> tuple[list[str], int]:
    """Raw outputs aligned with `samples` from a mapping {sample id: output} or a sequence of the
    same length; a missing output is "" and counted."""
    if isinstance(predictions, Mapping):
        outs, missing = [], 0
        for s in samples:
            if s.id in predictions and predictions[s.id] is not None:
                outs.append(as_text(predictions[s.id]))
            else:
                outs.append("")
                missing += 1
        return outs, missing
    preds = list(predictions)
    if len(preds) != len(samples):
        raise ValueError(
            f"{len(preds)} predictions for {len(samples)} samples; pass a dict {{id: output}} to score a subset"
        )
    return [as_text(p) for p in preds], sum(p is None for p in preds)


def extract(sample: Sample, output) -> str | None:
    """The answer in a raw output: the option letter (closed QA, via `extract_letter`) or the
    answer text (open QA, via `extract_answer`)."""
    if sample.task == "closeqa":
        return extract_letter(output, sample.options)
    return extract_answer(output)


_LEAD = re.compile(r"^\s*(?:\*\*)?\s*(?:final\s+|short\s+)?answer\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*", re.IGNORECASE)


def strip_answer_prefix(text: str | None) -> str:
    """'Answer: a cup' -> 'a cup' (the official prompts of EgoTextVQA and EgoThink ask for it)."""
    if not text:
        return ""
    return _LEAD.sub("", text, count=1).strip()


# ----------------------------------------------------------------------------------------------
# Prompts


def question_text(sample: Sample, fmt: str, official: Callable[[Sample], str] | None = None) -> str:
    """The user text: `ego3s.models.prompts.question_text` for 'direct' and 'reasoning'; the
    benchmark's own wording for 'official' (the direct format when it has none)."""
    from ego3s.models import prompts

    if fmt not in FORMATS:
        raise ValueError(f"sample {sample.id!r}: fmt must be one of {FORMATS}, got {fmt!r}")
    if fmt == "official":
        return official(sample) if official else prompts.question_text(sample, fmt="direct")
    return prompts.question_text(sample, fmt=fmt)


def build_messages(
    sample: Sample,
    fmt: str,
    official: Callable[[Sample], str] | None = None,
    *,
    visual: str | None = "auto",
    system: str | None = None,
) -> list[dict]:
    """Chat messages (`ego3s.models.prompts.build_messages`) with the benchmark's question text."""
    from ego3s.models import prompts

    msgs = prompts.build_messages(sample, fmt="direct" if fmt == "official" else fmt, visual=visual, system=system)
    if fmt == "official":
        text = question_text(sample, fmt, official)
        for part in msgs[-1]["content"]:
            if part.get("type") == "text":
                part["text"] = text
    return msgs


# ----------------------------------------------------------------------------------------------
# Scoring


def closed_rows(samples: Sequence[Sample], outputs: Sequence[str], meta_keys: Sequence[str] = ()) -> list[dict]:
    """Per-sample rows for closed QA: extracted letter, gold, correct (1.0/0.0)."""
    rows = []
    for s, out in zip(samples, outputs):
        letter = extract_letter(out, s.options)
        row = {
            "id": s.id,
            "pred": letter,
            "gold": s.answer,
            "correct": float(letter == s.answer),
            "parsed": letter is not None,
        }
        for k in meta_keys:
            row[k] = s.meta.get(k)
        rows.append(row)
    return rows


def open_rows(samples: Sequence[Sample], preds: Sequence[str], meta_keys: Sequence[str] = ()) -> list[dict]:
    """Per-sample rows for open QA with the deterministic metrics (EM, ROUGE-L F)."""
    rows = []
    for s, p in zip(samples, preds):
        row = {
            "id": s.id,
            "pred": p,
            "gold": s.answer,
            "em": exact_match(p, s.answer),
            "rouge_l": rouge_l_f(p, s.answer),
        }
        for k in meta_keys:
            row[k] = s.meta.get(k)
        rows.append(row)
    return rows


def run_judge(judge, rubric, items: list, empty: Any) -> tuple[list, dict]:
    """Ratings for `items` (`JudgeItem`s); an item with an empty prediction gets `empty` without a
    request. Returns (ratings with None for failures, judge summary)."""
    ask = [it for it in items if it.prediction.strip()]
    results = {j.id: j for j in judge.rate(rubric, ask)} if ask else {}
    ratings, failed, errors = [], 0, {}
    for it in items:
        if not it.prediction.strip():
            ratings.append(empty)
            continue
        j = results[it.id]
        if j.rating is None:
            failed += 1
            errors[it.id] = j.error
        ratings.append(j.rating)
    summary = {
        "model": judge.model,
        "rubric": rubric.name,
        "rubric_version": rubric.version,
        "judged": len(items) - failed,
        "judge_failed": failed,
        "cache_hits": sum(1 for j in results.values() if j.cached),
        "requests": sum(j.attempts for j in results.values()),
        "empty_predictions": len(items) - len(ask),
    }
    if errors:
        summary["errors"] = dict(list(errors.items())[:20])
    return ratings, summary


def result(
    benchmark: str,
    samples: Sequence[Sample],
    missing: int,
    metrics: dict,
    by: dict,
    rows: list[dict],
    *,
    judge: dict | None = None,
    **extra,
) -> dict:
    """The score dict every benchmark returns."""
    return {
        "benchmark": benchmark,
        "n": len(samples),
        "missing_predictions": missing,
        "metrics": metrics,
        "by": by,
        "judge": judge,
        **extra,
        "per_sample": rows,
    }


def accuracy_of(rows: Sequence[dict]) -> float | None:
    """Closed-QA accuracy (%) of `closed_rows`, None when there are none."""
    from ego3s.eval.metrics import mean

    m = mean(r["correct"] for r in rows)
    return None if m is None else round(100.0 * m, 2)


def accuracy_by(rows: Sequence[dict], by) -> dict:
    """{category: {"n", "accuracy"}} of `closed_rows` grouped by a row key (or keys)."""
    from ego3s.eval.metrics import breakdown

    return {k: {"n": v["n"], "accuracy": v["correct"]} for k, v in breakdown(rows, by, {"correct": 100.0}).items()}
