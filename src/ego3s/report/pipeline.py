"""The report's Run section: manifest, versions, commit, seeds, per-stage status and timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .html import STAGES, Raw, _flatten, _num, _short, cfg_value, duration, esc, missing, table
from .run import Run


def section_run(run: Run) -> str:
    m = run.manifest()
    if m is None:
        if "manifest" in run.notes:
            return f'<p class="missing">Unreadable: {esc(run.notes["manifest"])}</p>'
        return missing("no manifest.json", "the run folder has no manifest")
    parts = []
    cfg = m.get("config") or {}
    flat = _flatten(cfg) if isinstance(cfg, dict) else []
    facts = []
    for key in ("git_commit", "created", "started", "finished", "host", "device"):
        if m.get(key):
            facts.append((key.replace("_", " "), _short(m[key], 60)))
    seeds = m.get("seeds")
    if isinstance(seeds, dict) and seeds:
        facts.append(("seeds", ", ".join(f"{k}={v}" for k, v in seeds.items())))
    elif seeds is not None:
        facts.append(("seeds", _short(seeds)))
    if facts:
        parts.append(
            '<dl class="facts">'
            + "".join(f"<dt>{esc(k)}</dt><dd><code>{esc(v)}</code></dd>" for k, v in facts)
            + "</dl>"
        )

    row = []
    stages = m.get("stages")
    if isinstance(stages, dict) and stages:
        order = [s for s in STAGES if s in stages] + [s for s in stages if s not in STAGES]
        rows, total = [], 0.0
        for s in order:
            st = stages[s] if isinstance(stages[s], dict) else {"status": stages[s]}
            sec = st.get("seconds")
            total += sec if _num(sec) else 0.0
            status = str(st.get("status", "–"))
            low = status.lower()
            scls = (
                "bad"
                if any(w in low for w in ("fail", "error", "crash", "abort"))
                else "ok"
                if low in ("done", "ok", "cached", "complete", "completed", "success")
                else "skip"
            )
            details = _stage_details(run.root, st)
            rows.append([s, Raw(f'<span class="st {scls}">{esc(status)}</span>'), duration(sec), details])
        rows.append([Raw("<b>total</b>"), "", Raw(f"<b>{esc(duration(total))}</b>"), ""])
        left = "<h3>Stages</h3>" + table(
            ["stage", "status", "time", "details"], rows, "stages", num_from=2, text_cols=[3]
        )
    else:
        left = "<h3>Stages</h3>" + missing("no stage records in the manifest")
    versions = m.get("versions")
    if isinstance(versions, dict) and versions:
        vrows = [[k, _short(v, 80)] for k, v in _flatten(versions)]
        left += "<h3>Versions</h3>" + table(["package", "version"], vrows, "kv", num_from=9)
    row.append(f"<div>{left}</div>")
    summary_keys = _config_summary(flat)
    if summary_keys:
        row.append(
            "<div><h3>Configuration</h3>"
            + table(["key", "value"], [[k, cfg_value(v)] for k, v in summary_keys], "kv", num_from=9)
            + "</div>"
        )
    parts.append('<div class="row">' + "".join(row) + "</div>")
    if flat:
        parts.append(
            f"<details><summary>Full configuration ({len(flat)} keys)</summary>"
            + table(["key", "value"], [[k, cfg_value(v, 200)] for k, v in flat], "kv small", num_from=9)
            + "</details>"
        )
    return "".join(parts)


def _rel(root: Path, v: Any) -> Any:
    """A path under the run folder, relative to it; anything else unchanged."""
    if isinstance(v, str) and ("/" in v or "\\" in v):
        try:
            return str(Path(v).resolve().relative_to(root.resolve()))
        except (ValueError, OSError):
            return v
    return v


def _stage_details(root: Path, st: dict) -> str:
    """A stage's other fields, one line: outputs flattened, paths relative to the run folder."""
    items = []
    for k, v in st.items():
        if k in ("status", "seconds") or (k == "attempts" and v == 1):
            continue
        if isinstance(v, dict):
            items += [(kk, vv) for kk, vv in v.items() if vv not in (None, "")]
        else:
            items.append((k, v))
    return "; ".join(f"{k} {_short(_rel(root, v), 60)}" for k, v in items)


# the keys of `ego3s run`'s config a reader looks for first; other configs fall back to _SUMMARY_HINTS
_SUMMARY_KEYS = (
    "model",
    "data",
    "eval_data",
    "seed",
    "warmup_enabled",
    "egosynth.train",
    "selection.method",
    "selection.csm.lambda_c",
    "selection.csm.lambda_f",
    "selection.csm.lambda_o",
    "selection.scoring.estimator",
    "training.strategy",
    "training.max_steps",
    "training.num_generations",
    "training.learning_rate",
    "training.ecr.ecr",
    "training.ecr.lambda_s",
    "training.ecr.monitoring_interval",
    "training.ecr.monitoring_unit",
    "evaluation.fmt",
    "evaluation.icu",
)
_SUMMARY_HINTS = (
    "model",
    "method",
    "strategy",
    "dataset",
    "data",
    "benchmark",
    "max_steps",
    "steps",
    "num_generations",
    "learning_rate",
    "lambda",
    "epochs",
    "budget",
    "seed",
    "ecr",
)


def _config_summary(flat: list[tuple[str, Any]], n: int = 20) -> list[tuple[str, Any]]:
    """The config keys a reader looks for first (model, method, strategy, steps, thresholds);
    empty values left out."""

    def shown(v):
        return v not in (None, "", [], {}) and not isinstance(v, dict)

    d = dict(flat)
    picked = [(k, d[k]) for k in _SUMMARY_KEYS if k in d and shown(d[k])]
    if len(picked) < 6:
        for hint in _SUMMARY_HINTS:
            for k, v in flat:
                leaf = k.rsplit(".", 1)[-1]
                if (leaf == hint or leaf.startswith(hint)) and (k, v) not in picked and shown(v):
                    picked.append((k, v))
    return picked[:n] if picked else [(k, v) for k, v in flat if shown(v)][:n]
