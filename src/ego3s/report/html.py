"""HTML and figure helpers of the run report: escaping, number formats, tables, PNG figures."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


def table(
    header: list[str], rows: Iterable[list], cls: str = "", num_from: int = 1, text_cols: Iterable[int] = ()
) -> str:
    """An HTML table; cells are escaped unless given as `Raw`. Columns from `num_from` on are
    right-aligned (numbers), except those in `text_cols`."""
    text = set(text_cols)

    def c(i):
        return "n" if i >= num_from and i not in text else ""

    out = [f'<table class="{cls}"><thead><tr>']
    out += [f'<th class="{c(i)}">{esc(h)}</th>' for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append(
            "<tr>"
            + "".join(f'<td class="{c(i)}">{v if isinstance(v, Raw) else esc(v)}</td>' for i, v in enumerate(r))
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


class Raw(str):
    """Already-escaped HTML for a table cell."""


def missing(what: str, hint: str = "") -> str:
    return f'<p class="missing">Not run: {esc(what)}{(" — " + esc(hint)) if hint else ""}.</p>'


def img_tag(png: bytes, alt: str, cls: str = "") -> str:
    return f'<img class="{cls}" alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


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
