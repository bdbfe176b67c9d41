"""The report's Training and Curriculum sections: warm-up and GRPO curves, the reward variance with ECR
refreshes, the refresh table and whether refreshed samples were trained on.
"""

from __future__ import annotations

import re
from typing import Any

from .html import (
    PALETTE,
    _figure,
    _num,
    _png,
    _series,
    _smooth,
    _style,
    delta_cell,
    duration,
    esc,
    fmt,
    img_tag,
    missing,
    pct,
    table,
)
from .run import Run, _guard


def _points(hist: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, r in enumerate(hist):
        v = r.get(key)
        if _num(v):
            xs.append(r.get("step", i) if _num(r.get("step", i)) else i)
            ys.append(float(v))
    return xs, ys


def _component_keys(hist: list[dict]) -> list[str]:
    keys = []
    for r in hist:
        for k in r:
            if re.fullmatch(r"rewards/[^/]+/mean", k) and k not in keys:
                keys.append(k)
    return keys


def _warmup(run: Run) -> str:
    """The supervised warm-up (`warmup/log_history.json`): one line and, when logged, its loss."""
    h = run.json("warmup/log_history.json", "warm-up log")
    if not isinstance(h, list) or not h:
        return ""
    h = [r for r in h if isinstance(r, dict)]
    xs, ys = _points(h, "loss")
    summ = next((r for r in reversed(h) if "train_runtime" in r), {})
    bits = [
        f"{int(max(_points(h, 'step')[1]))} steps" if _points(h, "step")[1] else None,
        f"loss {fmt(ys[0])} → {fmt(ys[-1])}" if len(ys) >= 2 else None,
        f"train_loss {fmt(summ.get('train_loss'))}" if _num(summ.get("train_loss")) else None,
        duration(summ.get("train_runtime")) if _num(summ.get("train_runtime")) else None,
    ]
    out = "<h3>Supervised warm-up</h3><p class='small'>" + esc(", ".join(b for b in bits if b)) + ".</p>"
    if len(ys) >= 3:
        fig = _figure(4.2, 2.2)
        ax = fig.add_subplot(111)
        _series(ax, xs, ys, "loss", PALETTE[0])
        ax.set_title("warm-up loss", fontsize=9, loc="left")
        ax.set_xlabel("step", fontsize=8)
        _style(ax)
        out += img_tag(_png(fig), "warm-up loss", "half")
    return out


def section_train(run: Run, refresh_steps: list[int]) -> str:
    warm = _guard("warm-up", lambda: _warmup(run))
    hist, src = run.log_history()
    rewards = run.rewards() if not hist else []
    if not hist and rewards:
        hist, src = _history_from_rewards(rewards), "train/rewards.jsonl (no log_history.json: per-step means)"
    if not hist:
        return missing("no training log (train/log_history.json)", run.notes.get("training log", "")) + warm
    comps = _component_keys(hist)
    panels: list[tuple[str, list[tuple[str, str]]]] = [
        ("reward", [("reward", "total")] + [(k, k.split("/")[1].removesuffix("_reward")) for k in comps]),
        ("reward std (within group)", [("reward_std", "reward std")]),
        ("share of zero-variance groups", [("frac_reward_zero_std", "zero-std groups")]),
        ("KL to reference", [("kl", "KL")]),
        (
            "completion length (tokens)",
            [("completions/mean_length", "mean"), ("completions/clipped_ratio", "clipped share")][:1],
        ),
        ("interaction", [("interaction/mentions", "mentions"), ("interaction/coverage", "coverage")]),
        ("loss", [("loss", "loss")]),
    ]
    panels = [(t, [(k, lab) for k, lab in keys if _points(hist, k)[1]]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys]
    parts = [
        f'<p class="small">From <code>{esc(src)}</code>: {len(hist)} log entries'
        + (f", last step {int(max(_points(hist, 'step')[1]))}" if _points(hist, "step")[1] else "")
        + (
            f"; ECR refreshes at steps {', '.join(str(s) for s in refresh_steps)} (dotted lines)"
            if refresh_steps
            else ""
        )
        + ".</p>"
    ]
    if panels:
        ncol = 2 if len(panels) <= 4 else 3 if len(panels) in (5, 6, 9) else 4
        nrow = (len(panels) + ncol - 1) // ncol
        fig = _figure(13, 2.7 * nrow)
        for i, (title, keys) in enumerate(panels):
            ax = fig.add_subplot(nrow, ncol, i + 1)
            for j, (k, lab) in enumerate(keys):
                xs, ys = _points(hist, k)
                _series(
                    ax,
                    xs,
                    ys,
                    lab,
                    "#000000" if (k == "reward" and len(keys) > 1) else PALETTE[j % 8],
                    lw=2.0 if k == "reward" else 1.4,
                )
            for s in refresh_steps:
                ax.axvline(s, color="#D55E00", ls=":", lw=1.2)
            ax.set_title(title, fontsize=9, loc="left")
            if len(keys) > 1:
                ax.legend(
                    fontsize=7,
                    ncol=2,
                    loc="lower right",
                    bbox_to_anchor=(1.0, 1.0),
                    frameon=False,
                    handlelength=1.2,
                    columnspacing=0.8,
                )
            _style(ax)
            if i >= len(panels) - ncol:
                ax.set_xlabel("step", fontsize=8)
        parts.append(img_tag(_png(fig), "training curves", "wide"))
    # first vs last
    rows = []
    for _title, keys in panels:
        for k, _label in keys:
            _, ys = _points(hist, k)
            if len(ys) >= 2:
                n = max(1, len(ys) // 10)
                a, b = sum(ys[:n]) / n, sum(ys[-n:]) / n
                rows.append([k, fmt(a), fmt(b), delta_cell(b - a, 3, neutral=True)])
    if rows:
        parts.append(
            "<h3>Start vs end</h3><p class='small'>Means of the first and last 10% of the logged steps."
            "</p>" + table(["metric", "start", "end", "change"], rows)
        )
    summary = next((r for r in reversed(hist) if "train_runtime" in r), None)
    if summary:
        parts.append(
            '<p class="small">Trainer summary: '
            + ", ".join(f"{esc(k)} {esc(fmt(v))}" for k, v in summary.items() if _num(v))
            + "</p>"
        )
    return "".join(parts) + warm


def _history_from_rewards(recs: list[dict]) -> list[dict]:
    by: dict[int, dict[str, list[float]]] = {}
    for r in recs:
        st = r.get("step")
        comp = r.get("rewards") or {}
        if not _num(st) or not isinstance(comp, dict):
            continue
        d = by.setdefault(int(st), {})
        for name, vals in comp.items():
            vs = [float(v) for v in (vals or []) if _num(v)]
            if vs:
                d.setdefault(name, []).extend(vs)
    out = []
    for st in sorted(by):
        row: dict[str, Any] = {"step": st}
        for name, vs in by[st].items():
            key = "reward" if name == "total" else f"rewards/{name}_reward/mean"
            row[key] = sum(vs) / len(vs)
        out.append(row)
    return out


# curriculum -----------------------------------------------------------------------------------


def variance_from_rewards(recs: list[dict]) -> tuple[list[list[float]], list[list[float]]]:
    """Per step: mean within-group population variance of `total`, and the share of zero-variance
    groups (what the ECR monitor observes)."""
    by: dict[int, list[float]] = {}
    for r in recs:
        tot = (r.get("rewards") or {}).get("total")
        if not _num(r.get("step")) or not isinstance(tot, list):
            continue
        vals = [float(v) for v in tot if _num(v)]
        if not vals:
            continue
        mu = sum(vals) / len(vals)
        by.setdefault(int(r["step"]), []).append(sum((v - mu) ** 2 for v in vals) / len(vals))
    var = [[s, sum(v) / len(v)] for s, v in sorted(by.items())]
    zero = [[s, sum(x <= 1e-12 for x in v) / len(v)] for s, v in sorted(by.items())]
    return var, zero


def curriculum_data(run: Run) -> tuple[list, list, list[dict], str]:
    state, src = run.ecr_state()
    var, wm = [], []
    if state:
        mon = state.get("monitor") or state
        var = [p for p in mon.get("step_variance") or [] if isinstance(p, list) and len(p) == 2]
        wm = [p for p in mon.get("window_means") or [] if isinstance(p, list) and len(p) == 2]
    if not var:
        recs = run.rewards()
        if recs:
            var, _ = variance_from_rewards(recs)
            src = "train/rewards.jsonl (recomputed)"
    events = run.ecr_events(state)
    return var, wm, events, src or ""


def section_curriculum(run: Run, data) -> str:
    var, wm, events, src = data
    if not var and not events:
        return missing(
            "no curriculum data (train/ecr_state.json, train/rewards.jsonl)",
            run.notes.get("curriculum state", "ECR off or training not run"),
        )
    parts = [
        f'<p class="small">Reward variance from <code>{esc(src or "–")}</code>; {len(events)} refresh event(s).</p>'
    ]
    if var:
        fig = _figure(11, 3.2)
        ax = fig.add_subplot(111)
        xs, ys = [p[0] for p in var], [p[1] for p in var]
        ax.plot(xs, ys, color=PALETTE[0], lw=0.6, alpha=0.35, label="mean within-group reward variance (per step)")
        if len(ys) > 25:
            k = max(3, len(ys) // 30)
            ax.plot(xs, _smooth(ys, k), color=PALETTE[0], lw=1.6, label=f"moving average ({k} steps)")
        if wm:
            ax.plot([p[0] for p in wm], [p[1] for p in wm], "o-", color=PALETTE[1], lw=1.8, ms=4, label="window mean")
        top = max(ys) if ys else 1
        for e in events:
            if _num(e.get("step")):
                ax.axvline(e["step"], color="#D55E00", ls="--", lw=1.2)
                label = f"refresh @{e['step']}"
                if _num(e.get("pool_before")) and _num(e.get("pool_after")):
                    label += f"\npool {e['pool_before']}→{e['pool_after']}"
                if _num(e.get("ratio")):
                    label += f"\nratio {e['ratio']:.2f}"
                ax.annotate(
                    label,
                    (e["step"], top),
                    xytext=(4, 0),
                    textcoords="offset points",
                    fontsize=7,
                    color="#D55E00",
                    va="top",
                )
        ax.set_ylim(0, top * 1.12 if top > 0 else 1)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("reward variance", fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
        _style(ax)
        parts.append(img_tag(_png(fig), "reward variance timeline", "wide"))
    if events:
        rows = []
        for e in events:
            rows.append(
                [
                    fmt(e.get("step")),
                    fmt(e.get("ratio")),
                    fmt(e.get("window_mean")),
                    fmt(e.get("reference")),
                    f"{fmt(e.get('pool_before'))} → {fmt(e.get('pool_after'))}",
                    fmt(len(e["added"]) if isinstance(e.get("added"), list) else e.get("added")),
                    fmt(e.get("topped_up", 0)),
                    fmt(len(e["removed"]) if isinstance(e.get("removed"), list) else e.get("removed")),
                    fmt(e.get("probed")),
                    fmt(e.get("high_value")),
                    pct(e.get("atypical_share_probed")),
                    pct(e.get("atypical_share_high_value")),
                    pct(e.get("atypical_share_before")),
                    pct(e.get("atypical_share_after")),
                ]
            )
        parts.append(
            "<h3>Refresh events</h3>"
            + table(
                [
                    "step",
                    "variance ratio",
                    "window mean",
                    "reference",
                    "pool",
                    "added",
                    "of them closest misses",
                    "removed",
                    "probed",
                    "high-value",
                    "atypical probed",
                    "atypical high-value",
                    "atypical before",
                    "atypical after",
                ],
                rows,
                "events",
                num_from=0,
            )
        )
    else:
        parts.append(
            '<p class="small">No refresh: the reward variance never fell below the threshold (or ECR was off).</p>'
        )
    parts.append(ecr_usage_html(run.ecr_state()[0]))
    return "".join(parts)


def ecr_usage_html(state: dict | None) -> str:
    """The schedule check made before training (how many refreshes the planned steps allow) and,
    per refresh, the steps trained after it and the added samples drawn (`ecr_state.json`)."""
    if not isinstance(state, dict):
        return ""
    parts = []
    sched = state.get("schedule")
    if isinstance(sched, dict) and sched.get("message"):
        cls = "small" if sched.get("refreshes_possible") else "missing"
        parts.append(f'<p class="{cls}">{esc(sched["message"])}.</p>')
    usage = [u for u in state.get("refresh_usage") or [] if isinstance(u, dict)]
    if usage:
        parts.append(
            f'<h3>Refresh use</h3><p class="small">{fmt(state.get("refreshes_used"))} of '
            f"{fmt(state.get('refreshes'))} refresh(es) used: a refresh is unused when no optimizer step "
            "trained on a batch drawn after it, or when none of the samples it added was drawn.</p>"
        )
        parts.append(
            table(
                [
                    "step",
                    "optimizer steps after",
                    "added",
                    "added drawn (distinct)",
                    "draws of added",
                    "removed",
                    "used",
                ],
                [
                    [
                        fmt(u.get("step")),
                        fmt(u.get("steps_after")),
                        fmt(u.get("added")),
                        fmt(u.get("added_drawn")),
                        fmt(u.get("added_draws")),
                        fmt(u.get("removed")),
                        "yes" if u.get("used") else "no",
                    ]
                    for u in usage
                ],
                "usage",
                num_from=0,
                text_cols=[6],
            )
        )
    return "".join(parts)


# evaluation -----------------------------------------------------------------------------------
