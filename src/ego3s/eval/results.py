"""Scoring a benchmark's predictions and reporting the results: metrics with confidence
intervals, breakdowns, reliance on the interaction, and the markdown, CSV and console tables;
`track_results` sends every metric to the trackers. `ego3s.eval.run` calls these after
generation."""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import TYPE_CHECKING

from ego3s.data.schema import Sample

if TYPE_CHECKING:
    from ego3s.eval.run import EvalConfig


def _correct(bench, sample: Sample, output: str) -> bool:
    from ego3s.answers import exact_match

    pred = bench.extract(sample, output)
    if sample.task == "closeqa":
        return pred == sample.answer
    return exact_match(pred or "", sample.answer) >= 1.0


def _reliance_records(bench, samples: list[Sample], records: dict[str, dict]) -> dict[str, dict]:
    """`{id: reliance_scores}` of the samples predicted (not skipped) in `records`."""
    from ego3s.eval.icu import reliance_scores

    out = {}
    for s in samples:
        rec = records.get(s.id)
        if rec is not None and "skipped" not in rec:
            out[s.id] = reliance_scores(s, bench.extract(s, rec.get("output") or ""))
    return out


def score_benchmark(
    bench,
    path,
    samples: list[Sample],
    records: dict[str, dict],
    cfg: EvalConfig,
    judge=None,
    context_records: dict[str, dict] | None = None,
) -> tuple[dict, list[dict]]:
    """The results of one benchmark from its merged prediction records; (summary, per-sample rows).
    `context_records`: with `icu` on the full view, the context view's records of the annotated
    samples (`<out>/<benchmark>/context/`), for the counterfactual reliance."""
    from ego3s.answers import extract_think
    from ego3s.eval.icu import counterfactual_reliance, named_interaction, summarize_attention, textual_icu

    skipped = Counter()
    scored, outputs, missing = [], {}, 0
    for s in samples:
        rec = records.get(s.id)
        if rec is None:
            missing += 1
        elif "skipped" in rec:
            skipped[rec["skipped"]] += 1
        else:
            scored.append(s)
            outputs[s.id] = rec.get("output") or ""
    res = (
        bench.score(scored, outputs, judge=judge if bench.needs_judge else None)
        if scored
        else {
            "benchmark": bench.name,
            "n": 0,
            "missing_predictions": 0,
            "metrics": {},
            "by": {},
            "judge": None,
            "per_sample": [],
        }
    )
    rows = res.pop("per_sample", [])
    by_id = {r.get("id"): r for r in rows}
    for s in scored:
        r = by_id.get(s.id)
        if r is not None:
            rec = records[s.id]
            r["output"] = rec.get("output")
            if "icu_attention" in rec:
                r["icu_attention"] = rec["icu_attention"]
    recs = [records[s.id] for s in scored]
    gen = sum(r.get("new_tokens", 0) for r in recs)
    summary = {
        "benchmark": bench.name,
        "path": str(path),
        "n_samples": len(samples),
        "n_scored": len(scored),
        "n_missing": missing,
        "skipped": dict(sorted(skipped.items())),
        "n_skipped": sum(skipped.values()),
        **{k: v for k, v in res.items() if k not in ("benchmark", "n")},
        "timing": {
            "generate_s": round(sum(r.get("t_generate", 0) / max(r.get("batch_size", 1), 1) for r in recs), 3),
            "load_s": round(sum(r.get("t_load", 0) for r in recs), 3),
            "new_tokens": gen,
            "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in recs),
            "ranks": sorted({r.get("rank") for r in recs if r.get("rank") is not None}),
        },
    }
    if cfg.icu:
        text_rows = []
        for s in scored:
            out = outputs[s.id]
            text_rows.append({"correct": _correct(bench, s, out), "named": named_interaction(extract_think(out), s)})
        att = [records[s.id].get("icu_attention") for s in scored]
        summary["icu"] = {
            "textual": textual_icu(text_rows),
            "attention": summarize_attention(att),
            "attention_layers": cfg.icu_layers,
            "attention_errors": sum(1 for s in scored if "icu_error" in records[s.id]),
        }
        if cfg.view == "full":
            summary["icu"]["counterfactual_reliance"] = counterfactual_reliance(
                samples,
                _reliance_records(bench, samples, records),
                _reliance_records(bench, samples, context_records or {}),
            )
        else:
            summary["icu"]["counterfactual_reliance"] = None
            summary["icu"]["counterfactual_reliance_note"] = f"needs the full view (this run: {cfg.view})"
    return summary, rows


def _reliance_md(cr: dict) -> list[str]:
    rows = []
    for split, e in cr["splits"].items():
        rows.append(
            [
                split,
                e["value"],
                _ci(e["ci95"]),
                e["full"],
                e["context"],
                e["n"],
                None if e.get("mcnemar_p") is None else f"{e['mcnemar_p']:.3g}",
            ]
        )
    return [
        "",
        f"counterfactual reliance, {cr['difference']}; {cr['interval']}; excluded "
        f"{cr['n_excluded']} ({', '.join(f'{k} {v}' for k, v in cr['excluded'].items()) or 'none'}):",
        "",
    ] + _md_table(["split", "reliance (pp)", "95% interval", "full (%)", "context (%)", "n", "McNemar p"], rows)


def _ci(ci) -> str:
    lo, hi = (ci or [None, None])[:2]
    return "-" if lo is None or hi is None else f"[{lo:.2f}, {hi:.2f}]"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _numeric(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) or v is None}


def _md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return lines


def _flat_by(by: dict) -> list[tuple[str, str, dict]]:
    """(group, category, metrics) of a score's `by` (nested dicts of `{"n", metric...}`)."""
    out = []
    for group, table in (by or {}).items():
        if isinstance(table, dict):
            for cat, m in table.items():
                if isinstance(m, dict):
                    out.append((group, str(cat), _numeric(m)))
    return out


def results_markdown(results: dict) -> str:
    """`results.md`: an overview, then per benchmark its metrics, breakdowns, skips and ICU."""
    benches = results["benchmarks"]
    names = []
    for b in benches.values():
        for k in _numeric(b.get("metrics", {})):
            if k not in names and k != "n":
                names.append(k)
    lines = [
        f"# Evaluation: {results['model']}",
        "",
        f"view `{results['config']['view']}`, format `{results['config']['fmt']}`, "
        f"{results['world_size']} rank(s), model fingerprint `{results['model_fingerprint']}`",
        "",
    ]
    lines += _md_table(
        ["benchmark", "scored", "skipped", *names],
        [
            [b["benchmark"], b["n_scored"], b["n_skipped"], *[b.get("metrics", {}).get(k) for k in names]]
            for b in benches.values()
        ],
    )
    for b in benches.values():
        lines += [
            "",
            f"## {b['benchmark']}",
            "",
            f"{b['n_scored']} scored of {b['n_samples']} from `{b['path']}`"
            + (f"; skipped: {', '.join(f'{k} {v}' for k, v in b['skipped'].items())}" if b["skipped"] else "")
            + (f"; not yet predicted: {b['n_missing']}" if b["n_missing"] else ""),
            "",
        ]
        lines += _md_table(["metric", "value"], [[k, v] for k, v in _numeric(b.get("metrics", {})).items()])
        groups: dict[str, list] = {}
        for group, cat, m in _flat_by(b.get("by")):
            groups.setdefault(group, []).append((cat, m))
        for group, cats in groups.items():
            cols = [k for k in cats[0][1] if k != "n"]
            lines += ["", f"by {group}:", ""]
            lines += _md_table([group, "n", *cols], [[c, m.get("n"), *[m.get(k) for k in cols]] for c, m in cats])
        if b.get("judge"):
            j = b["judge"]
            lines += [
                "",
                f"judge `{j.get('model')}` ({j.get('rubric')}): judged {j.get('judged')}, failed "
                f"{j.get('judge_failed')}, cache hits {j.get('cache_hits')}",
            ]
        if b.get("icu"):
            t, a = b["icu"]["textual"], b["icu"]["attention"]
            lines += ["", "interaction cue utilization:", ""]
            lines += _md_table(
                ["form", "value (%)", "chance (%)", "n"],
                [
                    ["textual (correct answers naming an interaction object)", t["share"], None, t["n_correct"]],
                    [f"attention in boxes ({b['icu']['attention_layers']} layers)", a["in_box"], a["area"], a["n"]],
                ],
            )
            if b["icu"].get("counterfactual_reliance"):
                lines += _reliance_md(b["icu"]["counterfactual_reliance"])
    return "\n".join(lines) + "\n"


def results_csv(results: dict) -> str:
    """`results.csv`: long format, one row per (benchmark, group, category, metric)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["benchmark", "group", "category", "n", "metric", "value"])
    for b in results["benchmarks"].values():
        m = _numeric(b.get("metrics", {}))
        for k, v in m.items():
            w.writerow([b["benchmark"], "overall", "all", b["n_scored"], k, "" if v is None else v])
        for group, cat, mm in _flat_by(b.get("by")):
            for k, v in mm.items():
                if k != "n":
                    w.writerow([b["benchmark"], group, cat, mm.get("n"), k, "" if v is None else v])
        for reason, n in b["skipped"].items():
            w.writerow([b["benchmark"], "skipped", reason, n, "count", n])
        if b.get("icu"):
            t, a = b["icu"]["textual"], b["icu"]["attention"]
            w.writerow(
                [b["benchmark"], "icu", "textual", t["n_correct"], "share", "" if t["share"] is None else t["share"]]
            )
            for k in ("in_box", "area", "ratio"):
                w.writerow([b["benchmark"], "icu", "attention", a["n"], k, "" if a.get(k) is None else a[k]])
            cr = b["icu"].get("counterfactual_reliance")
            for split, e in ((cr or {}).get("splits") or {}).items():
                lo, hi = e["ci95"]
                for k, v in (
                    ("reliance", e["value"]),
                    ("reliance_ci95_lo", lo),
                    ("reliance_ci95_hi", hi),
                    ("full", e["full"]),
                    ("context", e["context"]),
                ):
                    w.writerow([b["benchmark"], "counterfactual_reliance", split, e["n"], k, "" if v is None else v])
    return buf.getvalue()


def results_table(results: dict) -> str:
    """The printed overview: one line per benchmark with its overall metrics."""
    lines = []
    for b in results["benchmarks"].values():
        metrics = ", ".join(
            f"{k} {_fmt(v)}" for k, v in _numeric(b.get("metrics", {})).items() if k != "n" and v is not None
        )
        skip = (
            f", skipped {b['n_skipped']} ({', '.join(f'{k} {v}' for k, v in b['skipped'].items())})"
            if b["n_skipped"]
            else ""
        )
        lines.append(f"{b['benchmark']:<20} n={b['n_scored']}{skip}: {metrics or '-'}")
        if b.get("icu"):
            t, a = b["icu"]["textual"], b["icu"]["attention"]
            lines.append(
                f"{'':<20} ICU textual {_fmt(t['share'])} (of {t['n_correct']} correct), attention in boxes "
                f"{_fmt(a['in_box'])} vs area {_fmt(a['area'])} (n={a['n']})"
            )
            cr = b["icu"].get("counterfactual_reliance")
            if cr:
                parts = [f"{k} {_fmt(e['value'])} {_ci(e['ci95'])} (n={e['n']})" for k, e in cr["splits"].items()]
                lines.append(
                    f"{'':<20} counterfactual reliance, full - context accuracy (pp, 95% interval): "
                    + "; ".join(parts)
                    + f"; excluded {cr['n_excluded']}"
                )
    return "\n".join(lines)


def examples_text(bench, samples: list[Sample], records: dict, k: int = 3) -> str:
    lines = [f"--- {bench.name}: {k} samples"]
    shown = 0
    for s in samples:
        rec = records.get(s.id)
        if rec is None or "skipped" in rec:
            continue
        gold = f"{s.answer} ({s.answer_text})" if s.task == "closeqa" else s.answer
        lines += [
            f"[{s.id}] Q: {s.question.strip()[:300]}",
            f"    output:    {rec.get('output', '')[:300]!r}",
            f"    extracted: {rec.get('extracted')!r}   gold: {gold!r}",
        ]
        shown += 1
        if shown >= k:
            break
    return "\n".join(lines)


def track_results(cfg: EvalConfig, results: dict) -> None:
    """Every numeric metric of every benchmark, and its breakdowns, to the trackers of
    `cfg.report_to`, as `eval/<benchmark>/<split>/<metric>` (split: the registry entry's, e.g.
    egoschema/subset, egothink/Activity) at step `cfg.tracking_step`."""
    from ego3s.eval.benchmarks import get_benchmark
    from ego3s.tracking import eval_metrics, open_tracker

    with open_tracker(cfg.report_to, cfg.out, run_name="eval", config=cfg.public(), where="eval.report_to") as t:
        if not t.names:
            return
        for name, summary in results["benchmarks"].items():
            b = get_benchmark(name)
            t.scalars(
                eval_metrics(b.family, b.split, summary.get("metrics") or {}, summary.get("by")), step=cfg.tracking_step
            )
