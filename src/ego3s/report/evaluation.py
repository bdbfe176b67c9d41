"""The report's Evaluation and Samples sections: base vs trained metrics, breakdowns, interaction cue
utilization, and a few outputs side by side.
"""

from __future__ import annotations

import re
from itertools import zip_longest as _zip_longest
from typing import Any

from .html import (
    C_BASE,
    C_TRAINED,
    PALETTE,
    Raw,
    _figure,
    _num,
    _png,
    _short,
    _style,
    delta_cell,
    esc,
    fmt,
    img_tag,
    mfmt,
    missing,
    table,
)
from .run import Run, _guard_value


def _metrics(b: dict) -> dict[str, float | None]:
    return {
        k: v
        for k, v in (b.get("metrics") or {}).items()
        if (_num(v) or v is None) and k != "n" and not k.startswith("n_")
    }


def _n(b: dict) -> Any:
    return b.get("n_scored", b.get("n"))


def section_eval(run: Run) -> str:
    runs = run.eval_runs()
    notes = [v for k, v in run.notes.items() if k.startswith("evaluation")]
    parts = [f'<p class="missing">Unreadable: {esc(n)}</p>' for n in notes]
    for want in ("base", "trained"):
        if want not in runs and not (run.root / "eval" / want / "results.json").is_file():
            parts.append(missing(f"evaluation of the {want} model (eval/{want}/results.json)"))
    for n in [n for n, r in runs.items() if not r]:
        parts.append(f'<p class="missing">eval/{esc(n)}/results.json holds no benchmark results.</p>')
        del runs[n]
    if not runs:
        return "".join(parts)
    names = list(runs)
    has_delta = "base" in runs and "trained" in runs
    benches = []
    for n in names:
        for b in runs[n]:
            if b not in benches:
                benches.append(b)
    head = [*names] + (["Δ trained − base"] if has_delta else [])

    # overview: one row per (benchmark, metric)
    rows = []
    for b in benches:
        keys: list[str] = []
        for n in names:
            for k, v in _metrics(runs[n].get(b, {})).items():
                if k not in keys and v is not None:
                    keys.append(k)
        for i, k in enumerate(keys):
            vals = [runs[n].get(b, {}).get("metrics", {}).get(k) for n in names]
            row = [Raw(f"<b>{esc(b)}</b>") if i == 0 else "", k, *[mfmt(v) for v in vals]]
            if has_delta:
                bv, tv = (runs[n].get(b, {}).get("metrics", {}).get(k) for n in ("base", "trained"))
                row.append(delta_cell(tv - bv if _num(bv) and _num(tv) else None))
            rows.append(row)
        nrow = ["", Raw("<i>samples scored</i>"), *[fmt(_n(runs[n][b])) if b in runs[n] else "–" for n in names]]
        rows.append(nrow + ([""] if has_delta else []))
    parts.append("<h3>Overview</h3>" + table(["benchmark", "metric", *head], rows, "eval", num_from=2))

    # breakdowns and ICU per benchmark
    for b in benches:
        sub = []
        groups: list[str] = []
        for n in names:
            for g in runs[n].get(b, {}).get("by") or {}:
                if g not in groups:
                    groups.append(g)
        for g in groups:
            sub.append(_by_table(runs, names, b, g, has_delta))
        icu = _icu_table(runs, names, b, has_delta)
        if icu:
            sub.append(icu)
        if sub:
            parts.append(f"<h3>{esc(b)}</h3>" + "".join(sub))
        chart = _typical_chart(runs, names, b)
        if chart:
            parts.append(chart)
    return "".join(parts)


def _by_table(runs: dict, names: list[str], bench: str, group: str, has_delta: bool) -> str:
    cats: list[str] = []
    keys: list[str] = []
    for n in names:
        tab = (runs[n].get(bench, {}).get("by") or {}).get(group) or {}
        for c, m in tab.items():
            if isinstance(m, dict):
                if c not in cats:
                    cats.append(c)
                for k, v in m.items():
                    if k != "n" and _num(v) and k not in keys:
                        keys.append(k)
    if not cats or not keys:
        return ""
    header = [group, "n"]
    for k in keys:
        header += [f"{k} {n}" for n in names] + ([f"{k} Δ"] if has_delta else [])
    rows = []
    for c in cats:
        ms = [((runs[n].get(bench, {}).get("by") or {}).get(group) or {}).get(c) or {} for n in names]
        ns = [m.get("n") for m in ms if _num(m.get("n"))]
        row = [c, fmt(ns[0]) if ns else "–"]
        for k in keys:
            vals = [m.get(k) for m in ms]
            row += [mfmt(v) for v in vals]
            if has_delta:
                bv, tv = vals[names.index("base")], vals[names.index("trained")]
                row.append(delta_cell(tv - bv if _num(bv) and _num(tv) else None))
        rows.append(row)
    label = "typical vs atypical" if group == "typical" else f"by {group}"
    return f"<h4>{esc(label)}</h4>" + table(header, rows, "eval")


def _icu_rows(b: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    icu = b.get("icu") or {}
    t, a = icu.get("textual") or {}, icu.get("attention") or {}
    if t:
        out["textual: correct answers naming an interaction object (%)"] = t.get("share")
        out["textual: all annotated answers naming one (%)"] = t.get("named_all")
    if a:
        out["attention in interaction boxes (%)"] = a.get("in_box")
        out["box area share = chance (%)"] = a.get("area")
        out["attention / area"] = a.get("ratio")
    cr = icu.get("counterfactual_reliance") or {}
    for split, e in (cr.get("splits") or {}).items():  # full - context accuracy, paired per question
        lo, hi = (e.get("ci95") or [None, None])[:2]
        out[f"counterfactual reliance, full − context accuracy (pp), {split}"] = e.get("value")
        out[f"  95% interval, n ({split})"] = (
            f"[{lo:.2f}, {hi:.2f}], n={e.get('n')}" if _num(lo) and _num(hi) else f"n={e.get('n')}"
        )
    for k, v in (b.get("metrics") or {}).items():
        if k.startswith("icu") and (_num(v) or v is None):
            out[k] = v
    return out


def _icu_table(runs: dict, names: list[str], bench: str, has_delta: bool) -> str:
    per = {n: _icu_rows(runs[n].get(bench, {})) for n in names}
    keys: list[str] = []
    for d in per.values():
        keys += [k for k in d if k not in keys]
    if not keys:
        return ""
    rows = []
    for k in keys:
        vals = [per[n].get(k) for n in names]
        row = [k, *[v if isinstance(v, str) else mfmt(v) for v in vals]]
        if has_delta:
            bv, tv = per["base"].get(k), per["trained"].get(k)
            row.append(delta_cell(tv - bv if _num(bv) and _num(tv) else None))
        rows.append(row)
    return "<h4>Interaction cue utilization (ICU)</h4>" + table(
        ["measure", *names] + (["Δ"] if has_delta else []), rows, "eval"
    )


def _typical_chart(runs: dict, names: list[str], bench: str) -> str:
    """Bars of the main metric per typical/atypical category, one bar per evaluated model."""
    tabs = {n: (runs[n].get(bench, {}).get("by") or {}).get("typical") for n in names}
    tabs = {n: t for n, t in tabs.items() if isinstance(t, dict) and t}
    if not tabs:
        return ""
    cats = list(dict.fromkeys(c for t in tabs.values() for c in t))
    metric = None
    for k in ("accuracy", "rouge_l", "em"):
        if any(_num((t.get(c) or {}).get(k)) for t in tabs.values() for c in cats):
            metric = k
            break
    if metric is None or len(cats) > 10:
        return ""
    fig = _figure(6.5, 2.8)
    ax = fig.add_subplot(111)
    w = 0.8 / len(tabs)
    for i, (n, t) in enumerate(tabs.items()):
        vals = [(t.get(c) or {}).get(metric) for c in cats]
        xs = [j + (i - (len(tabs) - 1) / 2) * w for j in range(len(cats))]
        color = {"base": C_BASE, "trained": C_TRAINED}.get(n, PALETTE[(i + 1) % 8])
        bars = ax.bar(xs, [v if _num(v) else 0 for v in vals], w * 0.95, color=color, label=n)
        for bar, v in zip(bars, vals):
            if _num(v):
                ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(cats)), cats, fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    ax.set_title(f"{bench}: {metric} by typicality", fontsize=9, loc="left")
    ax.legend(fontsize=7)
    _style(ax)
    return img_tag(_png(fig), f"{bench} typical vs atypical", "half")


# samples --------------------------------------------------------------------------------------

_TAG = re.compile(r"(<think>.*?</think>|<answer>.*?</answer>)", re.S)


def render_output(text: Any, limit: int = 1800) -> str:
    """Escaped model output with the `<think>` and `<answer>` blocks (tags shown) highlighted."""
    s = "" if text is None else str(text)
    if len(s) > limit:
        s = s[:limit] + " …[truncated]"
    out = []
    for part in _TAG.split(s):
        if not part:
            continue
        if part.startswith("<think>"):
            out.append(f'<span class="think">{esc(part)}</span>')
        elif part.startswith("<answer>"):
            out.append(f'<span class="answer">{esc(part)}</span>')
        else:
            out.append(esc(part))
    return "".join(out) or '<span class="small">(empty)</span>'


def _correct(r: dict) -> bool | None:
    """Whether a scored per-sample row is right (`correct`, else accuracy / exact match of 1);
    None when the row carries no verdict (open answers scored by similarity only)."""
    for k in ("correct", "accuracy", "em"):
        v = r.get(k)
        if isinstance(v, bool):
            return v
        if _num(v):
            return v >= 1.0 - 1e-9
    return None


def section_samples(run: Run, k: int = 4) -> str:
    names = [n for n in ("base", "trained") if (run.root / "eval" / n).is_dir()]
    if not names:
        return missing("no predictions (eval/base, eval/trained)")
    preds = {n: run.predictions(n) for n in names}
    if len(names) == 2:
        benches = [b for b in preds["base"] if b in preds["trained"]]
    else:
        benches = list(preds[names[0]])
    if not benches:
        return missing("no predictions to compare", "base and trained share no benchmark")
    # round-robin over outcomes (fixed, regressed, both right, both wrong, unscored), then over
    # benchmarks, ids in sorted order: a fair mix, not the wins only
    order = [(False, True), (True, False), (True, True), (False, False)]
    buckets: dict[int, list[tuple[str, str]]] = {}
    for b in benches:
        ids = sorted(set.intersection(*(set(i for i, r in preds[n][b].items() if "output" in r) for n in names)))
        for i in ids:
            key = tuple(_correct(preds[n][b][i]) for n in names) if len(names) == 2 else None
            buckets.setdefault(order.index(key) if key in order else len(order), []).append((b, i))
    for lst in buckets.values():  # interleave benchmarks inside each bucket
        by_b: dict[str, list] = {}
        for b, i in lst:
            by_b.setdefault(b, []).append((b, i))
        lst[:] = [x for tup in _zip_longest(*by_b.values()) for x in tup if x is not None]
    picks: list[tuple[str, str]] = []
    queues = [list(buckets[j]) for j in sorted(buckets)]
    while len(picks) < k and any(queues):
        for q in queues:
            if q and len(picks) < k:
                picks.append(q.pop(0))
    if not picks:
        return missing("no sample with an output in both runs")
    note = (
        ""
        if len(names) == 2
        else f'<p class="missing">Only the {esc(names[0])} model was evaluated; no side-by-side comparison.</p>'
    )
    parts = [
        note,
        f'<p class="small">{len(picks)} sample{"s" if len(picks) != 1 else ""}'
        + ("; drawn in turn from those the training fixed, broke, left right and left wrong" if len(names) == 2 else "")
        + ".</p>",
    ]
    questions = _guard_value(lambda: run.samples({i for _, i in picks}), {})
    for b, i in picks:
        recs = {n: preds[n][b][i] for n in names}
        any_rec = next(iter(recs.values()))
        gold = next((r.get("gold") for r in recs.values() if r.get("gold") is not None), None)
        question = next((r.get("question") for r in recs.values() if r.get("question")), None)
        src = questions.get(i) or {}
        question = question or src.get("question")
        options = src.get("options") if isinstance(src.get("options"), list) else None
        if gold is not None and options and src.get("answer_text") and str(gold) == str(src.get("answer")):
            gold = f"{gold} ({src['answer_text']})"
        elif gold is None:
            gold = src.get("answer")
        head = f'<div class="sample"><div class="shead"><b>{esc(b)}</b> · <code>{esc(i)}</code>'
        if gold is not None:
            head += f" · gold <b>{esc(_short(gold, 120))}</b>"
        for key in ("typical", "split", "kind", "category"):
            if any_rec.get(key) is not None:
                head += f' · <span class="tag">{esc(any_rec[key])}</span>'
        head += "</div>"
        if question:
            opts = (
                "".join(f" <b>{chr(65 + j)}.</b> {esc(_short(o, 80))}" for j, o in enumerate(options[:10]))
                if options
                else ""
            )
            head += f'<p class="q">{esc(_short(question, 400))}{opts}</p>'
        cols = []
        for n in names:
            r = recs[n]
            c = _correct(r)
            badge = {True: '<span class="st ok">correct</span>', False: '<span class="st bad">wrong</span>'}.get(c, "")
            ext = r.get("extracted", r.get("pred"))
            cols.append(
                f'<div class="col"><div class="chead">{esc(n)} {badge}'
                f'<span class="small"> extracted: <code>{esc(_short(ext, 80))}</code></span></div>'
                f'<pre class="out">{render_output(r.get("output"))}</pre></div>'
            )
        parts.append(head + f'<div class="cols">{"".join(cols)}</div></div>')
    return "".join(parts)
