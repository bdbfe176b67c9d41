"""The EgoSynth dataset folder: generate (resumable, deterministic across workers), split JSONL,
videos, config and timing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from ego3s.data.io import write_jsonl
from ego3s.data.schema import Sample
from ego3s.files import write_json

from .audit import _audit_dataset, _fmt, _preview_dataset, write_card
from .catalog import VERSION
from .world import EgoSynthConfig, _work

# =============================================================================================
# The dataset folder

_IDENTITY_EXCLUDE = ("train", "test", "probe")  # growing a split keeps every existing sample


def generate(
    out: str | os.PathLike,
    config: EgoSynthConfig | None = None,
    *,
    workers: int | None = None,
    audit: bool = True,
    preview: bool = False,
    render: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Write an EgoSynth dataset folder: `videos/*.mp4`, `<split>.jsonl` for train, test_id,
    test_atypical and probe, `config.json`, `audit.json` and `card.md` (and `preview.png` with
    `preview`). Deterministic by `config.seed`; resumable: videos already present are kept (each
    mp4 is written atomically), so an interrupted run continues where it stopped. A folder made
    with different settings (other than the split sizes) is refused. Returns a summary dict."""
    cfg = config or EgoSynthConfig()
    out = Path(out)
    vdir = out / "videos"
    vdir.mkdir(parents=True, exist_ok=True)
    ident = {
        "generator": "egosynth",
        "version": VERSION,
        **{k: v for k, v in asdict(cfg).items() if k not in _IDENTITY_EXCLUDE},
    }
    cfg_path = out / "config.json"
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text(encoding="utf-8")).get("identity", {})
        except (json.JSONDecodeError, AttributeError):
            old = {}
        diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
        if diff:
            raise ValueError(
                f"{cfg_path}: this folder holds an EgoSynth dataset made with other settings "
                f"({', '.join(f'{k}: {old.get(k)!r} -> {ident.get(k)!r}' for k in diff)}); "
                f"write to a new folder"
            )
    write_json(cfg_path, {"identity": ident, "config": asdict(cfg)})
    for stale in vdir.glob(".*.tmp"):  # temp files of an interrupted run
        stale.unlink(missing_ok=True)

    tasks = [(cfg, split, i, p, str(out), render) for split, n, p in cfg.splits() for i in range(n)]
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    by_split: dict[str, list[Sample]] = {name: [] for name, _, _ in cfg.splits()}
    written = 0
    t0 = time.perf_counter()
    step = max(1, len(tasks) // 10)

    def _collect(results):
        nonlocal written
        for k, (s, wrote) in enumerate(results, start=1):
            by_split[s.meta["split"]].append(s)
            written += wrote
            if log and (k % step == 0 or k == len(tasks)):
                dt = time.perf_counter() - t0
                log(f"egosynth: {k}/{len(tasks)} samples, {written} videos written, {dt:.0f} s")

    if workers == 1 or len(tasks) < 2 * workers:
        _collect(map(_work, tasks))
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            _collect(pool.imap(_work, tasks, chunksize=max(1, min(32, len(tasks) // (workers * 8) or 1))))
    seconds = time.perf_counter() - t0
    for split, samples in by_split.items():
        write_jsonl(out / f"{split}.jsonl", samples)
    summary = {
        "out": str(out),
        "samples": {k: len(v) for k, v in by_split.items()},
        "videos_written": written,
        "videos_skipped": (len(tasks) - written) if render else 0,
        "seconds": round(seconds, 1),
        "clips_per_s": round(written / seconds, 1) if written and seconds > 0 else None,
        "workers": workers,
    }
    write_json(out / "generation.json", summary)
    result = None
    if audit:  # the parameters shadow the module's audit() and preview()
        result = _audit_dataset(out)
    else:
        write_card(out, None)
    if preview:
        _preview_dataset(out, out / "preview.png")
        summary["preview"] = str(out / "preview.png")
    summary["audit"] = result
    return summary


def synth_summary(summary: dict) -> str:
    """The lines `ego3s synth` prints."""
    lines = [f"EgoSynth dataset in {summary['out']}"]
    lines.append("  " + ", ".join(f"{k}: {v}" for k, v in summary["samples"].items()))
    speed = f", {summary['clips_per_s']} clips/s" if summary.get("clips_per_s") else ""
    lines.append(
        f"  videos written: {summary['videos_written']} "
        f"(kept from an earlier run: {summary['videos_skipped']}) "
        f"in {summary['seconds']} s with {summary['workers']} worker(s){speed}"
    )
    a = summary.get("audit")
    if a:
        lines.append("  shortcut audit (accuracy of oracles that never see the interaction):")
        for split, r in a["splits"].items():
            if r.get("n"):
                lines.append(
                    f"    {split:<14} typical {r['typical_share']:.3f}   "
                    f"prior-only {r['prior_only']['all']:.3f}   "
                    f"context-only {r['context_only']['all']:.3f}   (closed questions: "
                    f"{_fmt(r['prior_only']['closeqa'])} / {_fmt(r['context_only']['closeqa'])}, chance 0.25)"
                )
    if summary.get("preview"):
        lines.append(f"  preview: {summary['preview']}")
    return "\n".join(lines)
