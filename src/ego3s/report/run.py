"""The run folder as the report reads it (`Run`): every part optional, read once, never raising."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ego3s.files import read_log

from .html import _latest_checkpoint_file, _read_json, esc


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
        names = sorted(
            (p.parent.name for p in ev.glob("*/results.json")), key=lambda n: ({"base": 0, "trained": 1}.get(n, 2), n)
        )
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
