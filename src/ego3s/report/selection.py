"""The report's Selection section: funnel, score histograms, kept vs pool breakdowns."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from .html import (
    C_ACC,
    C_BASE,
    PALETTE,
    Raw,
    _figure,
    _flatten,
    _num,
    _png,
    _short,
    _style,
    cfg_value,
    duration,
    esc,
    fmt,
    img_tag,
    missing,
    pct,
    table,
)
from .run import Run


def section_select(run: Run) -> str:
    rep = run.json("select/report.json", "selection report")
    sel = run.root / "select"
    csv_rows = _read_scores(sel / "scores.csv") if (sel / "scores.csv").is_file() else []
    if rep is None and not csv_rows:
        return missing("no selection (select/report.json)", run.notes.get("selection report", ""))
    parts = []
    if isinstance(rep, dict):
        line = (
            f'<p class="lead">Method <b>{esc(rep.get("method", "?"))}</b>: kept '
            f"<b>{fmt(rep.get('selected'))}</b> of {fmt(rep.get('candidates'))} candidates "
            f"(<b>{pct(rep.get('kept_fraction'))}</b>)"
        )
        if _num(rep.get("seconds")):
            line += f" in {duration(rep['seconds'])}"
        line += "."
        if rep.get("topped_up"):
            line += (
                f" {fmt(rep['topped_up'])} of them failed the filters and were added as the closest misses "
                f"(<code>min_kept</code>)."
            )
        line += "</p>"
        parts.append(line)
        th = rep.get("thresholds") or {}
        if th:
            parts.append(
                '<p class="small">Thresholds: '
                + ", ".join(
                    f"<code>{esc(k)}={esc(cfg_value(v))}</code>" for k, v in th.items() if not isinstance(v, dict)
                )
                + "</p>"
            )
        sc = rep.get("scoring")
        if isinstance(sc, dict) and sc:
            parts.append(
                '<p class="small">Scoring: '
                + ", ".join(f"{esc(k)} {esc(_short(v, 40))}" for k, v in _flatten(sc))
                + "</p>"
            )
        f = rep.get("funnel")
        if isinstance(f, dict) and f:
            parts.append("<h3>Funnel</h3>" + _funnel(f))
        elif rep.get("method") not in (None, "csm"):
            parts.append(f'<p class="small">No funnel: method {esc(rep.get("method"))} does not filter.</p>')
    else:
        parts.append(
            missing(
                "select/report.json",
                run.notes.get("selection report", "absent") if rep is None else "not a JSON object",
            )
        )

    hists = [p for p in (sel / "hist_coarse.png", sel / "hist_fine.png") if p.is_file()]
    if hists:
        parts.append(
            "<h3>Score histograms</h3><div class='row'>"
            + "".join(img_tag(p.read_bytes(), p.stem, "half") for p in hists)
            + "</div>"
        )
    elif csv_rows:
        png = _hist_from_csv(csv_rows, (rep or {}).get("thresholds") or {})
        if png:
            parts.append("<h3>Score histograms</h3>" + img_tag(png, "score histograms", "wide"))
    if csv_rows:
        parts.append(_scores_table(csv_rows))
    if isinstance(rep, dict) and isinstance(rep.get("breakdown"), dict) and rep["breakdown"]:
        parts.append("<h3>Selected vs pool</h3>" + _breakdown(rep["breakdown"]))
    return "".join(parts)


def _funnel(f: dict) -> str:
    scored = f.get("scored") or 0
    stages = [
        ("scored", f.get("scored")),
        ("valid scores", (f["scored"] - f.get("invalid", 0)) if _num(f.get("scored")) else None),
        ("after coarse (language prior)", f.get("after_coarse")),
        ("after fine (global context)", f.get("after_fine")),
        ("after interaction relevance", f.get("after_relevance")),
        ("kept", f.get("kept")),
    ]
    stages = [(k, v) for k, v in stages if _num(v)]
    rows, prev = [], None
    for k, v in stages:
        removed = (prev - v) if prev is not None else None
        rows.append([k, fmt(v), fmt(removed) if removed else "–", pct(v / scored) if scored else "–"])
        prev = v
    tbl = table(["stage", "samples", "removed", "of scored"], rows, "funnel")
    fig = _figure(6.2, 0.42 * len(stages) + 0.7)
    ax = fig.add_subplot(111)
    labels = [k for k, _ in stages][::-1]
    vals = [v for _, v in stages][::-1]
    colors = [C_ACC if k == "kept" else PALETTE[0] for k in labels]
    ax.barh(labels, vals, color=colors, height=0.62)
    top = max(vals) if vals else 1
    for y, v in enumerate(vals):
        ax.text(
            v + top * 0.01,
            y,
            f"{int(v):,}" + (f"  ({100 * v / scored:.1f}%)" if scored else ""),
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, top * 1.25)
    _style(ax)
    ax.grid(False)
    ax.set_xlabel("samples", fontsize=8)
    return f'<div class="row"><div>{tbl}</div>{img_tag(_png(fig), "selection funnel", "half")}</div>'


def _read_scores(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _f(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _b(x) -> bool | None:
    s = str(x).strip().lower()
    return True if s in ("true", "1", "yes") else False if s in ("false", "0", "no") else None


def _scores_table(rows: list[dict]) -> str:
    cols = [c for c in ("s_full", "s_blind", "s_context", "relevance", "coarse", "fine") if c in rows[0]]
    if not cols or "kept" not in rows[0]:
        return ""
    groups = {
        "kept": [r for r in rows if _b(r.get("kept"))],
        "rejected": [r for r in rows if _b(r.get("kept")) is False],
    }
    out = []
    for g, rs in groups.items():
        means = []
        for c in cols:
            vals = [v for v in (_f(r.get(c)) for r in rs) if v is not None]
            means.append(fmt(sum(vals) / len(vals)) if vals else "–")
        out.append([g, fmt(len(rs)), *means])
    return "<h3>Mean view scores, kept vs rejected</h3>" + table(["", "samples", *cols], out, "scores")


def _hist_from_csv(rows: list[dict], th: dict) -> bytes | None:
    keys = [k for k in ("coarse", "fine") if k in rows[0]]
    if not keys:
        return None
    fig = _figure(9, 3)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        groups: dict[str, list[float]] = {}
        for r in rows:
            v = _f(r.get(key))
            if v is not None:
                t = _b(r.get("typical"))
                groups.setdefault({True: "typical", False: "atypical"}.get(t, "all"), []).append(v)
        for j, (label, vals) in enumerate(sorted(groups.items())):
            ax.hist(vals, bins=30, alpha=0.6, color=PALETTE[j], label=f"{label} (n={len(vals)})")
        thr = th.get({"coarse": "lambda_c", "fine": "lambda_f"}[key])
        if _num(thr):
            ax.axvline(thr, color="k", ls="--", lw=1, label=f"threshold {thr}")
        ax.set_title(key, fontsize=9)
        ax.legend(fontsize=7)
        _style(ax)
    return _png(fig)


def _value_label(field_name: str, v: Any) -> str:
    """EgoSynth's `typical` flag reads better as typical / atypical."""
    if field_name == "typical" and str(v) in ("True", "False", "true", "false", "1", "0"):
        return "typical" if str(v) in ("True", "true", "1") else "atypical"
    return str(v)


def _breakdown(bd: dict) -> str:
    """Per metadata field: pool vs selected counts and shares (typical first, long fields folded),
    and a chart of the informative fields (2 to 10 values)."""
    fields = [(f, t) for f, t in bd.items() if isinstance(t, dict) and t]
    fields.sort(key=lambda ft: ft[0] != "typical")
    if not fields:
        return missing("no breakdown fields")
    tables = []
    for field_name, tab in fields:
        rows = []
        for v, d in tab.items():
            if not isinstance(d, dict):
                continue
            ps, ss = d.get("pool_share"), d.get("selected_share")
            enrich = (ss / ps) if _num(ps) and _num(ss) and ps > 0 else None
            rows.append(
                [
                    _value_label(field_name, v),
                    fmt(d.get("pool")),
                    pct(ps),
                    fmt(d.get("selected")),
                    pct(ss),
                    Raw(f"×{enrich:.2f}") if enrich is not None else "–",
                ]
            )
        t = table(["value", "pool", "pool share", "selected", "selected share", "enrichment"], rows)
        if len(rows) > 8:
            tables.append(
                f"<div><details><summary>by {esc(field_name)} ({len(rows)} values)</summary>{t}</details></div>"
            )
        else:
            tables.append(f"<div><h4>by {esc(field_name)}</h4>{t}</div>")
    show = [(f, {v: d for v, d in t.items() if isinstance(d, dict)}) for f, t in fields]
    show = [(f, t) for f, t in show if 2 <= len(t) <= 10][:2]
    img = ""
    if show:
        h = 0.34 * max(len(t) for _, t in show) + 1.3
        fig = _figure(3.6 * len(show) + 0.4, h)
        for i, (name, tab) in enumerate(show):
            ax = fig.add_subplot(1, len(show), i + 1)
            vals = list(tab)
            ys = range(len(vals))
            for off, key, color, label in (
                (-0.2, "pool_share", C_BASE, "pool"),
                (0.2, "selected_share", C_ACC, "selected"),
            ):
                xs = [100 * (tab[v].get(key) or 0) for v in vals]
                ax.barh([y + off for y in ys], xs, 0.4, color=color, label=label)
                for y, x in zip(ys, xs):
                    ax.text(x + 1, y + off, f"{x:.0f}%", va="center", fontsize=7)
            ax.set_yticks(list(ys), [_value_label(name, v) for v in vals], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlim(0, 100)
            ax.set_xlabel("share (%)", fontsize=8)
            ax.set_title(name, fontsize=9, loc="left")
            _style(ax)
            ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
        img = img_tag(_png(fig), "selected vs pool shares", "half")
    return f'<div class="row">{"".join(tables)}</div>{img}'


# training -------------------------------------------------------------------------------------
