"""The whole page: sections in order, inline CSS, written atomically."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from ego3s.files import write_text

from .evaluation import section_eval, section_samples
from .html import _flatten, _num, _short, esc
from .pipeline import section_run
from .run import Run, _guard
from .selection import section_select
from .top import _parts_line, section_mechanisms, summary_cards
from .training import curriculum_data, section_curriculum, section_train

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


def build_html(run_dir: str | Path) -> str:
    """The report page of `run_dir` as a string (see the module docstring)."""
    run = Run(Path(run_dir))
    m = run.manifest() or {}
    cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
    model = next(
        (v for k, v in _flatten(cfg) if k.rsplit(".", 1)[-1] in ("model", "model_name_or_path") and isinstance(v, str)),
        None,
    )
    cur = _guard("curriculum", lambda: curriculum_data(run))
    refresh_steps = [int(e["step"]) for e in cur[2] if _num(e.get("step"))] if isinstance(cur, tuple) else []
    sections = [
        ("run", "Run", _guard("run", lambda: section_run(run))),
        ("select", "Select: counterfactual selection", _guard("selection", lambda: section_select(run))),
        ("train", "Strengthen: training", _guard("training", lambda: section_train(run, refresh_steps))),
        (
            "curriculum",
            "Synchronize: curriculum recuration",
            cur if isinstance(cur, str) else _guard("curriculum", lambda: section_curriculum(run, cur)),
        ),
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
    body = [
        f"<header><h1>Ego3S run report: {esc(run.root.resolve().name)}</h1>",
        f"<p>{' · '.join(sub)}</p><p>rendered {esc(now)} by ego3s {esc(__version__)}</p></header>",
        "<nav>" + "".join(f'<a href="#{sid}">{esc(t.split(":")[0])}</a>' for sid, t, _ in sections) + "</nav>",
        f'<main><p class="small" style="margin-top:10px">Parts found: {_parts_line(run)}</p>',
        _guard("mechanisms", lambda: section_mechanisms(run)),
        _guard("summary", lambda: summary_cards(run, cur)),
    ]
    body += [f'<section id="{sid}"><h2>{esc(title)}</h2>{content}</section>' for sid, title, content in sections]
    body.append(
        "</main><footer>Self-contained report: no scripts, no external resources. "
        "Re-render with <code>ego3s report RUN_DIR</code>.</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Ego3S report: {esc(run.root.resolve().name)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


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
