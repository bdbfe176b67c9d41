"""`ego3s report RUN_DIR`: one self-contained HTML page for a run folder of `ego3s run`.

    from ego3s.report import render_report
    path = render_report("runs/demo")            # -> runs/demo/report/index.html

The page has inline CSS, PNG images as base64 data URIs, no JavaScript and no external resources:
it opens from disk, in a mail attachment or on a machine without internet. Every part of the run
folder is optional; a part that is absent (or unreadable) renders as a short note, never an
exception. Sections, each from the files named:

- What this run shows: the method's four mechanisms (CSM enrichment, trained beats base on
  atypical clips with a paired interval, ECR refreshes trained on, counterfactual reliance rises),
  each said to have shown or not, from `summary.json` (ego3s.summary; computed when absent).
- Headline cards: kept samples, steps, reward start -> end, refreshes, main metric base -> trained.
- Run: `manifest.json` (config, versions, git commit, seeds, per-stage status and timings).
- Selection: `select/report.json` (funnel, breakdown selected vs pool), `select/hist_*.png`,
  `select/scores.csv` (mean view scores of kept vs rejected; histograms if the PNGs are absent).
- Training: `train/log_history.json` (or `trainer_state.json`): reward and its components, reward
  std, share of zero-variance groups, KL, completion length, interaction mentions, loss; the
  supervised warm-up from `warmup/log_history.json`.
- Curriculum: `train/ecr_state.json` (or recomputed from `train/rewards.jsonl`) and
  `train/ecr_events.jsonl`: reward-variance timeline with the refreshes, the table of refreshes.
- Evaluation: `eval/<name>/results.json` (`ego3s eval`; `base` and `trained` side by side, with
  the delta): metrics, breakdowns (typical vs atypical for EgoSynth), interaction cue utilization.
- Samples: `eval/<name>/**/predictions*.jsonl` (+ `per_sample.jsonl`, questions from `data/*.jsonl`):
  a few outputs of base and trained for the same ids, reasoning shown, HTML-escaped.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
import re
from collections.abc import Callable, Iterable
from itertools import zip_longest as _zip_longest
from pathlib import Path
from typing import Any

from ego3s.files import read_log, write_text

DPI = 90
STAGES = ("data", "model", "warmup", "select", "train", "eval", "report")
# palette (colour-blind friendly, Okabe-Ito)
C_BASE, C_TRAINED, C_ACC = "#7f7f7f", "#0072B2", "#009E73"
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]


# ----------------------------------------------------------------------------------------------
# small helpers

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def esc(x: Any) -> str:
    """HTML-escaped text; control characters (invalid in HTML, common in raw model output) shown
    as `\\xNN`."""
    s = "" if x is None else str(x)
    return html.escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s), quote=True)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: ints with thousands separators, floats by magnitude."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        a = abs(x)
        if not math.isfinite(x):
            return str(x)
        if a >= 1e5:
            return f"{x:,.0f}"
        if a >= 100:
            return f"{x:,.1f}"
        if a >= 1:
            return f"{x:.2f}"
        if a == 0:
            return "0"
        if a >= 0.001:
            return f"{x:.{digits}f}"
        return f"{x:.2e}"
    return str(x)


def mfmt(x: Any) -> str:
    """An evaluation metric (percentages, ratios): always two decimals."""
    return f"{x:.2f}" if _num(x) else "–"


def cfg_value(v: Any, n: int = 120) -> str:
    """A config value as written (1e-06 stays 1e-06, True stays true)."""
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return repr(v)
    return _short(v, n)


def pct(x: Any, digits: int = 1) -> str:
    return "–" if not _num(x) else f"{100 * x:.{digits}f}%"


def duration(s: Any) -> str:
    if not _num(s):
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def table(header: list[str], rows: Iterable[list], cls: str = "", num_from: int = 1,
          text_cols: Iterable[int] = ()) -> str:
    """An HTML table; cells are escaped unless given as `Raw`. Columns from `num_from` on are
    right-aligned (numbers), except those in `text_cols`."""
    text = set(text_cols)

    def c(i):
        return "n" if i >= num_from and i not in text else ""

    out = [f'<table class="{cls}"><thead><tr>']
    out += [f'<th class="{c(i)}">{esc(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>" + "".join(f'<td class="{c(i)}">{v if isinstance(v, Raw) else esc(v)}</td>'
                                    for i, v in enumerate(r)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class Raw(str):
    """Already-escaped HTML for a table cell."""


def missing(what: str, hint: str = "") -> str:
    return f'<p class="missing">Not run: {esc(what)}{(" — " + esc(hint)) if hint else ""}.</p>'


def img_tag(png: bytes, alt: str, cls: str = "") -> str:
    return (f'<img class="{cls}" alt="{esc(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}">')


def delta_cell(d: Any, digits: int = 2, neutral: bool = False) -> Raw:
    """A signed difference; green up, red down unless `neutral` (no better direction)."""
    if not _num(d):
        return Raw("–")
    r = round(d, digits)
    cls = "" if neutral else "pos" if r > 0 else "neg" if r < 0 else ""
    return Raw(f'<span class="{cls}">{r + 0.0:+.{digits}f}</span>')


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _step_of(p: Path) -> int:
    m = re.search(r"(\d+)$", p.name)
    return int(m.group(1)) if m else -1


def _latest_checkpoint_file(folder: Path, name: str) -> Path | None:
    cks = sorted((p for p in folder.glob("checkpoint-*") if (p / name).is_file()), key=_step_of)
    return cks[-1] / name if cks else None


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out += _flatten(v, key)
            else:
                out.append((key, v))
    else:
        out.append((prefix, d))
    return out


def _short(v: Any, n: int = 120) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str) if isinstance(v, (list, dict)) else fmt(v)
    return s if len(s) <= n else s[: n - 1] + "…"


# ----------------------------------------------------------------------------------------------
# plotting (matplotlib's object API: no pyplot state, no backend switch)

def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    return fig


def _style(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(True, lw=0.4, alpha=0.4)
    ax.tick_params(labelsize=8)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _smooth(y: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(y):
        acc += v
        if i >= k:
            acc -= y[i - k]
        out.append(acc / min(i + 1, k))
    return out


def _series(ax, xs, ys, label, color, lw=1.6) -> None:
    """Raw values thin, a moving average bold when the series is long and noisy."""
    if len(ys) > 25:
        k = max(3, len(ys) // 25)
        ax.plot(xs, ys, color=color, lw=0.6, alpha=0.35)
        ax.plot(xs, _smooth(ys, k), color=color, lw=lw, label=label)
    else:
        ax.plot(xs, ys, color=color, lw=lw, marker="o" if len(ys) < 12 else None, ms=3, label=label)


# ----------------------------------------------------------------------------------------------
# the run folder

class Run:
    """Lazy, error-tolerant readers of a run folder's parts."""

    def __init__(self, root: Path):
        self.root = root
        self.notes: dict[str, str] = {}  # part -> why it could not be read

    def json(self, rel: str, part: str | None = None) -> Any:
        p = self.root / rel
        if not p.is_file():
            return None
        try:
            return _read_json(p)
        except (OSError, ValueError) as e:
            self.notes[part or rel] = f"{rel}: {e}"
            return None

    def log(self, p: Path, part: str) -> list[dict]:
        try:
            return read_log(p)
        except (OSError, ValueError) as e:
            self.notes[part] = str(e)
            return []

    def manifest(self) -> dict | None:
        m = self.json("manifest.json", "manifest")
        if m is not None and not isinstance(m, dict):
            self.notes["manifest"] = "manifest.json is not a JSON object"
            return None
        return m

    def log_history(self) -> tuple[list[dict], str | None]:
        train = self.root / "train"
        h = self.json("train/log_history.json", "training log")
        if isinstance(h, dict):
            h = h.get("log_history")
        if isinstance(h, list):
            return [r for r in h if isinstance(r, dict)], "train/log_history.json"
        for p in [train / "trainer_state.json", _latest_checkpoint_file(train, "trainer_state.json")]:
            if p is not None and p.is_file():
                st = self.json(str(p.relative_to(self.root)), "training log")
                if isinstance(st, dict) and isinstance(st.get("log_history"), list):
                    return [r for r in st["log_history"] if isinstance(r, dict)], str(p.relative_to(self.root))
        return [], None

    def ecr_state(self) -> tuple[dict | None, str | None]:
        train = self.root / "train"
        for p in [train / "ecr_state.json", _latest_checkpoint_file(train, "ecr_state.json")]:
            if p is not None and p.is_file():
                st = self.json(str(p.relative_to(self.root)), "curriculum state")
                if isinstance(st, dict):
                    return st, str(p.relative_to(self.root))
        return None, None

    def rewards(self) -> list[dict]:
        p = self.root / "train" / "rewards.jsonl"
        return self.log(p, "reward log") if p.is_file() else []

    def ecr_events(self, state: dict | None) -> list[dict]:
        p = self.root / "train" / "ecr_events.jsonl"
        if p.is_file():
            return self.log(p, "curriculum events")
        if state:
            ev = (state.get("monitor") or {}).get("events") or state.get("events") or []
            return [e for e in ev if isinstance(e, dict)]
        return []

    def eval_runs(self) -> dict[str, dict]:
        """name -> {benchmark: summary} for every eval/<name>/results.json; base, trained first."""
        ev = self.root / "eval"
        if not ev.is_dir():
            return {}
        names = sorted((p.parent.name for p in ev.glob("*/results.json")),
                       key=lambda n: ({"base": 0, "trained": 1}.get(n, 2), n))
        if (ev / "results.json").is_file() and not names:
            names = ["."]
        out = {}
        for n in names:
            res = self.json(f"eval/{n}/results.json" if n != "." else "eval/results.json", f"evaluation {n}")
            if res is not None:
                out[n if n != "." else "eval"] = normalize_results(res)
        return out

    def samples(self, ids: set[str]) -> dict[str, dict]:
        """The dataset records (question, options, answer) of `ids`, from the JSONL files of the
        run's data folder (or the data stage's `egosynth` output); test splits first."""
        folders = [self.root / "data"]
        outs = (((self.manifest() or {}).get("stages") or {}).get("data") or {}).get("outputs") or {}
        if isinstance(outs, dict) and isinstance(outs.get("egosynth"), str):
            folders.append(Path(outs["egosynth"]))
        files = []
        for f in folders:
            if f.is_dir():
                files += [p for p in sorted(f.glob("*.jsonl")) if p not in files]
        files.sort(key=lambda p: p.stem in ("train", "probe"))
        found: dict[str, dict] = {}
        for p in files:
            with open(p, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if '"id"' not in line:
                        continue
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(r, dict) and str(r.get("id")) in ids:
                        found[str(r["id"])] = r
            if len(found) == len(ids):
                break
        return found

    def predictions(self, name: str) -> dict[str, dict[str, dict]]:
        """benchmark -> id -> record (prediction merged with its scored row, when any)."""
        folder = self.root / "eval" / name
        if name == "eval":
            folder = self.root / "eval"
        out: dict[str, dict[str, dict]] = {}
        if not folder.is_dir():
            return out
        for p in sorted(folder.rglob("predictions*.jsonl")):
            default = p.parent.name if p.parent != folder else None
            for r in self.log(p, f"predictions {name}"):
                if not isinstance(r, dict) or "id" not in r or "skipped" in r:
                    continue
                bench = str(r.get("benchmark") or default or "all")
                out.setdefault(bench, {})[str(r["id"])] = dict(r)
        for p in sorted(folder.rglob("per_sample.jsonl")):
            bench = p.parent.name if p.parent != folder else "all"
            for r in self.log(p, f"per-sample rows {name}"):
                if isinstance(r, dict) and "id" in r:
                    rec = out.setdefault(str(r.get("benchmark") or bench), {}).setdefault(str(r["id"]), {"id": r["id"]})
                    for k, v in r.items():
                        rec.setdefault(k, v)
                    rec["_scored"] = True
        return out


def normalize_results(res: Any) -> dict[str, dict]:
    """`ego3s eval`'s results.json (`{"benchmarks": {name: summary}}`), a list of per-benchmark
    score dicts, a dict name -> score dict, or one score dict -> {benchmark: summary}."""
    if isinstance(res, dict) and isinstance(res.get("benchmarks"), dict):
        items = [(k, v) for k, v in res["benchmarks"].items() if isinstance(v, dict)]
    elif isinstance(res, dict) and isinstance(res.get("benchmarks"), list):
        items = [(b.get("benchmark", f"#{i}"), b) for i, b in enumerate(res["benchmarks"]) if isinstance(b, dict)]
    elif isinstance(res, list):
        items = [(b.get("benchmark", f"#{i}"), b) for i, b in enumerate(res) if isinstance(b, dict)]
    elif isinstance(res, dict) and "metrics" in res:
        items = [(res.get("benchmark", "benchmark"), res)]
    elif isinstance(res, dict):
        items = [(k, v) for k, v in res.items() if isinstance(v, dict) and "metrics" in v]
    else:
        items = []
    return {str(k): v for k, v in items}


# ----------------------------------------------------------------------------------------------
# sections

def _guard_value(fn: Callable[[], Any], default: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - optional decoration of a section
        return default


def _guard(title: str, fn: Callable[[], str]) -> str:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a report must render whatever the run folder holds
        return f'<p class="missing">Could not render {esc(title)}: {esc(type(e).__name__)}: {esc(e)}</p>'


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
        parts.append('<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd><code>{esc(v)}</code></dd>"
                                                    for k, v in facts) + "</dl>")

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
            scls = ("bad" if any(w in low for w in ("fail", "error", "crash", "abort")) else
                    "ok" if low in ("done", "ok", "cached", "complete", "completed", "success") else "skip")
            details = _stage_details(run.root, st)
            rows.append([s, Raw(f'<span class="st {scls}">{esc(status)}</span>'), duration(sec), details])
        rows.append([Raw("<b>total</b>"), "", Raw(f"<b>{esc(duration(total))}</b>"), ""])
        left = "<h3>Stages</h3>" + table(["stage", "status", "time", "details"], rows, "stages", num_from=2,
                                         text_cols=[3])
    else:
        left = "<h3>Stages</h3>" + missing("no stage records in the manifest")
    versions = m.get("versions")
    if isinstance(versions, dict) and versions:
        vrows = [[k, _short(v, 80)] for k, v in _flatten(versions)]
        left += "<h3>Versions</h3>" + table(["package", "version"], vrows, "kv", num_from=9)
    row.append(f"<div>{left}</div>")
    summary_keys = _config_summary(flat)
    if summary_keys:
        row.append("<div><h3>Configuration</h3>" + table(
            ["key", "value"], [[k, cfg_value(v)] for k, v in summary_keys], "kv", num_from=9) + "</div>")
    parts.append('<div class="row">' + "".join(row) + "</div>")
    if flat:
        parts.append(f"<details><summary>Full configuration ({len(flat)} keys)</summary>"
                     + table(["key", "value"], [[k, cfg_value(v, 200)] for k, v in flat], "kv small", num_from=9)
                     + "</details>")
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
_SUMMARY_KEYS = ("model", "data", "eval_data", "seed", "warmup_enabled", "egosynth.train", "selection.method",
                 "selection.csm.lambda_c", "selection.csm.lambda_f", "selection.csm.lambda_o",
                 "selection.scoring.estimator", "training.strategy", "training.max_steps", "training.num_generations",
                 "training.learning_rate", "training.ecr.ecr", "training.ecr.lambda_s",
                 "training.ecr.monitoring_interval", "training.ecr.monitoring_unit", "evaluation.fmt", "evaluation.icu")
_SUMMARY_HINTS = ("model", "method", "strategy", "dataset", "data", "benchmark", "max_steps", "steps",
                  "num_generations", "learning_rate", "lambda", "epochs", "budget", "seed", "ecr")


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


def section_select(run: Run) -> str:
    rep = run.json("select/report.json", "selection report")
    sel = run.root / "select"
    csv_rows = _read_scores(sel / "scores.csv") if (sel / "scores.csv").is_file() else []
    if rep is None and not csv_rows:
        return missing("no selection (select/report.json)", run.notes.get("selection report", ""))
    parts = []
    if isinstance(rep, dict):
        line = (f'<p class="lead">Method <b>{esc(rep.get("method", "?"))}</b>: kept '
                f'<b>{fmt(rep.get("selected"))}</b> of {fmt(rep.get("candidates"))} candidates '
                f'(<b>{pct(rep.get("kept_fraction"))}</b>)')
        if _num(rep.get("seconds")):
            line += f" in {duration(rep['seconds'])}"
        line += "."
        if rep.get("topped_up"):
            line += (f" {fmt(rep['topped_up'])} of them failed the filters and were added as the closest misses "
                     f"(<code>min_kept</code>).")
        line += "</p>"
        parts.append(line)
        th = rep.get("thresholds") or {}
        if th:
            parts.append('<p class="small">Thresholds: ' + ", ".join(f"<code>{esc(k)}={esc(cfg_value(v))}</code>"
                                                                     for k, v in th.items() if not isinstance(v, dict))
                         + "</p>")
        sc = rep.get("scoring")
        if isinstance(sc, dict) and sc:
            parts.append('<p class="small">Scoring: ' + ", ".join(
                f"{esc(k)} {esc(_short(v, 40))}" for k, v in _flatten(sc)) + "</p>")
        f = rep.get("funnel")
        if isinstance(f, dict) and f:
            parts.append("<h3>Funnel</h3>" + _funnel(f))
        elif rep.get("method") not in (None, "csm"):
            parts.append(f'<p class="small">No funnel: method {esc(rep.get("method"))} does not filter.</p>')
    else:
        parts.append(missing("select/report.json", run.notes.get("selection report", "absent")
                             if rep is None else "not a JSON object"))

    hists = [p for p in (sel / "hist_coarse.png", sel / "hist_fine.png") if p.is_file()]
    if hists:
        parts.append("<h3>Score histograms</h3><div class='row'>" + "".join(
            img_tag(p.read_bytes(), p.stem, "half") for p in hists) + "</div>")
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
    stages = [("scored", f.get("scored")),
              ("valid scores", (f["scored"] - f.get("invalid", 0)) if _num(f.get("scored")) else None),
              ("after coarse (language prior)", f.get("after_coarse")),
              ("after fine (global context)", f.get("after_fine")),
              ("after interaction relevance", f.get("after_relevance")),
              ("kept", f.get("kept"))]
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
        ax.text(v + top * 0.01, y, f"{int(v):,}" + (f"  ({100 * v / scored:.1f}%)" if scored else ""),
                va="center", fontsize=8)
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
    groups = {"kept": [r for r in rows if _b(r.get("kept"))],
              "rejected": [r for r in rows if _b(r.get("kept")) is False]}
    out = []
    for g, rs in groups.items():
        means = []
        for c in cols:
            vals = [v for v in (_f(r.get(c)) for r in rs) if v is not None]
            means.append(fmt(sum(vals) / len(vals)) if vals else "–")
        out.append([g, fmt(len(rs)), *means])
    return ("<h3>Mean view scores, kept vs rejected</h3>"
            + table(["", "samples", *cols], out, "scores"))


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
            rows.append([_value_label(field_name, v), fmt(d.get("pool")), pct(ps), fmt(d.get("selected")), pct(ss),
                         Raw(f"×{enrich:.2f}") if enrich is not None else "–"])
        t = table(["value", "pool", "pool share", "selected", "selected share", "enrichment"], rows)
        if len(rows) > 8:
            tables.append(f"<div><details><summary>by {esc(field_name)} ({len(rows)} values)</summary>{t}"
                          "</details></div>")
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
            for off, key, color, label in ((-0.2, "pool_share", C_BASE, "pool"),
                                           (0.2, "selected_share", C_ACC, "selected")):
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
    bits = [f"{int(max(_points(h, 'step')[1]))} steps" if _points(h, "step")[1] else None,
            f"loss {fmt(ys[0])} → {fmt(ys[-1])}" if len(ys) >= 2 else None,
            f"train_loss {fmt(summ.get('train_loss'))}" if _num(summ.get("train_loss")) else None,
            duration(summ.get("train_runtime")) if _num(summ.get("train_runtime")) else None]
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
        ("completion length (tokens)", [("completions/mean_length", "mean"),
                                        ("completions/clipped_ratio", "clipped share")][:1]),
        ("interaction", [("interaction/mentions", "mentions"), ("interaction/coverage", "coverage")]),
        ("loss", [("loss", "loss")]),
    ]
    panels = [(t, [(k, lab) for k, lab in keys if _points(hist, k)[1]]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys]
    parts = [f'<p class="small">From <code>{esc(src)}</code>: {len(hist)} log entries'
             + (f", last step {int(max(_points(hist, 'step')[1]))}" if _points(hist, "step")[1] else "")
             + (f"; ECR refreshes at steps {', '.join(str(s) for s in refresh_steps)} (dotted lines)"
                if refresh_steps else "") + ".</p>"]
    if panels:
        ncol = 2 if len(panels) <= 4 else 3 if len(panels) in (5, 6, 9) else 4
        nrow = (len(panels) + ncol - 1) // ncol
        fig = _figure(13, 2.7 * nrow)
        for i, (title, keys) in enumerate(panels):
            ax = fig.add_subplot(nrow, ncol, i + 1)
            for j, (k, lab) in enumerate(keys):
                xs, ys = _points(hist, k)
                _series(ax, xs, ys, lab, "#000000" if (k == "reward" and len(keys) > 1) else PALETTE[j % 8],
                        lw=2.0 if k == "reward" else 1.4)
            for s in refresh_steps:
                ax.axvline(s, color="#D55E00", ls=":", lw=1.2)
            ax.set_title(title, fontsize=9, loc="left")
            if len(keys) > 1:
                ax.legend(fontsize=7, ncol=2, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False,
                          handlelength=1.2, columnspacing=0.8)
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
        parts.append("<h3>Start vs end</h3><p class='small'>Means of the first and last 10% of the logged steps."
                     "</p>" + table(["metric", "start", "end", "change"], rows))
    summary = next((r for r in reversed(hist) if "train_runtime" in r), None)
    if summary:
        parts.append('<p class="small">Trainer summary: ' + ", ".join(
            f"{esc(k)} {esc(fmt(v))}" for k, v in summary.items() if _num(v)) + "</p>")
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
        return missing("no curriculum data (train/ecr_state.json, train/rewards.jsonl)",
                       run.notes.get("curriculum state", "ECR off or training not run"))
    parts = [f'<p class="small">Reward variance from <code>{esc(src or "–")}</code>; '
             f"{len(events)} refresh event(s).</p>"]
    if var:
        fig = _figure(11, 3.2)
        ax = fig.add_subplot(111)
        xs, ys = [p[0] for p in var], [p[1] for p in var]
        ax.plot(xs, ys, color=PALETTE[0], lw=0.6, alpha=0.35, label="mean within-group reward variance (per step)")
        if len(ys) > 25:
            k = max(3, len(ys) // 30)
            ax.plot(xs, _smooth(ys, k), color=PALETTE[0], lw=1.6, label=f"moving average ({k} steps)")
        if wm:
            ax.plot([p[0] for p in wm], [p[1] for p in wm], "o-", color=PALETTE[1], lw=1.8, ms=4,
                    label="window mean")
        top = max(ys) if ys else 1
        for e in events:
            if _num(e.get("step")):
                ax.axvline(e["step"], color="#D55E00", ls="--", lw=1.2)
                label = f"refresh @{e['step']}"
                if _num(e.get("pool_before")) and _num(e.get("pool_after")):
                    label += f"\npool {e['pool_before']}→{e['pool_after']}"
                if _num(e.get("ratio")):
                    label += f"\nratio {e['ratio']:.2f}"
                ax.annotate(label, (e["step"], top), xytext=(4, 0), textcoords="offset points", fontsize=7,
                            color="#D55E00", va="top")
        ax.set_ylim(0, top * 1.12 if top > 0 else 1)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("reward variance", fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
        _style(ax)
        parts.append(img_tag(_png(fig), "reward variance timeline", "wide"))
    if events:
        rows = []
        for e in events:
            rows.append([fmt(e.get("step")), fmt(e.get("ratio")), fmt(e.get("window_mean")), fmt(e.get("reference")),
                         f"{fmt(e.get('pool_before'))} → {fmt(e.get('pool_after'))}",
                         fmt(len(e["added"]) if isinstance(e.get("added"), list) else e.get("added")),
                         fmt(len(e["removed"]) if isinstance(e.get("removed"), list) else e.get("removed")),
                         fmt(e.get("probed")), fmt(e.get("high_value")),
                         pct(e.get("atypical_share_probed")), pct(e.get("atypical_share_high_value")),
                         pct(e.get("atypical_share_before")), pct(e.get("atypical_share_after"))])
        parts.append("<h3>Refresh events</h3>" + table(
            ["step", "variance ratio", "window mean", "reference", "pool", "added", "removed", "probed",
             "high-value", "atypical probed", "atypical high-value", "atypical before", "atypical after"],
            rows, "events", num_from=0))
    else:
        parts.append('<p class="small">No refresh: the reward variance never fell below the threshold '
                     "(or ECR was off).</p>")
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
        parts.append(f"<h3>Refresh use</h3><p class=\"small\">{fmt(state.get('refreshes_used'))} of "
                     f"{fmt(state.get('refreshes'))} refresh(es) used: a refresh is unused when no optimizer step "
                     "trained on a batch drawn after it, or when none of the samples it added was drawn.</p>")
        parts.append(table(["step", "optimizer steps after", "added", "added drawn (distinct)", "draws of added",
                            "removed", "used"],
                           [[fmt(u.get("step")), fmt(u.get("steps_after")), fmt(u.get("added")),
                             fmt(u.get("added_drawn")), fmt(u.get("added_draws")), fmt(u.get("removed")),
                             "yes" if u.get("used") else "no"] for u in usage], "usage", num_from=0, text_cols=[6]))
    return "".join(parts)


# evaluation -----------------------------------------------------------------------------------

def _metrics(b: dict) -> dict[str, float | None]:
    return {k: v for k, v in (b.get("metrics") or {}).items()
            if (_num(v) or v is None) and k != "n" and not k.startswith("n_")}


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
            for g in (runs[n].get(b, {}).get("by") or {}):
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
        out[f"  95% interval, n ({split})"] = (f"[{lo:.2f}, {hi:.2f}], n={e.get('n')}" if _num(lo) and _num(hi)
                                              else f"n={e.get('n')}")
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
    return ("<h4>Interaction cue utilization (ICU)</h4>"
            + table(["measure", *names] + (["Δ"] if has_delta else []), rows, "eval"))


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
    note = ("" if len(names) == 2 else
            f'<p class="missing">Only the {esc(names[0])} model was evaluated; no side-by-side comparison.</p>')
    parts = [note, f'<p class="small">{len(picks)} sample{"s" if len(picks) != 1 else ""}'
             + ("; drawn in turn from those the training fixed, broke, left right and left wrong"
                if len(names) == 2 else "") + ".</p>"]
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
            opts = ("".join(f" <b>{chr(65 + j)}.</b> {esc(_short(o, 80))}" for j, o in enumerate(options[:10]))
                    if options else "")
            head += f'<p class="q">{esc(_short(question, 400))}{opts}</p>'
        cols = []
        for n in names:
            r = recs[n]
            c = _correct(r)
            badge = {True: '<span class="st ok">correct</span>', False: '<span class="st bad">wrong</span>'}.get(c, "")
            ext = r.get("extracted", r.get("pred"))
            cols.append(f'<div class="col"><div class="chead">{esc(n)} {badge}'
                        f'<span class="small"> extracted: <code>{esc(_short(ext, 80))}</code></span></div>'
                        f'<pre class="out">{render_output(r.get("output"))}</pre></div>')
        parts.append(head + f'<div class="cols">{"".join(cols)}</div></div>')
    return "".join(parts)


# ----------------------------------------------------------------------------------------------
# page

CSS = """
:root{--fg:#1d2330;--mut:#5b6475;--bd:#dde1e8;--bg2:#f5f7fa;--acc:#0072B2}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans",sans-serif;
 color:var(--fg);background:#fff}
header{background:#14213d;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px;font-weight:600}
header p{margin:4px 0 0;color:#c9d2e3;font-size:13px}
header code{color:#fff;background:rgba(255,255,255,.12);padding:1px 5px;border-radius:3px}
nav{background:var(--bg2);border-bottom:1px solid var(--bd);padding:6px 32px;font-size:13px}
nav a{color:var(--acc);text-decoration:none;margin-right:18px}
main{max-width:1200px;margin:0 auto;padding:8px 32px 48px}
section{border-bottom:1px solid var(--bd);padding:6px 0 18px}
h2{font-size:19px;margin:18px 0 8px;color:#14213d}
h3{font-size:15px;margin:16px 0 6px}
h4{font-size:13px;margin:12px 0 4px;color:var(--mut)}
p.lead{font-size:15px;margin:6px 0}
.small{font-size:12px;color:var(--mut)}
p.missing{color:#8a6d3b;background:#fcf8e3;border-left:3px solid #f0ad4e;padding:4px 10px;font-size:13px;margin:6px 0}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid var(--bd);padding:3px 10px;text-align:left;vertical-align:top}
th{background:var(--bg2);font-weight:600;font-size:12px}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafbfc}
table.small{font-size:12px}
table.stages td:last-child{max-width:360px;color:var(--mut);font-size:12px}
.pos{color:#087f23;font-weight:600}.neg{color:#b00020;font-weight:600}
.st{display:inline-block;padding:0 7px;border-radius:9px;font-size:11px;font-weight:600}
.st.ok{background:#dff3e4;color:#087f23}.st.bad{background:#fde2e1;color:#b00020}
.st.skip{background:#eceff3;color:#5b6475}
.tag{background:#e8f1fa;color:#0b4f7c;border-radius:3px;padding:0 5px;font-size:12px}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0}
dl.facts dt{color:var(--mut)}dl.facts dd{margin:0}
details{margin:6px 0}summary{cursor:pointer;color:var(--acc);font-size:13px}
img{max-width:100%;height:auto;display:block;margin:6px 0}
img.half{max-width:560px}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.sample{border:1px solid var(--bd);border-radius:6px;margin:10px 0;overflow:hidden}
.shead{background:var(--bg2);padding:6px 10px;font-size:13px}
.q{margin:6px 10px;font-size:13px}
.cols{display:flex}.col{flex:1;min-width:0;border-top:1px solid var(--bd)}
.col+.col{border-left:1px solid var(--bd)}
.chead{padding:4px 10px;font-size:13px;font-weight:600}
pre.out{white-space:pre-wrap;word-wrap:break-word;margin:0;padding:6px 10px 10px;font:12px/1.45 ui-monospace,
 "DejaVu Sans Mono",Menlo,Consolas,monospace}
.think{color:#3d4a5c;background:#f1f4f9}.answer{background:#fff3c4;font-weight:600}
code{font:12px ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
.claims{border:2px solid var(--bd);border-radius:8px;padding:4px 16px;margin:10px 0;background:#fbfcfd}
.claims li{margin:6px 0;line-height:1.4}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0 4px}
.card{border:1px solid var(--bd);border-radius:6px;padding:8px 14px;min-width:150px;background:#fbfcfd}
.ck{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:var(--mut)}
.cv{font-size:20px;font-weight:600;color:#14213d;font-variant-numeric:tabular-nums}
.cs{font-size:12px;color:var(--mut)}
footer{color:var(--mut);font-size:12px;text-align:center;padding:16px}
"""


def _parts_line(run: Run) -> str:
    r = run.root
    checks = [("manifest", (r / "manifest.json").is_file()),
              ("selection", (r / "select" / "report.json").is_file()),
              ("training log", (r / "train" / "log_history.json").is_file()
               or (r / "train" / "trainer_state.json").is_file()
               or _latest_checkpoint_file(r / "train", "trainer_state.json") is not None),
              ("reward log", (r / "train" / "rewards.jsonl").is_file()),
              ("curriculum", (r / "train" / "ecr_state.json").is_file()
               or (r / "train" / "ecr_events.jsonl").is_file()),
              ("eval base", (r / "eval" / "base" / "results.json").is_file()),
              ("eval trained", (r / "eval" / "trained" / "results.json").is_file())]
    return " ".join(f'<span class="st {"ok" if ok else "skip"}">{"✓" if ok else "✗"} {esc(n)}</span>'
                    for n, ok in checks)


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
        cards.append(("ECR refreshes", str(len(ev)), ("at steps " + ", ".join(str(e.get("step")) for e in ev[:6]))
                      if ev else "variance never stagnated"))
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
                sub = Raw(f'{esc(k)} <span class="{"pos" if d > 0 else "neg" if d < 0 else ""}">{d:+.2f}</span> '
                          f"vs base {mfmt(bv)}")
            else:
                sub = k
            cards.append((b, mfmt(tv), sub))
    if not cards:
        return ""
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="ck">{esc(k)}</div><div class="cv">{esc(v)}</div>'
        f'<div class="cs">{sub if isinstance(sub, Raw) else esc(sub)}</div></div>' for k, v, sub in cards) + "</div>"


def _ci_text(ci: Any) -> str:
    lo, hi = (list(ci) + [None, None])[:2] if isinstance(ci, (list, tuple)) else (None, None)
    return f"[{lo:+.1f}, {hi:+.1f}]" if _num(lo) and _num(hi) else "(no interval)"


def _one(x: Any, sign: bool = False) -> str:
    """A percentage or ratio with one decimal ("–" when absent)."""
    return ("–" if not _num(x) else f"{x:+.1f}" if sign else f"{x:.1f}")


def mechanism_lines(s: dict) -> list[tuple[bool | None, str]]:
    """The four mechanisms of the method in plain words, each with whether it showed in this run
    (True, False, or None when the run did not measure it), from `summary.json`'s content."""
    m, sel, ev = s.get("mechanisms") or {}, s.get("select") or {}, s.get("eval") or {}
    out = []
    c = (m.get("csm_enrichment") or {})
    if c.get("showed") is None:
        out.append((None, "Counterfactual selection: not measured (no selection report with EgoSynth's typical/atypical "
                          "flags)."))
    else:
        d = c["detail"]
        verdict = ("kept mostly the samples only the hand can answer" if c["showed"]
                   else f"did NOT enrich the hard samples {_one(d['threshold'])}-fold")
        out.append((c["showed"], f"Counterfactual selection {verdict}: {fmt(sel.get('kept'))} of {fmt(sel.get('pool'))} "
                                 f"samples kept, {_one(d['share_atypical_kept'])}% atypical against "
                                 f"{_one(d['share_atypical_pool'])}% in the pool ({_one(d['enrichment'])}x; the bar is "
                                 f"{_one(d['threshold'])}x)."))
    g = m.get("atypical_gain") or {}
    base = ((ev.get("base") or {}).get("test_atypical") or {}).get("accuracy")
    trained = ((ev.get("trained") or {}).get("test_atypical") or {}).get("accuracy")
    if g.get("showed") is None:
        out.append((None, "Trained vs base on atypical clips: not measured (no paired evaluation of both models)."))
    else:
        d = g["detail"]
        verdict = ("The trained model beats the base" if g["showed"]
                   else "The trained model does NOT beat the base with confidence")
        out.append((g["showed"], f"{verdict} on atypical clips (the hand contradicts every prior): closed-question "
                                 f"accuracy {_one(base)}% -> {_one(trained)}%, a paired difference of "
                                 f"{_one(d['accuracy_delta'], True)} points, 95% interval {_ci_text(d['ci95'])}"
                                 f"{'' if g['showed'] else ' (it includes 0 or lies below it)'}."))
    e = m.get("ecr_refresh") or {}
    if e.get("showed") is None:
        out.append((None, "Curriculum refresh (ECR): not measured (no curriculum state)."))
    else:
        d = e["detail"]
        verdict = ("refreshed the training pool, and training drew the new samples" if e["showed"]
                   else "did NOT refresh the pool with samples that were then trained on")
        n = d["refreshes"]
        out.append((e["showed"], f"The evolving curriculum {verdict}: {fmt(n)} refresh{'' if n == 1 else 'es'}, "
                                 f"{fmt(d['refreshes_used'])} of them trained on."))
    r = m.get("reliance_rises") or {}
    if r.get("showed") is None:
        out.append((None, "Counterfactual reliance (full-view minus hand-masked accuracy): not measured (no "
                          "evaluation results with it yet; the evaluation measures it with icu: true)."))
    else:
        d = r["detail"]
        verdict = ("rises: the trained model relies more on the hand" if r["showed"]
                   else "does NOT rise: the trained model relies on the hand no more than the base")
        out.append((r["showed"], f"Counterfactual reliance on atypical clips (accuracy with the hand visible minus "
                                 f"with it masked) {verdict} ({_one(d['base'], True)} -> {_one(d['trained'], True)} points)."))
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
    mark = {True: ('<span class="pos">✓ showed</span>'), False: '<span class="neg">✗ did not show</span>',
            None: '<span class="small">– not measured</span>'}
    n_yes = sum(1 for ok, _ in lines if ok)
    head = f"{n_yes} of {len(lines)} mechanisms of the method showed in this run"
    return (f'<div class="claims"><h2 style="margin-top:6px">What this run shows</h2><p><b>{esc(head)}.</b></p><ul>'
            + "".join(f"<li>{mark[ok]} {esc(text)}</li>" for ok, text in lines) + "</ul></div>")


def build_html(run_dir: str | Path) -> str:
    """The report page of `run_dir` as a string (see the module docstring)."""
    run = Run(Path(run_dir))
    m = run.manifest() or {}
    cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
    model = next((v for k, v in _flatten(cfg) if k.rsplit(".", 1)[-1] in ("model", "model_name_or_path")
                  and isinstance(v, str)), None)
    cur = _guard("curriculum", lambda: curriculum_data(run))
    refresh_steps = ([int(e["step"]) for e in cur[2] if _num(e.get("step"))] if isinstance(cur, tuple) else [])
    sections = [
        ("run", "Run", _guard("run", lambda: section_run(run))),
        ("select", "Select: counterfactual selection", _guard("selection", lambda: section_select(run))),
        ("train", "Strengthen: training", _guard("training", lambda: section_train(run, refresh_steps))),
        ("curriculum", "Synchronize: curriculum recuration",
         cur if isinstance(cur, str) else _guard("curriculum", lambda: section_curriculum(run, cur))),
        ("eval", "Evaluation: base vs trained", _guard("evaluation", lambda: section_eval(run))),
        ("samples", "Sample predictions", _guard("samples", lambda: section_samples(run))),
    ]
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    commit = m.get("git_commit")
    sub = [f"run folder <code>{esc(run.root.resolve())}</code>"]
    if model:
        sub.append(f"model <code>{esc(_short(model, 80))}</code>")
    if commit:
        sub.append(f"commit <code>{esc(str(commit)[:12])}</code>")
    try:
        from ego3s import __version__
    except ImportError:  # pragma: no cover
        __version__ = "?"
    body = [f"<header><h1>Ego3S run report: {esc(run.root.resolve().name)}</h1>",
            f"<p>{' · '.join(sub)}</p><p>rendered {esc(now)} by ego3s {esc(__version__)}</p></header>",
            "<nav>" + "".join(f'<a href="#{sid}">{esc(t.split(":")[0])}</a>' for sid, t, _ in sections) + "</nav>",
            f'<main><p class="small" style="margin-top:10px">Parts found: {_parts_line(run)}</p>',
            _guard("mechanisms", lambda: section_mechanisms(run)),
            _guard("summary", lambda: summary_cards(run, cur))]
    body += [f'<section id="{sid}"><h2>{esc(title)}</h2>{content}</section>' for sid, title, content in sections]
    body.append("</main><footer>Self-contained report: no scripts, no external resources. "
                "Re-render with <code>ego3s report RUN_DIR</code>.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Ego3S report: {esc(run.root.resolve().name)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def render_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render `run_dir` (a run folder of `ego3s run`) as one self-contained HTML file, written
    atomically to `out` (default `RUN_DIR/report/index.html`); returns its path. Missing parts of
    the run render as notes; only a missing `run_dir` raises (FileNotFoundError)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    path = Path(out) if out is not None else run_dir / "report" / "index.html"
    # lone surrogates (possible in JSON-decoded model output) cannot be encoded: replace them
    write_text(path, build_html(run_dir).encode("utf-8", "replace").decode("utf-8"))
    return path
