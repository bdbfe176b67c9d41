"""`ego3s report`: the HTML page of a run folder. A realistic fake run (every part of the layout,
one ECR refresh, base and trained evaluations), content checks, graceful gaps, the CLI, and a real
headless-Chromium render (skipped when /usr/bin/chromium is absent)."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ego3s.report import fmt, render_output, render_report, variance_from_rewards

CHROMIUM = os.environ.get("EGO3S_CHROMIUM", "/usr/bin/chromium")
G = 4  # generations per group


# ----------------------------------------------------------------------------------------------
# a fake run folder


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, (bytes, bytearray)):
        path.write_bytes(obj)
    elif isinstance(obj, str):
        path.write_text(obj, encoding="utf-8")
    else:
        path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def _jsonl(path: Path, rows) -> None:
    _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _hist_png(seed: int) -> bytes:
    from matplotlib.figure import Figure

    rng = random.Random(seed)
    fig = Figure(figsize=(6, 3.5), dpi=80)
    ax = fig.add_subplot(111)
    ax.hist([rng.gauss(0.1, 0.2) for _ in range(400)], bins=30, alpha=0.6, label="typical (n=400)")
    ax.hist([rng.gauss(0.3, 0.2) for _ in range(170)], bins=30, alpha=0.6, label="atypical (n=170)")
    ax.axvline(0.1 if seed == 0 else 0.5, color="k", ls="--", label="threshold")
    ax.set_xlabel("s_full - s_blind (language-prior gain)" if seed == 0 else "(s_full - s_context) / s_full")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


OUT_BASE = (
    "<think>I am in a kitchen. People in kitchens usually hold a knife, so the object is a knife."
    "</think><answer>B</answer>"
)
OUT_TRAINED = (
    "<think>My right hand closes around the red mug on the counter, and I lift the mug toward me; "
    "the knife stays on the board. So I picked up the mug.</think><answer>C</answer>"
)
OUT_TRICKY = "<think>compare a < b & c > d <script>alert('x')</script></think><answer>A</answer>"


def _share(pool: int, selected: int, n_pool: int, n_selected: int) -> dict:
    return {"pool": pool, "selected": selected, "pool_share": pool / n_pool, "selected_share": selected / n_selected}


def make_fake_run(root: Path, steps: int = 300, refresh_step: int = 200) -> Path:
    """Every file of the run layout with plausible numbers: 2,000 EgoSynth candidates, CSM keeps
    531, GRPO for `steps` steps with one ECR refresh, base and trained evaluated on EgoSynth and
    EgoSchema."""
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    d = str(root.resolve())
    _write(
        root / "manifest.json",
        {  # the shape `ego3s run` writes (ego3s.pipeline)
            "config": {
                "out": "runs/demo",
                "seed": 0,
                "model": "smol",
                "data": None,
                "eval_data": ["EgoSynth", "EgoSchema"],
                "egosynth": {"train": 2000, "test": 100, "probe": 500, "p_typical": 0.7},
                "warmup_enabled": True,
                "warmup": {"steps": 200, "learning_rate": 0.001},
                "selection": {
                    "method": "csm",
                    "model": "",
                    "csm": {"lambda_c": 0.1, "lambda_f": 0.5, "lambda_o": 0.21, "eps": 1e-6},
                    "scoring": {"estimator": "likelihood", "views": ["full", "blind", "context"]},
                },
                "training": {
                    "strategy": "grpo",
                    "max_steps": steps,
                    "num_generations": G,
                    "learning_rate": 1e-6,
                    "ecr": {"ecr": True, "lambda_s": 0.6, "monitoring_interval": 100, "probing_set_size": 500},
                },
                "evaluation": {"fmt": "reasoning", "view": "full", "icu": True, "judge_model": None},
            },
            "versions": {
                "python": "3.11.2",
                "ego3s": "0.1.0",
                "torch": "2.5.1",
                "transformers": "4.57.1",
                "trl": "0.16.0",
                "accelerate": "1.2.1",
                "datasets": "3.2.0",
            },
            "git_commit": "cf42491a1b2c3d4e5f60718293a4b5c6d7e8f901",
            "seeds": {"run": 0},
            "stages": {
                "data": {
                    "status": "done",
                    "attempts": 1,
                    "seconds": 61.2,
                    "outputs": {"pool": f"{d}/data/train.jsonl", "egosynth": f"{d}/data"},
                },
                "model": {"status": "done", "attempts": 1, "seconds": 4.1, "outputs": {"base": f"{d}/model/smol"}},
                "warmup": {"status": "done", "attempts": 1, "seconds": 95.5, "outputs": {"model": f"{d}/warmup/final"}},
                "select": {
                    "status": "done",
                    "attempts": 1,
                    "seconds": 318.7,
                    "outputs": {"selected": f"{d}/select/selected.jsonl", "kept": 531, "candidates": 2000},
                },
                "train": {
                    "status": "done",
                    "attempts": 2,
                    "seconds": 2712.4,
                    "outputs": {"model": f"{d}/train/final", "steps": steps},
                },
                "eval": {
                    "status": "done",
                    "attempts": 1,
                    "seconds": 405.9,
                    "outputs": {"base": f"{d}/eval/base/results.json", "trained": f"{d}/eval/trained/results.json"},
                },
                "report": {"status": "running", "attempts": 1},
            },
        },
    )

    # select
    funnel = {
        "scored": 2000,
        "invalid": 12,
        "after_coarse": 1104,
        "after_fine": 702,
        "after_relevance": 531,
        "kept": 531,
        "failed_coarse": 884,
        "failed_fine": 1286,
        "failed_relevance": 1457,
    }
    _write(
        root / "select" / "report.json",
        {
            "method": "csm",
            "candidates": 2000,
            "selected": 531,
            "kept_fraction": 531 / 2000,
            "budget": None,
            "invalid_records_skipped": 0,
            "funnel": funnel,
            "thresholds": {"lambda_c": 0.1, "lambda_f": 0.5, "lambda_o": 0.21, "eps": 1e-6},
            "scoring": {"scored": 2000, "cached": 0, "skipped_unreadable": 0},
            "seconds": 318.7,
            "breakdown": {
                "typical": {"False": _share(600, 281, 2000, 531), "True": _share(1400, 250, 2000, 531)},
                "kind": {"closeqa": _share(1000, 301, 2000, 531), "openqa": _share(1000, 230, 2000, 531)},
            },
        },
    )
    _write(root / "select" / "hist_coarse.png", _hist_png(0))
    _write(root / "select" / "hist_fine.png", _hist_png(1))
    lines = [
        "id,s_full,s_blind,s_context,relevance,coarse,fine,pass_coarse,pass_fine,pass_relevance,kept,invalid,typical"
    ]
    for i in range(200):
        f, b, c = rng.uniform(0.3, 0.95), rng.uniform(0.1, 0.7), rng.uniform(0.1, 0.6)
        pc, pf, pr = f - b > 0.1, (f - c) / f >= 0.5, rng.random() > 0.2
        lines.append(
            f"egs_{i:05d},{f:.4f},{b:.4f},{c:.4f},{rng.uniform(0.1, 0.6):.4f},{f - b:.4f},{(f - c) / f:.4f},"
            f"{pc},{pf},{pr},{pc and pf and pr},False,{rng.random() < 0.7}"
        )
    _write(root / "select" / "scores.csv", "\n".join(lines) + "\n")

    # train: per-step rewards, log history, curriculum
    recs, hist, var = [], [], []
    for step in range(1, steps + 1):
        since = step - refresh_step if step > refresh_step else step
        p = min(0.95, 0.35 + 0.0035 * since)  # accuracy rises, variance collapses, refresh restores it
        totals = []
        for k in range(2):
            acc = [float(rng.random() < p) for _ in range(G)]
            fm = [float(rng.random() < min(0.97, 0.55 + 0.003 * since)) for _ in range(G)]
            it = [round(rng.uniform(0.55, 0.75), 3) if a + f >= 1.1 else 0.0 for a, f in zip(acc, fm)]
            tot = [a + f + i for a, f, i in zip(acc, fm, it)]
            totals.append(tot)
            recs.append(
                {
                    "step": step,
                    "epoch": step / 133,
                    "sample_id": f"egs_{(step * 7 + k) % 531:05d}",
                    "rewards": {"accuracy": acc, "format": fm, "interaction": it, "total": tot},
                }
            )
        v = sum(sum((x - sum(t) / G) ** 2 for x in t) / G for t in totals) / len(totals)
        var.append([step, v])
        if step % 5 == 0:
            r = sum(map(sum, totals)) / (2 * G)
            hist.append(
                {
                    "step": step,
                    "epoch": round(step / 133, 3),
                    "loss": round(rng.gauss(0.01, 0.004), 5),
                    "reward": r,
                    "reward_std": math.sqrt(v),
                    "rewards/accuracy_reward/mean": p,
                    "rewards/format_reward/mean": 0.6 + 0.3 * step / steps,
                    "rewards/interaction_reward/mean": 0.25 + 0.4 * step / steps,
                    "frac_reward_zero_std": min(0.9, 0.1 + 0.003 * since),
                    "kl": 0.0004 * step**0.8,
                    "completions/mean_length": 160 - 0.15 * step + rng.gauss(0, 4),
                    "interaction/mentions": 1.2 + 0.006 * step,
                    "interaction/coverage": 0.3 + 0.0012 * step,
                    "ecr/refreshes": float(step >= refresh_step),
                    "learning_rate": 1e-6,
                }
            )
    hist.append({"step": steps, "train_runtime": 2712.4, "train_samples_per_second": 0.88, "train_loss": 0.0104})
    _jsonl(root / "train" / "rewards.jsonl", recs)
    _write(root / "train" / "log_history.json", hist)
    w = refresh_step // 2  # monitoring interval: the refresh closes the second window
    windows = [[s, sum(v for _, v in var[s - w : s]) / w] for s in range(w, steps + 1, w)]
    ref, win = windows[0][1], windows[1][1]
    event = {
        "step": refresh_step,
        "ratio": win / ref,
        "window_mean": win,
        "reference": ref,
        "pool_before": 531,
        "pool_after": 574,
        "removed": [f"egs_{i:05d}" for i in range(61)],
        "added": [f"egs_{1000 + i:05d}" for i in range(104)],
        "probed": 500,
        "high_value": 131,
        "atypical_share_before": 0.529,
        "atypical_share_after": 0.613,
    }
    _jsonl(root / "train" / "ecr_events.jsonl", [event])
    _write(
        root / "train" / "ecr_state.json",
        {
            "active": [f"egs_{i:05d}" for i in range(574)],
            "refreshes": 1,
            "monitor": {
                "step_variance": var,
                "window_means": windows,
                "reference": None,
                "current": [],
                "events": [event],
            },
        },
    )

    _write(
        root / "warmup" / "log_history.json",
        [{"step": s, "loss": 2.5 * 0.98**s + 0.3, "learning_rate": 1e-3} for s in range(10, 201, 10)]
        + [{"step": 200, "train_runtime": 95.1, "train_loss": 0.91}],
    )

    # the test split's records (the report shows their questions next to the predictions)
    _jsonl(
        root / "data" / "test_id.jsonl",
        [
            {
                "id": f"egs_test_{i:04d}",
                "video": f"videos/t{i}.mp4",
                "question": "What did I pick up from the counter?",
                "task": "closeqa",
                "options": ["knife", "board", "red mug", "towel"],
                "answer": "C",
                "answer_text": "red mug",
            }
            for i in range(6)
        ],
    )

    # eval
    def bench_egosynth(acc_id, acc_at, rouge, icu_text, icu_att):
        return {
            "benchmark": "EgoSynth",
            "path": "data/egosynth",
            "n_samples": 200,
            "n_scored": 200,
            "n_missing": 0,
            "skipped": {},
            "n_skipped": 0,
            "metrics": {
                "n": 200,
                "accuracy": round((acc_id + acc_at) / 2, 2),
                "em": None,
                "rouge_l": rouge,
                "n_closed": 100,
                "n_open": 100,
            },
            "by": {
                "split": {
                    "test_atypical": {"n": 100, "accuracy": acc_at, "em": None, "rouge_l": rouge - 4},
                    "test_id": {"n": 100, "accuracy": acc_id, "em": None, "rouge_l": rouge + 4},
                },
                "typical": {
                    "test_atypical/atypical": {"n": 100, "accuracy": acc_at, "rouge_l": rouge - 4},
                    "test_id/typical": {"n": 70, "accuracy": acc_id + 3, "rouge_l": rouge + 5},
                    "test_id/atypical": {"n": 30, "accuracy": acc_id - 7, "rouge_l": rouge + 1},
                },
            },
            "judge": None,
            "icu": {
                "textual": {
                    "share": icu_text,
                    "n_correct": 96,
                    "n_named": int(icu_text * 0.96),
                    "n_annotated": 200,
                    "named_all": icu_text - 8,
                },
                "attention": {
                    "n": 200,
                    "in_box": icu_att,
                    "area": 11.8,
                    "ratio": round(icu_att / 11.8, 3),
                    "visual_mass": 41.0,
                },
                "attention_layers": "mean",
                "attention_errors": 0,
                "counterfactual_reliance": {
                    "splits": {
                        "all": {
                            "value": icu_att / 2,
                            "ci95": [icu_att / 2 - 3.5, icu_att / 2 + 3.25],
                            "n": 180,
                            "full": 60.0,
                            "context": 60.0 - icu_att / 2,
                        }
                    },
                    "excluded": {"no_interaction": 20},
                    "n_excluded": 20,
                    "n_paired": 180,
                },
            },
        }

    def bench_egoschema(acc):
        return {
            "benchmark": "EgoSchema",
            "path": "data/egoschema",
            "n_samples": 500,
            "n_scored": 498,
            "n_missing": 0,
            "skipped": {"missing_video": 2},
            "n_skipped": 2,
            "metrics": {"n": 498, "accuracy": acc},
            "by": {},
            "judge": None,
        }

    results = {
        "base": {"EgoSynth": bench_egosynth(51.0, 33.0, 41.2, 22.4, 18.3), "EgoSchema": bench_egoschema(47.6)},
        "trained": {"EgoSynth": bench_egosynth(63.0, 52.4, 49.8, 37.9, 27.6), "EgoSchema": bench_egoschema(50.2)},
    }
    for name, benches in results.items():
        _write(
            root / "eval" / name / "results.json",
            {
                "model": f"runs/demo/{name}",
                "model_fingerprint": "abc123",
                "world_size": 1,
                "config": {"view": "full", "fmt": "reasoning"},
                "benchmarks": benches,
                "seconds": 201.0,
            },
        )
        preds, rows = [], []
        for i in range(6):
            sid = f"egs_test_{i:04d}"
            if name == "base":  # 0-3 fixed by training, 4 broken, 5 wrong in both
                out, ext = (OUT_TRICKY, "A") if i == 0 else (OUT_TRAINED, "C") if i == 4 else (OUT_BASE, "B")
            else:
                out, ext = (OUT_BASE, "B") if i >= 4 else (OUT_TRAINED, "C")
            preds.append({"id": sid, "rank": 0, "output": out, "extracted": ext, "new_tokens": 42})
            rows.append(
                {
                    "id": sid,
                    "task": "closeqa",
                    "split": "test_id",
                    "gold": "C",
                    "pred": ext,
                    "typical": "atypical" if i % 2 else "typical",
                    "accuracy": float(ext == "C"),
                }
            )
        preds.append({"id": "egs_test_skipped", "rank": 0, "skipped": "missing_video", "error": "no file"})
        _jsonl(root / "eval" / name / "EgoSynth" / "predictions.rank0.jsonl", preds)
        _jsonl(root / "eval" / name / "EgoSynth" / "per_sample.jsonl", rows)
    return root


# ----------------------------------------------------------------------------------------------
# content


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    run = make_fake_run(tmp_path_factory.mktemp("run") / "demo")
    path = render_report(run)
    return run, path, path.read_text(encoding="utf-8")


def test_report_content(rendered):
    run, path, page = rendered
    assert path == run / "report" / "index.html"
    assert path.stat().st_size < 3 * 2**20
    for sid in ("run", "select", "train", "curriculum", "eval", "samples"):
        assert f'id="{sid}"' in page
    # header: stages, commit, versions, config
    assert "cf42491a1b2c" in page and "45 min 12 s" in page and "transformers" in page and "lambda_c" in page
    assert "selected select/selected.jsonl; kept 531" in page and "attempts 2" in page  # paths made relative
    assert "Supervised warm-up" in page and "train_loss 0.910" in page
    assert "531 / 2,000" in page and "+15.70" in page  # headline cards
    # funnel and breakdown
    assert "after interaction relevance" in page and "1,104" in page and "26.6%" in page and "52.9%" in page
    # curriculum: the refresh event row
    ev = json.loads((run / "train" / "ecr_events.jsonl").read_text())
    assert re.search(rf"<td[^>]*>200</td><td[^>]*>{fmt(ev['ratio'])}</td><td[^>]*>{fmt(ev['window_mean'])}</td>", page)
    assert "531 → 574" in page and "104" in page and "61.3%" in page
    # evaluation side by side, with deltas, typical vs atypical and ICU
    assert "typical vs atypical" in page and "test_id/atypical" in page
    assert "+19.40" in page  # atypical-split accuracy 33.0 -> 52.4
    assert "+15.50" in page  # ICU textual 22.4 -> 37.9
    assert "attention in interaction boxes" in page
    assert "counterfactual reliance, full − context accuracy (pp), all" in page
    assert "[10.30, 17.05], n=180" in page and "+4.65" in page  # trained 13.80 vs base 9.15
    assert 'class="neg"' not in page.split('id="eval"')[1].split('id="samples"')[0]  # no regression in the fake
    # samples: same ids, reasoning shown, escaped
    assert "egs_test_0000" in page and "&lt;think&gt;" in page and "red mug" in page
    assert "What did I pick up from the counter?" in page and "gold <b>C (red mug)</b>" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "egs_test_skipped" not in page
    # images embedded, nothing external, no scripts
    imgs = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(imgs) >= 7 and all(s.startswith("data:image/png;base64,") for s in imgs)
    for s in imgs:
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page and "@import" not in page


def test_variance_recomputed_from_rewards():
    recs = [
        {"step": 1, "rewards": {"total": [1, 1, 1, 1]}},
        {"step": 1, "rewards": {"total": [0, 2, 0, 2]}},
        {"step": 2, "rewards": {"total": [0, 0, 0, 3]}},
    ]
    var, zero = variance_from_rewards(recs)
    assert var == [[1, 0.5], [2, pytest.approx(27 / 16)]] and zero == [[1, 0.5], [2, 0.0]]


def test_gaps_render_as_notes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    page = Path(render_report(empty)).read_text()
    assert page.count("Not run") >= 5 and "<img" not in page
    # state only (no ecr_state, no log_history): curves and variance come from rewards.jsonl; a
    # corrupt results.json and a torn log line are notes, not exceptions
    run = make_fake_run(tmp_path / "partial", steps=60, refresh_step=40)
    for p in (
        "train/log_history.json",
        "train/ecr_state.json",
        "select/hist_coarse.png",
        "select/hist_fine.png",
        "eval/trained",
    ):
        shutil.rmtree(run / p) if (run / p).is_dir() else (run / p).unlink()
    (run / "eval" / "base" / "results.json").write_text("{not json")
    with open(run / "train" / "rewards.jsonl", "a") as f:
        f.write('{"step": 61, "rew')
    with open(run / "eval" / "base" / "EgoSynth" / "predictions.rank0.jsonl", "a") as f:  # raw model bytes
        f.write(json.dumps({"id": "egs_test_0000", "output": "<think>\x12 bad \ud800 text</think>"}) + "\n")
    out = render_report(run, tmp_path / "elsewhere" / "r.html")
    page = out.read_text()
    assert out == tmp_path / "elsewhere" / "r.html"
    assert "rewards.jsonl (recomputed)" in page and "per-step means" in page
    assert "Unreadable: eval/base/results.json: Expecting" in page
    assert "Not run: evaluation of the trained model" in page and "Not run: evaluation of the base" not in page
    assert "Only the base model was evaluated" in page
    assert "\\x12 bad ? text" in page  # control character shown, lone surrogate replaced
    assert page.count("<img") >= 4  # funnel, histograms from scores.csv, breakdown, curves, timeline
    with pytest.raises(FileNotFoundError):
        render_report(tmp_path / "nope")


def test_render_output_escapes():
    h = render_output(OUT_TRICKY)
    assert '<span class="think">&lt;think&gt;compare a &lt; b &amp; c &gt; d &lt;script&gt;' in h
    assert '<span class="answer">&lt;answer&gt;A&lt;/answer&gt;</span>' in h
    assert "…[truncated]" in render_output("x" * 5000)


def test_cli(tmp_path):
    from typer.testing import CliRunner

    from ego3s.cli import app

    run = make_fake_run(tmp_path / "run", steps=20, refresh_step=10)
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "x.html")])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(tmp_path / "x.html") and (tmp_path / "x.html").is_file()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "no such run folder" in r.output


# ----------------------------------------------------------------------------------------------
# a real browser

CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.src) || e)), true);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.imgs = imgs.length + ':' + imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.errors = window.__errors.length + ':' + window.__errors.join('|').slice(0, 300);
  document.body.dataset.width = document.documentElement.scrollWidth;
});
</script>"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console_problems(stderr: str) -> list[str]:
    """Page console messages and uncaught errors (the report has no scripts, the check script
    logs nothing: any console line is a problem)."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} not found: install it with `apt-get install -y chromium` to run the browser test",
)
def test_headless_chromium(rendered, tmp_path):
    from PIL import Image

    _, path, page = rendered
    n_img = len(re.findall(r"<img ", page))
    # the page as shipped: a screenshot, not blank
    shot = tmp_path / "shot.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1280,2400", path.resolve().as_uri()], tmp_path / "p1")
    assert shot.is_file(), r.stderr[-2000:]
    assert not _console_problems(r.stderr), _console_problems(r.stderr)
    with Image.open(shot) as im:
        im = im.convert("RGB")
        assert im.size == (1280, 2400)
        colors = im.getcolors(maxcolors=1 << 20)
        assert colors is None or len(colors) > 50  # text, tables and plots, not a blank page
    # a copy with a load-time check: every image decoded, no error event, no horizontal overflow
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    r = _chromium(["--window-size=1280,2400", "--dump-dom", probe.as_uri()], tmp_path / "p2")
    m = re.search(r'<body[^>]*data-imgs="(\d+):(\d+)"', r.stdout)
    assert m, f"load check did not run:\n{r.stdout[:500]}\n{r.stderr[-2000:]}"
    assert int(m.group(1)) == n_img and int(m.group(2)) == n_img, f"images loaded {m.group(2)} of {n_img}"
    assert re.search(r'data-errors="0:"', r.stdout), re.search(r'data-errors="[^"]*"', r.stdout).group(0)
    w = re.search(r'data-width="(\d+)"', r.stdout)
    assert w and int(w.group(1)) <= 1280, f"page wider than the window: {w and w.group(1)}"
    assert not _console_problems(r.stderr), _console_problems(r.stderr)


def test_curriculum_section_shows_the_schedule_and_refresh_use(tmp_path):
    from ego3s.curriculum.monitor import ECRConfig, plan, plan_message

    run = make_fake_run(tmp_path / "demo")
    state = json.loads((run / "train" / "ecr_state.json").read_text())
    sched = plan(ECRConfig(monitoring_interval=100, monitoring_unit="steps"), 50, 1.0, 64)
    sched["message"] = plan_message(sched)
    state.update(
        schedule=sched,
        refreshes=2,
        refreshes_used=1,
        refresh_usage=[
            {
                "step": 200,
                "steps_after": 99,
                "added": 104,
                "added_drawn": 87,
                "added_draws": 93,
                "removed": 61,
                "used": True,
            },
            {
                "step": 299,
                "steps_after": 0,
                "added": 12,
                "added_drawn": 0,
                "added_draws": 0,
                "removed": 3,
                "used": False,
            },
        ],
    )
    (run / "train" / "ecr_state.json").write_text(json.dumps(state))
    page = render_report(run).read_text(encoding="utf-8")
    cur = page.split('id="curriculum"')[1].split('id="eval"')[0]
    assert "ECR cannot change this run" in cur and "no refresh possible" in cur
    assert "1 of 2 refresh(es) used" in cur
    assert re.search(
        r"<td[^>]*>200</td><td[^>]*>99</td><td[^>]*>104</td><td[^>]*>87</td><td[^>]*>93</td>"
        r"<td[^>]*>61</td><td[^>]*>yes</td>",
        cur,
    )
    assert re.search(r"<td[^>]*>299</td><td[^>]*>0</td>.*?<td[^>]*>no</td>", cur)
