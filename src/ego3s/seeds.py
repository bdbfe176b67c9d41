"""Several runs of one config that differ only in their seed, side by side and pooled.

    ego3s demo seed=1 out=runs/demo_s1        # ... one run per seed
    ego3s seeds runs/demo runs/demo_s1 runs/demo_s2 --out runs/seeds.json

One seed's ~150 closed questions per split resolve a gain of about 5 points only sometimes; the
seeds together say whether it is there on average. Two pooled figures, both in percentage points:

- `pooled`: trained minus base over every run's questions together (each seed draws its own world
  and test questions, so they are distinct questions), with the paired bootstrap interval and the
  exact McNemar p of `ego3s.eval.paired`. It counts test noise only.
- `over_seeds`: the mean of the per-seed differences with a t interval over the seeds, which also
  counts how much the seed (world, base model, training) moves the result. Wider, and the fairer
  one for "does the method help".

Runs must share their config apart from `out` and `seed`, and no seed may appear twice: pooling
runs of different configs, or one world twice, would say more than was measured.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ego3s.identity import flatten
from ego3s.summary import MODELS, SPLITS, closed_correct, eval_rows, summarize_run, trained_minus_base

_IGNORED = {"out", "seed"}


def t975(df: int) -> float:
    """Two-sided 95% quantile of Student's t with `df` degrees of freedom (scipy's)."""
    from scipy.stats import t

    if df < 1:
        raise ValueError(f"a t interval needs at least 2 seeds (df {df})")
    return float(t.ppf(0.975, df))


def _manifest(run: Path) -> dict:
    path = run / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a finished run of `ego3s run` ({e})") from None


def _test_fingerprint(run: Path) -> str | None:
    """A hash of the run's generated test sets, None when the run has none of its own."""
    files = sorted((run / "data").glob("test_*.jsonl"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def check_runs(runs: list[Path]) -> list[int]:
    """The runs' seeds; raises ValueError naming the runs when they are fewer than two, repeat a
    seed, share their test questions, or differ in any config key other than `out` and `seed`."""
    if len(runs) < 2:
        raise ValueError("give at least two run folders")
    configs = []
    for run in runs:
        config = _manifest(run).get("config")
        if not isinstance(config, dict) or not isinstance(config.get("seed"), int):
            raise ValueError(f"{run / 'manifest.json'}: no config with an integer seed")
        configs.append(config)
    seen: dict[int, Path] = {}
    for run, config in zip(runs, configs):
        if config["seed"] in seen:
            raise ValueError(
                f"{seen[config['seed']]} and {run} both ran seed {config['seed']}: pooling would count one world twice"
            )
        seen[config["seed"]] = run
    shared: dict[str, Path] = {}
    for run in runs:
        fp = _test_fingerprint(run)
        if fp is not None and fp in shared:
            raise ValueError(
                f"{shared[fp]} and {run} have the same test questions (data/test_*.jsonl): pooling would count them twice"
            )
        if fp is not None:
            shared[fp] = run
    ref = flatten(configs[0])
    for run, config in zip(runs[1:], configs[1:]):
        other = flatten(config)
        keys = set(ref) | set(other)
        differ = sorted(k for k in keys if k.split(".")[-1] not in _IGNORED and ref.get(k) != other.get(k))
        if differ:
            raise ValueError(f"{runs[0]} and {run} differ in config keys {', '.join(differ)}: not seeds of one config")
    return [c["seed"] for c in configs]


def _spread(values: list[float]) -> dict:
    """Mean, sample sd, min, max and the t interval of the mean over seeds."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    half = t975(len(values) - 1) * sd / math.sqrt(len(values))
    return {
        "mean": round(mean, 2),
        "sd": round(sd, 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "ci95": [round(mean - half, 2), round(mean + half, 2)],
        "n_seeds": len(values),
        "interval": "t interval over the seeds' means",
    }


def summarize_seeds(run_dirs: Sequence[str | Path]) -> dict:
    """Per seed: its summary's headline figures; pooled and over seeds: trained minus base on the
    closed questions of each split, the CSM enrichment, the change in reliance, and in how many
    seeds each mechanism showed."""
    runs = [Path(r) for r in run_dirs]
    seeds = check_runs(runs)
    per_seed: list[dict] = []
    pooled_rows: dict[str, dict[str, dict[str, float]]] = {m: {sp: {} for sp in SPLITS} for m in MODELS}
    for run, seed in zip(runs, seeds):
        s = summarize_run(run, write=False)
        for m in MODELS:
            rows = eval_rows(run, m)
            for sp in SPLITS:
                pooled_rows[m][sp].update({f"{seed}/{k}": v for k, v in closed_correct(rows, sp).items()})
        rel = s.get("reliance") or {}
        rel_b = ((rel.get("base") or {}).get("test_atypical") or {}).get("reliance")
        rel_t = ((rel.get("trained") or {}).get("test_atypical") or {}).get("reliance")
        per_seed.append(
            {
                "run": str(run),
                "seed": seed,
                "enrichment": (s.get("select") or {}).get("enrichment"),
                "paired": s["paired"],
                "reliance_change": None if rel_b is None or rel_t is None else round(rel_t - rel_b, 2),
                "ecr": s["ecr"],
                "showed": {k: v["showed"] for k, v in s["mechanisms"].items()},
            }
        )
    for sp in SPLITS:
        if not pooled_rows["trained"][sp] or not pooled_rows["base"][sp]:
            raise ValueError(
                f"no scored closed {sp} questions of both base and trained in the runs: evaluate them first"
            )
    pooled = {sp: trained_minus_base(pooled_rows["trained"][sp], pooled_rows["base"][sp]) for sp in SPLITS}
    over: dict[str, Any] = {}
    for sp in SPLITS:
        deltas = [p["paired"][sp]["accuracy_delta"] for p in per_seed if p["paired"].get(sp)]
        over[sp] = _spread(deltas) if len(deltas) > 1 else None
    for key in ("enrichment", "reliance_change"):
        vals = [p[key] for p in per_seed if isinstance(p[key], (int, float))]
        over[key] = _spread(vals) if len(vals) > 1 else None
    shown = {k: sum(bool(p["showed"].get(k)) for p in per_seed) for k in per_seed[0]["showed"]}
    return {
        "seeds": seeds,
        "per_seed": per_seed,
        "pooled": pooled,
        "over_seeds": over,
        "shown": shown,
        "n_runs": len(runs),
    }


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def format_seeds(s: dict) -> str:
    """The summary as a few lines of text: one per seed, then pooled and over seeds."""

    def ci(d: dict | None) -> str:
        if not d:
            return "-"
        value = d.get("accuracy_delta", d.get("mean"))
        return f"{value:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]"

    lines = ["seed  enrichment  test_atypical trained-base   test_id trained-base   reliance change  ECR used"]
    for p in s["per_seed"]:
        enr = f"{p['enrichment']:.2f}x" if isinstance(p["enrichment"], (int, float)) else "-"
        rel = f"{p['reliance_change']:+.1f}" if p["reliance_change"] is not None else "-"
        lines.append(
            f"{p['seed']:<5} {enr:<11} {ci(p['paired'].get('test_atypical')):<29} "
            f"{ci(p['paired'].get('test_id')):<22} {rel:<16} {p['ecr'].get('refreshes_used')}"
        )
    for sp in SPLITS:
        pl = s["pooled"][sp]
        lines.append(
            f"{sp}, pooled over {pl['n']} questions: {ci(pl)} "
            f"({pl['n_trained_only']} won, {pl['n_base_only']} lost, McNemar p {_p(pl['mcnemar_p'])}); "
            f"over seeds: {ci(s['over_seeds'][sp])}"
        )
    n = s["n_runs"]
    lines.append("mechanisms shown: " + ", ".join(f"{k} {v} of {n}" for k, v in s["shown"].items()))
    return "\n".join(lines)
