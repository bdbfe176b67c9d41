"""What a stage skipped, by reason, and the rule that a stage which produced nothing fails.

Every stage counts what it could not use (an invalid record, an unreadable video, an invalid
score, a failed judgement) in its report as `skips`: `{reason: {"count": n, "example": text}}`.
The CLI prints one line per reason on stderr at the end of the command, so a skip is never visible
only in a report file. A stage whose every input was skipped, or whose result is empty (no
candidate, nothing selected, nothing evaluated), raises `NothingProduced` with the reasons after
writing its report: the command exits non-zero instead of handing an empty result to the next
stage.
"""

from __future__ import annotations

from collections.abc import Iterable


class NothingProduced(RuntimeError):
    """A stage ended with an empty result; the message says which stage, where, and why, and
    `skips` holds what was skipped on the way (printed one line per reason by the CLI)."""

    def __init__(self, message: str, stage: str = "", skips: dict | None = None):
        super().__init__(message)
        self.stage, self.skips = stage, skips or {}


def add(skips: dict, reason: str, count: int = 1, example: str | None = None) -> dict:
    """Count `count` skips of `reason` in `skips` (in place), keeping the first example."""
    if count > 0:
        entry = skips.setdefault(reason, {"count": 0, "example": None})
        entry["count"] += count
        if entry["example"] is None and example:
            entry["example"] = str(example)[:300]
    return skips


def from_errors(errors: Iterable[Exception], skips: dict | None = None) -> dict:
    """Skips of invalid records (`SampleError`s collected with `skip_invalid`), by their reason."""
    skips = {} if skips is None else skips
    for e in errors:
        add(skips, getattr(e, "reason", "invalid record"), 1, str(e))
    return skips


def total(skips: dict) -> int:
    return sum(v["count"] for v in skips.values())


def lines(skips: dict, stage: str = "") -> list[str]:
    """One line per reason, most frequent first: `skipped 3 (select: invalid video): <first example>`."""
    where = f"{stage}: " if stage else ""
    out = []
    for reason, v in sorted(skips.items(), key=lambda kv: (-kv[1]["count"], kv[0])):
        ex = f"; first: {v['example']}" if v.get("example") else ""
        out.append(f"skipped {v['count']} ({where}{reason}){ex}")
    return out


def nothing_produced(stage: str, what: str, skips: dict, why: str = "") -> NothingProduced:
    """The error of a stage with an empty result: what is empty, why, and every skip reason."""
    reasons = "; ".join(f"{v['count']} {r}" for r, v in sorted(skips.items(), key=lambda kv: -kv[1]["count"]))
    parts = [f"{stage}: {what}"] + ([why] if why else []) + ([f"skipped: {reasons}"] if reasons else [])
    return NothingProduced("; ".join(parts), stage, skips)


def from_eval(results: dict) -> dict:
    """Skips of an evaluation's results: per benchmark, samples skipped (by reason), samples
    without a prediction, and items the judge failed on."""
    out: dict = {}
    for name, b in (results.get("benchmarks") or {}).items():
        for reason, n in (b.get("skipped") or {}).items():
            add(out, f"{name}: {reason}", n)
        add(out, f"{name}: no prediction", b.get("n_missing") or 0)
        j = b.get("judge") or {}
        errors = j.get("errors") or {}
        first = next(iter(errors.items()), None)
        add(
            out,
            f"{name}: judge failed",
            j.get("judge_failed") or 0,
            f"sample {first[0]!r}: {first[1]}" if first else None,
        )
    return out


def of_run(run_dir) -> dict[str, dict]:
    """`{stage: skips}` of an `ego3s run` folder, from the files its stages wrote."""
    import json
    from pathlib import Path

    d = Path(run_dir)
    out: dict[str, dict] = {}

    def read(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    warm = d / "warmup" / "skipped.jsonl"
    if warm.is_file():
        n = sum(1 for line in warm.read_text().splitlines() if line.strip())
        add(out.setdefault("warmup", {}), "unreadable clip", n, str(warm))
    for stage, path in (("select", d / "select" / "report.json"), ("train", d / "train" / "training_config.json")):
        if s := read(path).get("skips"):
            out[stage] = s
    for res in sorted((d / "eval").glob("*/results.json")):
        if s := read(res).get("skips"):
            out[f"eval {res.parent.name}"] = s
    return {k: v for k, v in out.items() if v}
