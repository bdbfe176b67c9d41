"""`<run>/summary.json`: the run's headline figures in one small file, and whether each of the
method's four mechanisms showed.

    from ego3s.summary import summarize_run
    summary = summarize_run("runs/demo")        # also written to runs/demo/summary.json

Every figure is in percent (accuracies, shares) or percentage points (differences):

- `select`: method, pool and kept sizes, the atypical share (EgoSynth's `meta.typical` false) of
  the pool and of the kept samples, and their ratio (`enrichment`);
- `eval`: per model (`base`, `trained`) and EgoSynth split (`test_id`, `test_atypical`): closed
  question accuracy with its 95% Wilson interval, exact match on the open questions, the counts;
- `paired`: per split, trained minus base closed-question accuracy on the same questions, with a
  paired 95% interval (bootstrap over questions, `ego3s.eval.paired`) and the exact McNemar p;
- `paired_all`: the same over every question of the split, each scored by closed accuracy or open
  exact match (an extra figure: the mechanisms' check stays on `paired`, the closed questions);
- `reliance`: per model and split, counterfactual reliance (full-view minus context-view
  accuracy, `ego3s eval --icu`), when the evaluation measured it;
- `ecr`: refreshes, how many were trained on afterwards (`refreshes_used`), the samples they
  added (`added`) and how many of those training then drew (`added_drawn`);
- `seconds`: the run's stages summed; `mechanisms`: the four checks below, each `showed` true,
  false or None (not measured), with the numbers it was decided on.

The checks (the demo's claims, docs/RESULTS.md):
1. CSM enrichment: the kept samples' atypical share is at least 3x the pool's;
2. trained beats base on `test_atypical`: the paired 95% interval of the accuracy difference lies
   above 0;
3. ECR refreshed at least once and samples it added were trained on (`added_drawn` >= 1);
4. counterfactual reliance on `test_atypical` rises from base to trained.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ego3s.files import read_log, write_json

SPLITS = ("test_id", "test_atypical")
MODELS = ("base", "trained")
ENRICHMENT = 3.0  # kept atypical share / pool atypical share that counts as "mostly atypical"
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> list[float | None]:
    """95% Wilson score interval of a proportion k / n, in percent (None, None when n = 0)."""
    if n <= 0:
        return [None, None]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [round(100 * max(0.0, centre - half), 2), round(100 * min(1.0, centre + half), 2)]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(x: Any) -> float | None:
    return None if not isinstance(x, (int, float)) or isinstance(x, bool) else round(100.0 * x, 2)


def _select(run: Path) -> dict:
    rep = _json(run / "select" / "report.json") or {}
    typ = (rep.get("breakdown") or {}).get("typical") or {}
    atyp = typ.get("False") or typ.get("false") or {}
    pool, kept = rep.get("candidates"), rep.get("selected")
    share_pool, share_kept = (
        _pct(atyp.get("pool_share")) if typ else None,
        _pct(atyp.get("selected_share")) if typ else None,
    )
    if typ and not atyp:
        share_pool = share_kept = 0.0
    out = {
        "method": rep.get("method"),
        "pool": pool,
        "kept": kept,
        "topped_up": rep.get("topped_up") or 0,
        "share_atypical_pool": share_pool,
        "share_atypical_kept": share_kept,
        "enrichment": None,
    }
    if share_pool and share_kept is not None:
        out["enrichment"] = round(share_kept / share_pool, 2)
    return out


def eval_rows(run: Path, model: str) -> list[dict]:
    path = run / "eval" / model / "egosynth" / "per_sample.jsonl"
    return [r for r in read_log(path) if isinstance(r, dict)] if path.is_file() else []


def closed_correct(rows: list[dict], split: str) -> dict[str, float]:
    """{id: 0/1} of the split's closed questions that were scored."""
    return {
        str(r["id"]): float(r["accuracy"] >= 1.0)
        for r in rows
        if r.get("split") == split and r.get("task") == "closeqa" and isinstance(r.get("accuracy"), (int, float))
    }


def _correct(rows: list[dict], split: str) -> dict[str, float]:
    """{id: 0/1} of every scored question of the split: closed accuracy, open exact match."""
    out = closed_correct(rows, split)
    out.update(
        {
            str(r["id"]): float(r["em"] >= 1.0)
            for r in rows
            if r.get("split") == split and r.get("task") == "openqa" and isinstance(r.get("em"), (int, float))
        }
    )
    return out


def _eval_entry(rows: list[dict], split: str) -> dict | None:
    mine = [r for r in rows if r.get("split") == split]
    if not mine:
        return None
    closed = list(closed_correct(rows, split).values())
    open_em = [
        float(r["em"] >= 1.0) for r in mine if r.get("task") == "openqa" and isinstance(r.get("em"), (int, float))
    ]
    k = int(sum(closed))
    return {
        "accuracy": round(100.0 * k / len(closed), 2) if closed else None,
        "accuracy_ci95": wilson(k, len(closed)),
        "n_closed": len(closed),
        "n_open": len(open_em),
        "em": round(100.0 * sum(open_em) / len(open_em), 2) if open_em else None,
    }


def _paired(base: list[dict], trained: list[dict], split: str, every: bool = False) -> dict | None:
    """Trained minus base on the same questions: closed accuracy, or with `every` each question's
    correctness (closed accuracy, open exact match)."""
    pick = _correct if every else closed_correct
    return trained_minus_base(pick(trained, split), pick(base, split))


def trained_minus_base(trained: dict[str, float], base: dict[str, float]) -> dict | None:
    """Trained minus base on the questions both answered ({id: 0/1} each), in the summary's
    words: the difference, its paired 95% interval, McNemar p and the discordant counts."""
    from ego3s.eval.paired import compare_predictions

    r = compare_predictions(trained, base)
    if not r["n"]:
        return None
    return {
        "accuracy_delta": r["value"],
        "ci95": r["ci95"],
        "n": r["n"],
        "mcnemar_p": r.get("mcnemar_p"),
        "n_trained_only": r.get("n_a_only"),
        "n_base_only": r.get("n_b_only"),
        "interval": r["interval"],
    }


def _reliance(run: Path, model: str) -> dict | None:
    res = _json(run / "eval" / model / "results.json") or {}
    b = (res.get("benchmarks") or {}).get("egosynth") or {}
    cr = (b.get("icu") or {}).get("counterfactual_reliance")
    if not isinstance(cr, dict):
        return None
    out = {}
    for split in SPLITS:
        e = (cr.get("splits") or {}).get(split)
        if isinstance(e, dict):
            out[split] = {
                "reliance": e.get("value"),
                "ci95": e.get("ci95"),
                "full": e.get("full"),
                "context": e.get("context"),
                "n": e.get("n"),
            }
    return out or None


def _ecr(run: Path) -> dict:
    """Refreshes and those whose added samples training then drew (the curriculum's own count in
    `train/ecr_state.json`; None for a run written before it kept that count)."""
    state = _json(run / "train" / "ecr_state.json")
    if not isinstance(state, dict):
        return {"refreshes": None, "refreshes_used": None, "added": None, "added_drawn": None}
    totals = state.get("usage_totals") or {}
    return {
        "refreshes": state.get("refreshes"),
        "refreshes_used": state.get("refreshes_used"),
        "added": totals.get("added"),  # samples the refreshes put into the pool
        "added_drawn": totals.get("added_drawn"),  # of them, drawn into a training batch afterwards
    }


def _seconds(run: Path) -> float | None:
    m = _json(run / "manifest.json") or {}
    secs = [s.get("seconds") for s in (m.get("stages") or {}).values() if isinstance(s, dict)]
    secs = [s for s in secs if isinstance(s, (int, float))]
    return round(sum(secs), 1) if secs else None


def mechanisms(s: dict) -> dict:
    """The four checks, each {"showed": True / False / None, "detail": numbers}."""
    sel = s["select"]
    enr = sel.get("enrichment")
    csm = {
        "showed": None if enr is None else enr >= ENRICHMENT,
        "detail": {
            "enrichment": enr,
            "threshold": ENRICHMENT,
            "share_atypical_pool": sel.get("share_atypical_pool"),
            "share_atypical_kept": sel.get("share_atypical_kept"),
        },
    }
    p = (s.get("paired") or {}).get("test_atypical") or {}
    lo = (p.get("ci95") or [None])[0]
    gain = {
        "showed": None if lo is None else lo > 0,
        "detail": {"accuracy_delta": p.get("accuracy_delta"), "ci95": p.get("ci95")},
    }
    e = s["ecr"]
    ecr = {
        # shown only when refreshed samples were trained on: a refresh that only retired samples
        # changes the pool but brings nothing new to learn from
        "showed": (
            None
            if e.get("refreshes") is None or e.get("refreshes_used") is None
            else e["refreshes"] >= 1 and e["refreshes_used"] >= 1 and (e.get("added_drawn") or 0) >= 1
        ),
        "detail": dict(e),
    }
    rel = s.get("reliance") or {}
    rb = ((rel.get("base") or {}).get("test_atypical") or {}).get("reliance")
    rt = ((rel.get("trained") or {}).get("test_atypical") or {}).get("reliance")
    reliance = {"showed": None if rb is None or rt is None else rt > rb, "detail": {"base": rb, "trained": rt}}
    return {"csm_enrichment": csm, "atypical_gain": gain, "ecr_refresh": ecr, "reliance_rises": reliance}


def summarize_run(run_dir: str | Path, write: bool = True) -> dict:
    """The summary of a run folder of `ego3s run` (see the module docstring); parts the run lacks
    are None. Written to `<run_dir>/summary.json` unless `write` is false."""
    run = Path(run_dir)
    rows = {m: eval_rows(run, m) for m in MODELS}
    s: dict[str, Any] = {
        "select": _select(run),
        "eval": {m: {sp: _eval_entry(rows[m], sp) for sp in SPLITS} for m in MODELS},
        "paired": {sp: _paired(rows["base"], rows["trained"], sp) for sp in SPLITS},
        "paired_all": {sp: _paired(rows["base"], rows["trained"], sp, every=True) for sp in SPLITS},
        "reliance": {m: _reliance(run, m) for m in MODELS},
        "ecr": _ecr(run),
        "seconds": _seconds(run),
    }
    s["mechanisms"] = mechanisms(s)
    if write:
        write_json(run / "summary.json", s)
    return s
