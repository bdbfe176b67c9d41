"""The report's top: parts found, headline cards and what this run shows (the four mechanisms)."""

from __future__ import annotations

from typing import Any

from .evaluation import _metrics
from .html import Raw, _latest_checkpoint_file, _num, duration, esc, fmt, mfmt, pct
from .run import Run
from .training import _points


def _parts_line(run: Run) -> str:
    r = run.root
    checks = [
        ("manifest", (r / "manifest.json").is_file()),
        ("selection", (r / "select" / "report.json").is_file()),
        (
            "training log",
            (r / "train" / "log_history.json").is_file()
            or (r / "train" / "trainer_state.json").is_file()
            or _latest_checkpoint_file(r / "train", "trainer_state.json") is not None,
        ),
        ("reward log", (r / "train" / "rewards.jsonl").is_file()),
        ("curriculum", (r / "train" / "ecr_state.json").is_file() or (r / "train" / "ecr_events.jsonl").is_file()),
        ("eval base", (r / "eval" / "base" / "results.json").is_file()),
        ("eval trained", (r / "eval" / "trained" / "results.json").is_file()),
    ]
    return " ".join(
        f'<span class="st {"ok" if ok else "skip"}">{"✓" if ok else "✗"} {esc(n)}</span>' for n, ok in checks
    )


def _main_metric(b: dict) -> str | None:
    ms = {k: v for k, v in _metrics(b).items() if _num(v)}
    return next((k for k in ("accuracy", "rouge_l", "em", "score") if k in ms), next(iter(ms), None))


def summary_cards(run: Run, cur: Any) -> str:
    """The headline numbers: selection share, training length and reward, refreshes, and the
    main metric of each benchmark, base -> trained."""
    cards = []
    rep = run.json("select/report.json", "selection report")
    if isinstance(rep, dict) and _num(rep.get("selected")):
        topped = rep.get("topped_up") or 0
        note = f"{pct(rep.get('kept_fraction'))} kept by {rep.get('method', '?')}"
        if topped:
            note = f"{fmt(rep['selected'] - topped)} passed {rep.get('method', '?')}, {fmt(topped)} topped up"
        cards.append(("selected", f"{fmt(rep['selected'])} / {fmt(rep.get('candidates'))}", note))
    hist, _ = run.log_history()
    _, steps = _points(hist, "step")
    _, rew = _points(hist, "reward")
    if steps:
        tr = ((run.manifest() or {}).get("stages") or {}).get("train")
        sec = tr.get("seconds") if isinstance(tr, dict) else None
        cards.append(("training", f"{int(max(steps)):,} steps", duration(sec) if _num(sec) else ""))
    if len(rew) >= 2:
        n = max(1, len(rew) // 10)
        cards.append(("reward", f"{fmt(sum(rew[:n]) / n)} → {fmt(sum(rew[-n:]) / n)}", "first vs last 10% of steps"))
    if isinstance(cur, tuple) and (cur[0] or cur[2]):
        ev = cur[2]
        cards.append(
            (
                "ECR refreshes",
                str(len(ev)),
                ("at steps " + ", ".join(str(e.get("step")) for e in ev[:6])) if ev else "variance never stagnated",
            )
        )
    runs = run.eval_runs()
    if "trained" in runs:
        for b, t in list(runs["trained"].items())[:4]:
            k = _main_metric(t)
            if k is None:
                continue
            tv = t["metrics"][k]
            bv = (runs.get("base", {}).get(b) or {}).get("metrics", {}).get(k)
            if _num(bv):
                d = tv - bv
                sub = Raw(
                    f'{esc(k)} <span class="{"pos" if d > 0 else "neg" if d < 0 else ""}">{d:+.2f}</span> '
                    f"vs base {mfmt(bv)}"
                )
            else:
                sub = k
            cards.append((b, mfmt(tv), sub))
    if not cards:
        return ""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="ck">{esc(k)}</div><div class="cv">{esc(v)}</div>'
            f'<div class="cs">{sub if isinstance(sub, Raw) else esc(sub)}</div></div>'
            for k, v, sub in cards
        )
        + "</div>"
    )


def _ci_text(ci: Any) -> str:
    lo, hi = (list(ci) + [None, None])[:2] if isinstance(ci, (list, tuple)) else (None, None)
    return f"[{lo:+.1f}, {hi:+.1f}]" if _num(lo) and _num(hi) else "(no interval)"


def _one(x: Any, sign: bool = False) -> str:
    """A percentage or ratio with one decimal ("–" when absent)."""
    return "–" if not _num(x) else f"{x:+.1f}" if sign else f"{x:.1f}"


def mechanism_lines(s: dict) -> list[tuple[bool | None, str]]:
    """The four mechanisms of the method in plain words, each with whether it showed in this run
    (True, False, or None when the run did not measure it), from `summary.json`'s content."""
    m, sel, ev = s.get("mechanisms") or {}, s.get("select") or {}, s.get("eval") or {}
    out = []
    c = m.get("csm_enrichment") or {}
    if c.get("showed") is None:
        out.append(
            (
                None,
                "Counterfactual selection: not measured (no selection report with EgoSynth's typical/atypical flags).",
            )
        )
    else:
        d = c["detail"]
        verdict = (
            "kept mostly the samples only the hand can answer"
            if c["showed"]
            else f"did NOT enrich the hard samples {_one(d['threshold'])}-fold"
        )
        out.append(
            (
                c["showed"],
                f"Counterfactual selection {verdict}: {fmt(sel.get('kept'))} of {fmt(sel.get('pool'))} "
                f"samples kept, {_one(d['share_atypical_kept'])}% atypical against "
                f"{_one(d['share_atypical_pool'])}% in the pool ({_one(d['enrichment'])}x; the bar is "
                f"{_one(d['threshold'])}x).",
            )
        )
    g = m.get("atypical_gain") or {}
    base = ((ev.get("base") or {}).get("test_atypical") or {}).get("accuracy")
    trained = ((ev.get("trained") or {}).get("test_atypical") or {}).get("accuracy")
    if g.get("showed") is None:
        out.append((None, "Trained vs base on atypical clips: not measured (no paired evaluation of both models)."))
    else:
        d = g["detail"]
        verdict = (
            "The trained model beats the base"
            if g["showed"]
            else "The trained model does NOT beat the base with confidence"
        )
        out.append(
            (
                g["showed"],
                f"{verdict} on atypical clips (the hand contradicts every prior): closed-question "
                f"accuracy {_one(base)}% -> {_one(trained)}%, a paired difference of "
                f"{_one(d['accuracy_delta'], True)} points, 95% interval {_ci_text(d['ci95'])}"
                f"{'' if g['showed'] else ' (it includes 0 or lies below it)'}.",
            )
        )
    e = m.get("ecr_refresh") or {}
    if e.get("showed") is None:
        out.append((None, "Curriculum refresh (ECR): not measured (no curriculum state)."))
    else:
        d = e["detail"]
        verdict = (
            "refreshed the training pool, and training drew the new samples"
            if e["showed"]
            else "did NOT refresh the pool with samples that were then trained on"
        )
        n = d["refreshes"]
        out.append(
            (
                e["showed"],
                f"The evolving curriculum {verdict}: {fmt(n)} refresh{'' if n == 1 else 'es'}, "
                f"{fmt(d['refreshes_used'])} of them trained on; {fmt(d.get('added'))} sample(s) added, "
                f"{fmt(d.get('added_drawn'))} of them drawn into training batches afterwards.",
            )
        )
    r = m.get("reliance_rises") or {}
    if r.get("showed") is None:
        out.append(
            (
                None,
                "Counterfactual reliance (full-view minus hand-masked accuracy): not measured (no "
                "evaluation results with it yet; the evaluation measures it with icu: true).",
            )
        )
    else:
        d = r["detail"]
        verdict = (
            "rises: the trained model relies more on the hand"
            if r["showed"]
            else "does NOT rise: the trained model relies on the hand no more than the base"
        )
        out.append(
            (
                r["showed"],
                f"Counterfactual reliance on atypical clips (accuracy with the hand visible minus "
                f"with it masked) {verdict} ({_one(d['base'], True)} -> {_one(d['trained'], True)} points).",
            )
        )
    return out


def section_mechanisms(run: Run) -> str:
    """The report's top: did each of the method's four mechanisms show in this run (summary.json)?"""
    s = run.json("summary.json", "summary")
    if not isinstance(s, dict):
        from ego3s.summary import summarize_run

        s = summarize_run(run.root, write=False)
    lines = mechanism_lines(s)
    if not lines:
        return ""
    mark = {
        True: ('<span class="pos">✓ showed</span>'),
        False: '<span class="neg">✗ did not show</span>',
        None: '<span class="small">– not measured</span>',
    }
    n_yes = sum(1 for ok, _ in lines if ok)
    head = f"{n_yes} of {len(lines)} mechanisms of the method showed in this run"
    return (
        f'<div class="claims"><h2 style="margin-top:6px">What this run shows</h2><p><b>{esc(head)}.</b></p><ul>'
        + "".join(f"<li>{mark[ok]} {esc(text)}</li>" for ok, text in lines)
        + "</ul></div>"
    )
